"""Reparameterised evidence lower bound (SGVB; Kingma and Welling 2013)."""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.distributions import kl_divergence

from ..traces import Traces, rescale, site_mask
from ._score import partially_reparameterised, score_sum
from .base import Estimator, LossParts

__all__ = ["ELBO", "analytic_log_w", "elbo_objective"]


def elbo_objective(log_w: torch.Tensor) -> torch.Tensor:
    """The ELBO per point, ``(1/K) sum_k log w_k``, ``(K, P) -> (P,)``; differentiable
    (pathwise gradients when the samples are reparameterised)."""
    return log_w.mean(0)


class ELBO(Estimator):
    """The evidence lower bound ``E_q[log p(x, h) - log q(h | x)]`` with pathwise gradients.

    :param num_particles: samples per data point, averaged (vectorised).
    :param analytic_kl: replace ``log p(h) - log q(h|x)`` by ``-KL(q || p)`` for every
        latent whose distributions have a registered closed-form KL (torch's
        ``kl_divergence``); other latents keep the Monte Carlo term.
    :param stl: "sticking the landing" (Roeder et al. 2017): drop the score term of q
        from the guide gradient; same objective value, lower variance near the optimum.

    Example::

        est = ELBO(analytic_kl=True)
        parts = est.surrogate(model, guide, x)
        parts.total.backward()
    """

    name: ClassVar[str] = "elbo"

    def __init__(self, *, num_particles: int = 1, analytic_kl: bool = False, stl: bool = False,
                 **options):
        super().__init__(num_particles=num_particles, **options)
        if analytic_kl and stl:
            raise ValueError("analytic_kl=True and stl=True cannot be combined: STL changes "
                             "the Monte Carlo log q term that the analytic KL replaces")
        self.analytic_kl = analytic_kl
        self.stl = stl

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = self.traces(model, guide, args, kwargs, detach_guide_params=self.stl)
        log_w = analytic_log_w(tr) if self.analytic_kl else tr.log_w
        objective = tr.scale * elbo_objective(log_w).sum()
        value = objective.detach()
        partial = partially_reparameterised(tr)
        if partial:     # their score-function parts (fully discrete sites are refused)
            correction = (score_sum(tr, partial) * tr.log_w.detach()).mean(0)
            objective = objective + tr.scale * correction.sum()
        return LossParts({"elbo": -objective}, {"objective": value, "elbo": value})


def analytic_log_w(tr: Traces) -> torch.Tensor:
    """``log p(x, h) - log q(h | x)`` per (particle, point), with ``log p(h) - log q(h)``
    replaced by ``-KL(q || p)`` for every latent whose pair of distributions has a
    closed-form KL in torch (``kl_divergence``); other latents keep the Monte Carlo
    term."""
    total = None
    for name in tr.observed:
        total = tr.model_terms[name] if total is None else total + tr.model_terms[name]
    for name in tr.latents:
        p_site = tr.model_trace.nodes[name]
        q_site = tr.guide_trace.nodes.get(name)
        kl = None
        if q_site is not None and not tr.sequential:
            try:
                kl = kl_divergence(q_site["fn"], p_site["fn"])
            except NotImplementedError:
                pass
        if kl is None:      # no closed form (or no guide site): the Monte Carlo term
            term = tr.model_terms[name] - tr.guide_terms.get(name, 0.0)
        else:
            if not isinstance(kl, torch.Tensor):      # a masked-out site's KL is 0.0
                kl = torch.zeros_like(tr.guide_full[name])
            kl = site_mask(kl, q_site["mask"])
            term = -tr.reduce(rescale(kl, p_site, tr.scale, tr.per_point), q_site)
        total = term if total is None else total + term
    return total
