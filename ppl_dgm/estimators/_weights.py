"""Importance-weight tools shared by the multi-sample estimators (a kit: no estimator).

All functions take log-weights ``log w_k = log p(x, h_k) - log q(h_k | x)`` laid out as
``(K, P)``: K particles by P points (see :mod:`ppl_dgm.traces`); weights are normalised
over the particles of each point.

* :func:`log_mean_exp`, :func:`normalized_weights`, :func:`effective_sample_size`;
* the doubly reparameterised gradient (DReG; Tucker, Lawson, Gu and Maddison 2018):
  :func:`dreg_factors` gives the per-sample factor that multiplies the pathwise
  gradient of ``log w_k`` through ``h_k``, and :class:`PathwiseReweighting` applies it
  with gradient hooks on the guide's samples, so that one backward pass of
  :func:`weighted_log_w` yields

      model:  sum_k w~_k grad_theta log p(x, h_k)
      guide:  sum_k f_k d log w_k / d h_k  d h_k / d phi     (log q's parameters fixed)

  with ``f_k = w~_k^2`` for the IWAE bound and ``f_k = w~_k - w~_k^2`` for reweighted
  wake-sleep's wake-phi update.
"""

from __future__ import annotations

import math

import torch

from ..traces import data_frame

__all__ = ["DREG_TARGETS", "PathwiseReweighting", "dreg_factors", "effective_sample_size",
           "log_mean_exp", "normalized_weights", "weighted_log_w"]

DREG_TARGETS = ("iwae", "rws")


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``log (1/K) sum_k exp(log_w_k)`` along ``dim``."""
    return torch.logsumexp(log_w, dim) - math.log(log_w.shape[dim])


def normalized_weights(log_w: torch.Tensor) -> torch.Tensor:
    """Self-normalised importance weights ``w~_k = w_k / sum_j w_j`` over particles
    (dim 0), separately for each point, without gradient.  ``(K, P) -> (K, P)``."""
    return torch.softmax(log_w.detach(), 0)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """``1 / sum_k w~_k^2`` per point, ``(K, P) -> (P,)``; between 1 and K."""
    w = normalized_weights(log_w)
    return 1.0 / (w * w).sum(0)


def weighted_log_w(log_w: torch.Tensor) -> torch.Tensor:
    """``sum_k w~_k log w_k`` per point (weights detached), ``(K, P) -> (P,)``.

    Its gradient is the standard IWAE gradient ``sum_k w~_k grad log w_k``; under
    :class:`PathwiseReweighting` the guide's part becomes the DReG gradient."""
    return (normalized_weights(log_w) * log_w).sum(0)


def dreg_factors(log_w: torch.Tensor, target: str = "iwae") -> torch.Tensor:
    """Factors that turn ``sum_k w~_k d log w_k / d h_k`` into a DReG guide gradient.

    The pathwise gradient reaching ``h_k`` from :func:`weighted_log_w` already carries
    ``w~_k``; multiplying it by the factor gives ``w~_k^2`` (``target="iwae"``, the
    IWAE bound's guide gradient) or ``w~_k - w~_k^2`` (``target="rws"``, the wake-phi
    update of reweighted wake-sleep, ``E[sum_k w~_k grad_phi log q(h_k)]``).
    ``(K, P) -> (K, P)``, detached.
    """
    w = normalized_weights(log_w)
    if target == "iwae":
        return w
    if target == "rws":
        return 1.0 - w
    raise ValueError(f"target={target!r} is unknown; choose one of {DREG_TARGETS}")


class PathwiseReweighting:
    """Gradient hooks on reparameterised guide samples, scaled per (particle, point).

    Pass :meth:`hook` as ``guide_value_hook`` to :func:`~ppl_dgm.traces.run_traces`
    (with ``detach_guide_params=True``, so log q reaches the guide only through its
    samples) and call :meth:`set_factors` with a ``(K, P)`` tensor before the backward
    pass.  Every path from ``log w_k`` to the guide's parameters passes through one
    sample, so each is scaled exactly once, also when one guide site feeds another.
    """

    def __init__(self, nesting: int):
        self.nesting = nesting
        self._factors: torch.Tensor | None = None
        self._plate: str | None = None

    def set_factors(self, factors: torch.Tensor, plate: str | None) -> None:
        """The ``(K, P)`` factors, and the data plate (``Traces.data_plate``)."""
        self._factors, self._plate = factors.detach(), plate

    def hook(self, name: str, site: dict, particle: int | None = None) -> torch.Tensor | None:
        value = site["value"]
        if not site["fn"].has_rsample or not value.requires_grad:
            return None                       # no pathwise gradient (or none wanted)
        shaped = value.view_as(value)
        shaped.register_hook(lambda g: g * self._expand(g, site, particle))
        return shaped

    def _expand(self, grad: torch.Tensor, site: dict, particle: int | None) -> torch.Tensor:
        """Broadcast the ``(K, P)`` factors (one particle's ``(P,)`` when the particles
        ran one by one) to a sample's shape."""
        f = self._factors
        if f is None:
            raise RuntimeError("PathwiseReweighting.set_factors was not called before the "
                               "backward pass")
        batch_dims = grad.dim() - site["fn"].event_dim
        shape = [1] * grad.dim()
        if particle is None:
            shape[batch_dims - (self.nesting + 1)] = f.shape[0]
        else:
            f = f[particle]
        if f.shape[-1] > 1:
            shape[batch_dims + data_frame(site, self._plate).dim] = f.shape[-1]
        return f.reshape(shape)
