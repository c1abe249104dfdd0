"""Neural variational inference and learning (NVIL; Mnih and Gregor 2014)."""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from ..nn import as_sizes, mlp
from .base import Estimator, LossParts
from .score import (
    DependencyStructure,
    RunningMoments,
    dependency_structure,
    local_signal,
    module_key,
    pathwise_log_w,
)

__all__ = ["NVIL", "nvil_signal"]


def nvil_signal(signal: torch.Tensor, baseline: torch.Tensor | float, center: torch.Tensor | float,
                scale: torch.Tensor | float) -> torch.Tensor:
    """The centred, normalised learning signal ``(l - b(x) - c) / max(1, sqrt(v))``.

    ``scale`` is ``max(1, sqrt(v))`` (1 turns normalisation off).  Detached.
    """
    return ((signal - baseline - center) / scale).detach()


class _ConstantBaseline(nn.Module):
    """A learned constant, for sites whose signal cannot be split by data point."""

    def __init__(self):
        super().__init__()
        self.value = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.value.squeeze(-1)


class NVIL(Estimator):
    """The ELBO with NVIL's variance-reduced score-function gradients.

    For each non-reparameterisable guide site ``s`` (each stochastic layer of a
    Helmholtz machine) the guide gradient is

        ``(l_s - b_s - c_s) / max(1, sqrt(v_s)) * grad log q(h_s | .)``

    where

    * ``l_s`` is the site's *local* learning signal: the terms of
      ``log p(x, h) - log q(h | x)`` downstream of ``s`` (those whose value depends on
      ``h_s``, found once by provenance tracking); the other terms do not change the
      expected gradient;
    * ``b_s`` is an input-dependent baseline, an MLP trained to minimise
      ``E[(l_s - c_s - b_s)^2]``.  It reads the data point and (by default) the samples
      of the score sites that ``q(h_s | .)`` depends on, e.g. ``b_2(x, h_1)`` for the
      second layer: they are drawn before ``h_s``, so the gradient stays unbiased, and a
      local signal varies with them (``log p(h_1 | h_2)`` is part of it).  With
      ``baseline_input="x"`` it is the paper's ``b_s(x)``; for the first layer the two
      coincide;
    * ``c_s`` and ``v_s`` are running mean and variance of ``l_s - b_s`` with decay
      ``alpha`` (centering and variance normalisation); they are device buffers updated
      in place, using their values from *before* the step, and saved with checkpoints.

    Baselines and centering leave the expected gradient unchanged.  Variance
    normalisation divides a layer's score-function gradient by a positive running
    scale, an adaptive per-layer step size (the expected direction is kept, its length
    is not); turn it off to get unbiased ELBO gradients.  Model gradients are
    ``grad log p(x, h)``; reparameterised guide sites get pathwise gradients.

    :param num_particles: samples per data point, averaged.
    :param local_signals: per-site downstream signals (``False``: the whole ``log w``
        for every site).
    :param baseline: learn the input-dependent baselines ``b_s``.
    :param centering: subtract the running mean ``c_s``.
    :param variance_normalization: divide by ``max(1, sqrt(v_s))``.
    :param alpha: decay of the running mean and variance (0.8 in the paper).
    :param baseline_hidden: widths of each baseline MLP (``100`` in the paper).
    :param baseline_input: ``"upstream"`` (``x`` and the site's upstream latent samples)
        or ``"x"`` (the paper's ``b_s(x)``).

    The baseline networks are built for the sites of the model and guide the first time
    they are seen (in :meth:`prepare`, which :func:`~ppl_dgm.train.fit` calls before it
    builds the optimiser, so the same optimiser trains them).

    Example::

        est = NVIL()                                # all variance reduction on
        ablated = NVIL(local_signals=False, variance_normalization=False)
    """

    name: ClassVar[str] = "nvil"
    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False

    def __init__(self, *, num_particles: int = 1, local_signals: bool = True,
                 baseline: bool = True, centering: bool = True,
                 variance_normalization: bool = True, alpha: float = 0.8,
                 baseline_hidden: Sequence[int] | int | str = (100,),
                 baseline_input: str = "upstream", max_plate_nesting: int | None = None):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha={alpha} must lie in [0, 1) (the paper uses 0.8)")
        self.local_signals = bool(local_signals)
        self.use_baseline = bool(baseline)
        self.centering = bool(centering)
        self.variance_normalization = bool(variance_normalization)
        self.alpha = float(alpha)
        self.baseline_hidden = as_sizes(baseline_hidden)
        if baseline_input not in ("x", "upstream"):
            raise ValueError(f"baseline_input={baseline_input!r}; choose 'x' (b(x)) or "
                             f"'upstream' (b(x, upstream latent samples))")
        self.baseline_input = baseline_input
        self.aux.baselines = nn.ModuleDict()
        self.aux.moments = nn.ModuleDict()
        self._structure: DependencyStructure | None = None
        self._structure_for: tuple[weakref.ref, weakref.ref] | None = None
        self._keys: dict[str, str] = {}

    # ------------------------------------------------------------------ set-up
    def prepare(self, model, guide, x) -> None:
        self._prepare(model, guide, x)

    def _prepare(self, model, guide, x) -> DependencyStructure:
        seen = self._structure_for
        if seen is not None and seen[0]() is model and seen[1]() is guide:
            return self._structure
        structure = dependency_structure(model, guide, x)
        self._structure, self._structure_for = structure, (weakref.ref(model), weakref.ref(guide))
        taken = set(self._keys.values())
        for s in structure.sites:
            if s not in self._keys:
                self._keys[s] = module_key(s, taken)
                taken.add(self._keys[s])
            k = self._keys[s]
            if self.use_baseline and k not in self.aux.baselines:
                net = (mlp(x.shape[-1] + self._extra_inputs(structure, s),
                           self.baseline_hidden, 1) if structure.per_point
                       else _ConstantBaseline())
                self.aux.baselines[k] = net.to(device=x.device, dtype=x.dtype)
            if (self.centering or self.variance_normalization) and k not in self.aux.moments:
                self.aux.moments[k] = RunningMoments(self.alpha).to(device=x.device,
                                                                    dtype=x.dtype)
        return structure

    def _extra_inputs(self, structure: DependencyStructure, site: str) -> int:
        if self.baseline_input == "x":
            return 0
        for a in structure.upstream[site]:
            if not structure.data_only[a]:
                raise ValueError(
                    f"NVIL(baseline_input='upstream') feeds the samples of site {a!r} to the "
                    f"baseline of {site!r}, but {a!r} is batched by plates other than "
                    f"'data'; use baseline_input='x'")
        return sum(structure.event_sizes[a] for a in structure.upstream[site])

    def _baseline_features(self, tr, structure: DependencyStructure, site: str,
                           x: torch.Tensor) -> torch.Tensor:
        ups = structure.upstream[site] if self.baseline_input == "upstream" else ()
        if not ups:
            return x
        feats = []
        for a in ups:
            node = tr.guide_trace.nodes[a]
            v = node["value"].detach()
            event_dim = len(node["fn"].event_shape)
            feats.append(v.reshape(*v.shape[:v.dim() - event_dim], -1).to(x.dtype))
        batch = feats[0].shape[:-1]                          # (B,) or (K, B)
        return torch.cat([x.expand(*batch, x.shape[-1]), *feats], -1)

    # ------------------------------------------------------------------ step
    def surrogate(self, model, guide, x) -> LossParts:
        structure = self._prepare(model, guide, x)
        tr = self.traces(model, guide, x)
        log_w = pathwise_log_w(tr, structure.sites)
        full = tr.log_w.detach()
        update = torch.is_grad_enabled()
        per_point = log_w
        baseline_loss = None
        metrics: dict[str, torch.Tensor] = {}
        for s in structure.sites:
            k = self._keys[s]
            signal = (local_signal(tr, structure, s) if self.local_signals else full).detach()
            c, scale = 0.0, 1.0
            moments = self.aux.moments[k] if k in self.aux.moments else None
            if moments is not None:
                seen = moments.count > 0      # before the first update: no statistics yet
                if self.centering:
                    c = torch.where(seen, moments.mean, torch.zeros_like(moments.mean)).clone()
                if self.variance_normalization:
                    scale = torch.where(seen, moments.var.sqrt().clamp(min=1.0),
                                        torch.ones_like(moments.var)).clone()
            b = 0.0
            if self.use_baseline:
                features = self._baseline_features(tr, structure, s, x)
                b = self.aux.baselines[k](features).squeeze(-1)  # (K?, P), or () for a constant
                term = (signal - c - b).square().mean(0).sum()
                baseline_loss = term if baseline_loss is None else baseline_loss + term
                b = b.detach()
            if moments is not None and update:
                moments.update_(signal - b)
            learning = nvil_signal(signal, b, c, scale)
            per_point = per_point + learning * tr.guide_terms[s]
            metrics[f"signal_{k}"] = learning.mean()
        objective = tr.scale * per_point.mean(0).sum()
        value = tr.scale * full.mean(0).sum()
        metrics.update(objective=value, elbo=value)
        parts = {"nvil": -objective}
        if baseline_loss is not None:
            parts["baseline"] = baseline_loss
            metrics["baseline_mse"] = baseline_loss.detach() / x.shape[0]
        return LossParts(parts, metrics)
