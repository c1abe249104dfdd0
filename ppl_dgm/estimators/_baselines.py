"""Learned per-site baselines and running statistics for score-function signals (a kit).

:class:`SiteBaselines` keeps, for each non-reparameterised guide site, an
input-dependent baseline ``b_s`` (an MLP on the data point and, optionally, the samples
of the score sites that ``q(h_s | .)`` depends on) and the running mean ``c_s`` and
variance ``v_s`` of ``l_s - b_s`` (:class:`~._score.RunningMoments`).  NVIL (Mnih and
Gregor 2014) uses all three; any score-function estimator can use any of them.  It is an
``nn.Module``: the estimator stores it as its ``aux`` so that the baselines are trained
by the same optimiser and saved with checkpoints.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..nn import mlp
from ..traces import Traces, data_frame
from ._score import (
    DependencyStructure,
    RunningMoments,
    module_key,
    point_features,
    slices_are_points,
)

__all__ = ["BASELINE_INPUTS", "ConstantBaseline", "SiteBaselines"]

BASELINE_INPUTS = ("x", "upstream")


class ConstantBaseline(nn.Module):
    """A learned constant, for sites whose signal cannot be split by data point."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.value.squeeze(-1)


class SiteBaselines(nn.Module):
    """Baseline networks ``baselines[key]`` and running moments ``moments[key]`` per site.

    :param learned: build a baseline network per site.
    :param moments: keep running mean and variance per site (decay ``alpha``).
    :param hidden: widths of each baseline MLP.
    :param inputs: ``"x"`` (the data point) or ``"upstream"`` (the data point and the
        samples of the site's upstream score sites).
    """

    def __init__(self, *, learned: bool, moments: bool, alpha: float,
                 hidden: Sequence[int], inputs: str = "upstream"):
        super().__init__()
        if inputs not in BASELINE_INPUTS:
            raise ValueError(f"baseline_input={inputs!r}; choose 'x' (b(x)) or "
                             f"'upstream' (b(x, upstream latent samples))")
        self.learned, self.keep_moments = bool(learned), bool(moments)
        self.alpha, self.hidden, self.inputs = float(alpha), tuple(hidden), inputs
        self.baselines = nn.ModuleDict()
        self.moments = nn.ModuleDict()
        self._keys: dict[str, str] = {}

    def key(self, site: str) -> str:
        """The module key of a site (site names may hold characters a ModuleDict
        refuses)."""
        if site not in self._keys:
            self._keys[site] = module_key(site, set(self._keys.values()))
        return self._keys[site]

    def build(self, structure: DependencyStructure, tr: Traces, sites=None) -> None:
        """Create what is missing for the score sites of a step (idempotent; default:
        the tracked ones): an MLP on the point's observed data for a site of the data
        plate, a learned constant for any other site."""
        x = point_features(tr)
        for s in structure.sites if sites is None else sites:
            k = self.key(s)
            if self.learned and k not in self.baselines:
                local = x is not None and data_frame(tr.guide_trace.nodes[s],
                                                     tr.data_plate) is not None
                net = (mlp(x.shape[-1] + self._extra_inputs(tr, structure, s), self.hidden, 1)
                       if local else ConstantBaseline())
                like = x if x is not None else tr.log_w
                self.baselines[k] = net.to(device=like.device, dtype=like.dtype)
            if self.keep_moments and k not in self.moments:
                self.moments[k] = RunningMoments(self.alpha).to(device=tr.log_w.device,
                                                                dtype=tr.log_w.dtype)

    def _upstream(self, tr: Traces, structure: DependencyStructure, site: str) -> tuple:
        if self.inputs == "x" or not slices_are_points(tr, site):
            return ()
        return structure.upstream.get(site, ())

    def _extra_inputs(self, tr: Traces, structure: DependencyStructure, site: str) -> int:
        ups = self._upstream(tr, structure, site)
        for a in ups:
            if not structure.data_only[a]:
                raise ValueError(
                    f"NVIL(baseline_input='upstream') feeds the samples of site {a!r} to the "
                    f"baseline of {site!r}, but {a!r} is batched by plates other than "
                    f"the data plate; use baseline_input='x'")
        return sum(structure.event_sizes[a] for a in ups)

    def load_state_dict(self, state, strict: bool = True):
        # baselines of sites first seen after the start (programs whose site names
        # change between steps) are rebuilt from the saved shapes
        for name, value in state.items():
            parts = name.split(".")
            if parts[0] == "moments" and parts[1] not in self.moments:
                self.moments[parts[1]] = RunningMoments(self.alpha)
            elif parts[0] == "baselines" and parts[1] not in self.baselines:
                if parts[2] == "value":
                    self.baselines[parts[1]] = ConstantBaseline()
                elif parts[2:] == ["0", "weight"]:
                    self.baselines[parts[1]] = mlp(value.shape[1], self.hidden, 1)
        return super().load_state_dict(state, strict=strict)

    # ------------------------------------------------------------------ per step
    def predict(self, tr: Traces, structure: DependencyStructure, site: str,
                signal: torch.Tensor) -> torch.Tensor | None:
        """The baseline ``b_s`` in the layout of the site's ``signal``, or None without
        learned baselines."""
        if not self.learned:
            return None
        net = self.baselines[self.key(site)]
        if isinstance(net, ConstantBaseline):
            return net(None)
        x = point_features(tr)
        ups = self._upstream(tr, structure, site)
        if ups:
            feats = []
            for a in ups:
                v = tr.site_values(a).detach()
                event_dim = tr.guide_trace.nodes[a]["fn"].event_dim
                feats.append(v.reshape(*v.shape[:v.dim() - event_dim], -1).to(x.dtype))
            batch = feats[0].shape[:-1]                          # (B,) or (K, B)
            x = torch.cat([x.expand(*batch, x.shape[-1]), *feats], -1)
        b = net(x).squeeze(-1)
        if slices_are_points(tr, site):
            return b
        # the site's batch shape: the point axis at the data plate's dim
        shape = [1] * signal.dim()
        shape[data_frame(tr.guide_trace.nodes[site], tr.data_plate).dim] = b.shape[-1]
        return b.reshape(shape)

    def center_scale(self, site: str, *, centering: bool, normalization: bool
                     ) -> tuple[torch.Tensor | float, torch.Tensor | float]:
        """The running mean ``c_s`` (0 when off) and ``max(1, sqrt(v_s))`` (1 when off),
        both from before this step's update; before the first update there are no
        statistics yet and they are 0 and 1."""
        moments = self.moments[self.key(site)] if self.keep_moments else None
        c, scale = 0.0, 1.0
        if moments is not None:
            seen = moments.count > 0
            if centering:
                c = torch.where(seen, moments.mean, torch.zeros_like(moments.mean)).clone()
            if normalization:
                scale = torch.where(seen, moments.var.sqrt().clamp(min=1.0),
                                    torch.ones_like(moments.var)).clone()
        return c, scale

    def update_(self, site: str, residual: torch.Tensor) -> None:
        """Fold this step's ``l_s - b_s`` into the site's running moments (in place)."""
        if self.keep_moments:
            self.moments[self.key(site)].update_(residual.detach())
