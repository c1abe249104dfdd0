"""Importance-weighted bound (IWAE; Burda, Grosse and Salakhutdinov 2015), with DReG."""

from __future__ import annotations

from typing import ClassVar

import torch

from .base import Estimator, LossParts, log_mean_exp

__all__ = ["IWAE"]


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
                 max_plate_nesting: int | None = None):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.dreg = dreg

    def surrogate(self, model, guide, x) -> LossParts:
        if not self.dreg:
            tr = self.traces(model, guide, x)
            bound = tr.scale * log_mean_exp(tr.log_w, 0).sum()
            value = bound.detach()
            return LossParts({"iwae": -bound}, {"objective": value, "iwae": value})

        weights: dict[str, torch.Tensor] = {}

        def hook(name, site):
            value = site["value"]
            if not site["fn"].has_rsample:
                return None
            shaped = value.view_as(value)
            shaped.register_hook(lambda g: g * _expand_like(weights["w"], g, site, tr_nesting))
            return shaped

        tr_nesting = self.plate_nesting(model, guide, x)
        tr = self.traces(model, guide, x, detach_guide_params=True, guide_value_hook=hook)
        log_w = tr.log_w
        w = torch.softmax(log_w.detach(), 0)
        weights["w"] = w
        surrogate = -tr.scale * (w * log_w).sum()
        bound = (tr.scale * log_mean_exp(log_w.detach(), 0).sum())
        return LossParts({"iwae_dreg": surrogate}, {"objective": bound, "iwae": bound})


def _expand_like(w: torch.Tensor, grad: torch.Tensor, site: dict, nesting: int) -> torch.Tensor:
    """Broadcast per-(particle, point) weights ``(K, P)`` to a sample's shape."""
    event_dim = site["fn"].event_dim
    batch_dims = grad.dim() - event_dim
    n = nesting + 1
    shape = [1] * grad.dim()
    shape[batch_dims - n] = w.shape[0]
    if w.shape[1] > 1:
        data_dim = next(f.dim for f in site["cond_indep_stack"] if f.name == "data")
        shape[batch_dims + data_dim] = w.shape[1]
    return w.reshape(shape)
