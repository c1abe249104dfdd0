"""Variational inference for Monte Carlo objectives (VIMCO; Mnih and Rezende 2016)."""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from ._score import score_sites, score_sum
from ._weights import log_mean_exp
from .base import Estimator, LossParts

__all__ = ["VIMCO", "vimco_signals", "vimco_surrogate"]


def vimco_signals(log_w: torch.Tensor) -> torch.Tensor:
    """Per-sample learning signals with leave-one-out baselines, ``(K, P)``, detached.

    ``L = log (1/K) sum_j w_j`` and for sample ``k`` the baseline replaces ``w_k`` by
    the geometric mean of the other weights, ``exp(mean_{j != k} log w_j)``:

        ``signal_k = L - log (1/K) (sum_{j != k} w_j + exp(mean_{j != k} log w_j))``.

    The baseline of sample ``k`` does not depend on ``h_k``, so subtracting it keeps
    the gradient unbiased.  Computed per data point (column) in log space.
    """
    log_w = log_w.detach()
    k = log_w.shape[0]
    if k < 2:
        raise ValueError(f"VIMCO's leave-one-out baselines need at least 2 samples per data "
                         f"point, got log-weights with {k} along dim 0")
    loo_mean = (log_w.sum(0, keepdim=True) - log_w) / (k - 1)            # (K, P)
    # Matrix (K, K, P): row k holds log w with entry k replaced by its geometric mean.
    eye = torch.eye(k, dtype=torch.bool, device=log_w.device).unsqueeze(-1)
    replaced = torch.where(eye, loo_mean.unsqueeze(1), log_w.unsqueeze(0))
    baseline = torch.logsumexp(replaced, 1) - math.log(k)
    return log_mean_exp(log_w, 0).unsqueeze(0) - baseline


def vimco_surrogate(log_w: torch.Tensor, score: torch.Tensor) -> torch.Tensor:
    """Per-point surrogate ``sum_k w~_k log w_k + sum_k signal_k log q(h_k)``, ``(P,)``.

    ``log_w`` must carry every gradient path (pathwise through reparameterised
    samples and the direct ``-log q`` of the score sites); ``score`` is ``log q`` of the
    non-reparameterised sites.  Its gradient is an unbiased estimate of the gradient of
    the K-sample bound ``E[log (1/K) sum_k w_k]``.
    """
    w = torch.softmax(log_w.detach(), 0)
    return (w * log_w).sum(0) + (vimco_signals(log_w) * score).sum(0)


class VIMCO(Estimator):
    """The K-sample bound ``E[log (1/K) sum_k w_k]`` with VIMCO's score-function gradients.

    Non-reparameterisable guide sites get ``sum_k signal_k grad log q(h_k | x)`` with the
    leave-one-out signals of :func:`vimco_signals` (one set per data point);
    everything else gets the importance-weighted gradient ``sum_k w~_k grad log w_k``
    (pathwise for reparameterised samples), as in IWAE.

    :param num_particles: K >= 2, drawn in one vectorised run.

    Example::

        est = VIMCO(num_particles=5)
        est.surrogate(model, guide, x).total.backward()
    """

    name: ClassVar[str] = "vimco"
    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False
    min_particles: ClassVar[int] = 2

    def __init__(self, *, num_particles: int = 5, **options):
        if not isinstance(num_particles, int) or num_particles < 2:
            raise ValueError(
                f"VIMCO needs num_particles >= 2 (its baseline for each sample is built from "
                f"the other samples of the same data point), got num_particles="
                f"{num_particles!r}; use e.g. VIMCO(num_particles=5), or NVIL/REINFORCE for "
                f"one sample per point")
        super().__init__(num_particles=num_particles, **options)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = self.traces(model, guide, args, kwargs)
        log_w = tr.log_w
        score = score_sum(tr, score_sites(tr))
        per_point = vimco_surrogate(log_w, score)
        bound = tr.scale * log_mean_exp(log_w.detach(), 0).sum()
        return LossParts({"vimco": -tr.scale * per_point.sum()},
                         {"objective": bound, "vimco": bound})
