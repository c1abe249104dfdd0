"""Importance-weighted bound (IWAE; Burda, Grosse and Salakhutdinov 2015), with DReG."""

from __future__ import annotations

from typing import ClassVar

import torch

from ._score import partially_reparameterised, score_sum
from ._weights import PathwiseReweighting, dreg_factors, log_mean_exp, weighted_log_w
from .base import Estimator, LossParts

__all__ = ["IWAE", "iwae_bound", "iwae_dreg_surrogate"]


def iwae_bound(log_w: torch.Tensor) -> torch.Tensor:
    """The K-sample bound ``log (1/K) sum_k w_k`` per point, ``(K, P) -> (P,)``.

    Differentiable: its gradient is ``sum_k w~_k grad log w_k``."""
    return log_mean_exp(log_w, 0)


def iwae_dreg_surrogate(log_w: torch.Tensor) -> torch.Tensor:
    """Per-point DReG surrogate ``sum_k w~_k log w_k``, ``(K, P) -> (P,)``.

    With log q's parameters held fixed and the pathwise gradient through each ``h_k``
    multiplied by :func:`~._weights.dreg_factors` ``(log_w, "iwae")``, its gradient is
    ``sum_k w~_k grad_theta log p(x, h_k)`` for the model and ``sum_k w~_k^2 d log w_k /
    dh_k dh_k/dphi`` for the guide.  Its value is not the bound."""
    return weighted_log_w(log_w)


class IWAE(Estimator):
    """The K-sample bound ``L_K = E[log (1/K) sum_k w_k]``, per data point.

    ``L_1`` is the ELBO and ``L_K <= L_{K+1} <= log p(x)``.  The standard gradient is
    ``sum_k w~_k grad log w_k`` (normalised weights ``w~``, pathwise through h_k).

    :param num_particles: K, drawn in one vectorised run.
    :param dreg: doubly reparameterised gradients for the guide (Tucker, Lawson, Gu and
        Maddison 2018): the guide gradient becomes ``sum_k w~_k^2 d log w_k / dh_k
        dh_k/dphi`` with log q's parameters held fixed, which removes the score term
        whose signal-to-noise ratio decays with K (Rainforth et al. 2018).  Model
        gradients are unchanged.  Both gradients have the same expectation.

    The squared weights are applied with a gradient hook on each guide sample as the
    model and log q see it, so every path from ``log w_k`` to the guide's parameters is
    scaled exactly once, also when one guide site feeds another.

    Example::

        est = IWAE(num_particles=5, dreg=True)
        est.surrogate(model, guide, x).total.backward()
    """

    name: ClassVar[str] = "iwae"

    def __init__(self, *, num_particles: int = 5, dreg: bool = False,
                 **options):
        super().__init__(num_particles=num_particles, **options)
        self.dreg = dreg

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        if not self.dreg:
            tr = self.traces(model, guide, args, kwargs)
            per_point = iwae_bound(tr.log_w)
            bound = tr.scale * per_point.sum()
            value = bound.detach()
            partial = partially_reparameterised(tr)
            if partial:     # their score-function parts (fully discrete sites are refused)
                correction = per_point.detach() * score_sum(tr, partial).sum(0)
                bound = bound + tr.scale * correction.sum()
            return LossParts({"iwae": -bound}, {"objective": value, "iwae": value})
        reweight = PathwiseReweighting(self.plate_nesting(model, guide, args, kwargs))
        tr = self.traces(model, guide, args, kwargs, detach_guide_params=True,
                         guide_value_hook=reweight.hook)
        log_w = tr.log_w
        reweight.set_factors(dreg_factors(log_w, "iwae"), tr.data_plate)
        surrogate = -tr.scale * iwae_dreg_surrogate(log_w).sum()
        bound = tr.scale * iwae_bound(log_w.detach()).sum()
        return LossParts({"iwae_dreg": surrogate}, {"objective": bound, "iwae": bound})
