"""Neural variational inference and learning (NVIL; Mnih and Gregor 2014)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from ..nn import as_sizes
from ._baselines import SiteBaselines
from ._score import (
    DependencyStructure,
    StructureCache,
    pathwise_log_w,
    score_sites,
    site_score,
    slice_signal,
)
from .base import Estimator, LossParts

__all__ = ["NVIL", "NVILSiteTerms", "nvil_signal", "nvil_site_terms"]


def nvil_signal(signal: torch.Tensor, baseline: torch.Tensor | float, center: torch.Tensor | float,
                scale: torch.Tensor | float) -> torch.Tensor:
    """The centred, normalised learning signal ``(l - b(x) - c) / max(1, sqrt(v))``.

    ``scale`` is ``max(1, sqrt(v))`` (1 turns normalisation off).  Detached.
    """
    return ((signal - baseline - center) / scale).detach()


@dataclass(frozen=True)
class NVILSiteTerms:
    """One score site's share of the NVIL surrogate (shapes of its signal).

    ``score`` is ``learning * log q`` (its gradient is the site's score-function
    gradient), ``baseline_loss`` the baseline's regression loss ``(l - c - b)^2``
    (None without a learned baseline), ``learning`` the centred, normalised signal."""

    score: torch.Tensor
    baseline_loss: torch.Tensor | None
    learning: torch.Tensor


def nvil_site_terms(signal: torch.Tensor, log_q: torch.Tensor,
                    baseline: torch.Tensor | None, center: torch.Tensor | float,
                    scale: torch.Tensor | float) -> NVILSiteTerms:
    """NVIL's terms for one site from its learning signal ``l`` (detached), its
    ``log q`` (differentiable in the guide), the baseline's output ``b`` (differentiable
    in the baseline network, or None), the running mean ``c`` and ``max(1, sqrt(v))``.

    The guide's term uses ``(l - b - c) / max(1, sqrt(v))`` with ``b`` detached; the
    baseline's term ``(l - c - b)^2`` reaches only the baseline network."""
    signal = signal.detach()
    b = 0.0 if baseline is None else baseline.detach()
    learning = nvil_signal(signal, b, center, scale)
    loss = None if baseline is None else (signal - center - baseline).square()
    return NVILSiteTerms(learning * log_q, loss, learning)


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
                 baseline_input: str = "upstream", **options):
        super().__init__(num_particles=num_particles, **options)
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha={alpha} must lie in [0, 1) (the paper uses 0.8)")
        self.local_signals = bool(local_signals)
        self.use_baseline = bool(baseline)
        self.centering = bool(centering)
        self.variance_normalization = bool(variance_normalization)
        self.alpha = float(alpha)
        self.baseline_hidden = as_sizes(baseline_hidden)
        self.baseline_input = baseline_input
        self.aux = SiteBaselines(learned=self.use_baseline,
                                 moments=self.centering or self.variance_normalization,
                                 alpha=self.alpha, hidden=self.baseline_hidden,
                                 inputs=baseline_input)
        self._structures = StructureCache()

    # ------------------------------------------------------------------ set-up
    def prepare(self, model, guide, *args, **kwargs) -> None:
        with torch.no_grad():
            tr = self.traces(model, guide, args, kwargs, num_particles=self._check_particles)
        self._structure(model, guide, tr, args, kwargs)

    def _structure(self, model, guide, tr, args, kwargs) -> DependencyStructure:
        structure = self._structures.get(model, guide, tr, args, kwargs)
        self.aux.build(structure, tr, score_sites(tr))   # sites not seen before
        return structure

    # ------------------------------------------------------------------ step
    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = self.traces(model, guide, args, kwargs)
        sites = score_sites(tr)
        structure = self._structure(model, guide, tr, args, kwargs)
        per_point = pathwise_log_w(tr, sites)
        full = tr.log_w.detach()
        update = torch.is_grad_enabled()
        k = tr.num_particles
        extra = baseline_loss = None
        metrics: dict[str, torch.Tensor] = {}
        for s in sites:
            signal = slice_signal(tr, structure, s, local=self.local_signals).detach()
            score, points = site_score(tr, s)
            c, scale = self.aux.center_scale(s, centering=self.centering,
                                             normalization=self.variance_normalization)
            b = self.aux.predict(tr, structure, s, signal)
            terms = nvil_site_terms(signal, score, b, c, scale)
            if terms.baseline_loss is not None:
                term = terms.baseline_loss.mean(0).sum() if points \
                    else terms.baseline_loss.sum() / k
                baseline_loss = term if baseline_loss is None else baseline_loss + term
            if update:
                self.aux.update_(s, signal - (0.0 if b is None else b.detach()))
            if points:
                per_point = per_point + terms.score
            else:
                term = terms.score.sum() / k
                extra = term if extra is None else extra + term
            metrics[f"signal_{self.aux.key(s)}"] = terms.learning.mean()
        objective = per_point.mean(0).sum()
        objective = tr.scale * (objective if extra is None else objective + extra)
        value = tr.scale * full.mean(0).sum()
        metrics.update(objective=value, elbo=value)
        parts = {"nvil": -objective}
        if baseline_loss is not None:
            parts["baseline"] = baseline_loss
            metrics["baseline_mse"] = baseline_loss.detach() / (tr.batch_size or 1)
        return LossParts(parts, metrics)
