"""Score-function ELBO (REINFORCE; Williams 1992), with a moving-average baseline."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from ._score import (
    RunningMoments,
    StructureCache,
    module_key,
    pathwise_log_w,
    score_sites,
    site_score,
    slice_signal,
)
from .base import Estimator, LossParts

__all__ = ["REINFORCE", "reinforce_surrogate"]


def reinforce_surrogate(log_w: torch.Tensor, score: torch.Tensor,
                        signal: torch.Tensor) -> torch.Tensor:
    """Per (particle, point) surrogate ``log_w + signal.detach() * score``.

    ``log_w`` carries the pathwise gradients, ``score`` is ``log q`` of the
    non-reparameterised sites and ``signal`` the (baselined) learning signal; its
    gradient, averaged over draws, is the gradient of ``E_q[log w]``.
    """
    return log_w + signal.detach() * score


class REINFORCE(Estimator):
    """The ELBO with score-function gradients for non-reparameterisable guide sites.

    For each of the guide's score sites ``s`` (non-``rsample`` sites, and the
    score-function part of partially reparameterised ones) the gradient is
    ``(l_s - b_s) grad log q(h_s | .)``; reparameterised sites get pathwise gradients,
    the model gets ``grad log p(x, h)``.  The learning signal ``l_s`` is Rao-Blackwellised
    as in Pyro's ``TraceGraph_ELBO``: it holds the terms of ``log p(x, h) - log q(h | x)``
    downstream of ``s`` (found by provenance tracking) within ``s``'s own plate slices,
    so each data point's score meets its own point's costs only, also beside global
    latents.  For a one-layer sigmoid belief net this is each point's ``log w``.

    :param num_particles: samples per data point, averaged.
    :param baseline: ``"ema"`` subtracts, per site, an exponential moving average of its
        signal (a device buffer updated in place; the value from before this step is
        used, so the estimate stays unbiased); ``None`` uses no baseline.
    :param decay: the moving average's decay per step.
    :param local_signals: keep only the downstream terms (``False``: every term of the
        site's plate slices).

    Also accepts :class:`pyro.infer.ELBO`'s keyword options (see
    :class:`~ppl_dgm.estimators.base.Estimator`).

    Example::

        est = REINFORCE(baseline="ema")
        fit(SigmoidBeliefNet(64, (12,)), guide, est, load_digits(), steps=3000)
    """

    name: ClassVar[str] = "reinforce"
    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False

    def __init__(self, *, num_particles: int = 1, baseline: str | None = "ema",
                 decay: float = 0.9, local_signals: bool = True, **options):
        super().__init__(num_particles=num_particles, **options)
        if baseline not in ("ema", None, "none"):
            raise ValueError(f"baseline={baseline!r}; choose 'ema' (moving average) or None")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the running-average decay must lie in [0, 1), got {decay}")
        self.baseline = None if baseline == "none" else baseline
        self.decay = float(decay)
        self.local_signals = bool(local_signals)
        self.aux.moments = nn.ModuleDict()
        self._keys: dict[str, str] = {}
        self._structures = StructureCache()

    def _moments(self, site: str, like: torch.Tensor) -> RunningMoments:
        if site not in self._keys:
            self._keys[site] = module_key(site, set(self._keys.values()))
        key = self._keys[site]
        if key not in self.aux.moments:
            self.aux.moments[key] = RunningMoments(self.decay).to(like.device, like.dtype)
        return self.aux.moments[key]

    def prepare(self, model, guide, *args, **kwargs) -> None:
        # track the dependencies before training, not on the training stream
        if self.local_signals:
            with torch.no_grad():
                tr = self.traces(model, guide, args, kwargs,
                                 num_particles=self._check_particles)
            if score_sites(tr):
                self._structures.get(model, guide, tr, args, kwargs)

    def load_state_dict(self, state) -> None:
        for name in state:          # moving averages of sites seen before the checkpoint
            key = name.split(".")[1] if name.startswith("moments.") else None
            if key is not None and key not in self.aux.moments:
                self.aux.moments[key] = RunningMoments(self.decay)
                self._keys.setdefault(key, key)
        super().load_state_dict(state)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = self.traces(model, guide, args, kwargs)
        sites = score_sites(tr)
        structure = (self._structures.get(model, guide, tr, args, kwargs)
                     if sites and self.local_signals else None)
        per_point = pathwise_log_w(tr, sites)
        extra = None
        metrics = {}
        for s in sites:
            signal = slice_signal(tr, structure, s, local=self.local_signals).detach()
            if self.baseline == "ema":
                moments = self._moments(s, signal)
                # Before the first update there is no average yet: use no baseline.
                b = torch.where(moments.count > 0, moments.mean,
                                torch.zeros_like(moments.mean)).clone()
                if torch.is_grad_enabled():
                    moments.update_(signal)
                metrics[f"baseline_{self._keys[s]}"] = b
                signal = signal - b
            score, points = site_score(tr, s)
            if points:
                per_point = reinforce_surrogate(per_point, score, signal)
            else:
                term = (score * signal).sum() / tr.num_particles
                extra = term if extra is None else extra + term
        objective = per_point.mean(0).sum() if extra is None else per_point.mean(0).sum() + extra
        objective = tr.scale * objective
        value = tr.scale * tr.log_w.detach().mean(0).sum()
        metrics.update(objective=value, elbo=value)
        return LossParts({"reinforce": -objective}, metrics)
