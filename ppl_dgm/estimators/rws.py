"""Reweighted wake-sleep (Bornschein and Bengio 2015)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ._dreams import (
    check_detachable,
    check_dream_batch_size,
    detached_sample,
    dream,
    score_dream,
    sleep_term,
)
from ._weights import log_mean_exp, normalized_weights
from .base import Estimator, LossParts

__all__ = ["GUIDE_UPDATES", "RWSObjectives", "ReweightedWakeSleep", "normalized_weights",
           "rws_objectives"]

GUIDE_UPDATES = ("wake", "sleep", "mixture")


@dataclass(frozen=True)
class RWSObjectives:
    """Per-point wake objectives of reweighted wake-sleep and the weights behind them."""

    model: torch.Tensor     # (P,) sum_k w~_k log p(x, h_k)
    guide: torch.Tensor     # (P,) sum_k w~_k log q(h_k | x)
    weights: torch.Tensor   # (K, P) normalised weights, no gradient


def rws_objectives(log_p: torch.Tensor, log_q: torch.Tensor) -> RWSObjectives:
    """The wake objectives of reweighted wake-sleep per point, from ``(K, P)`` log densities.

    Model: ``sum_k w~_k log p(x, h_k)``, whose gradient is the self-normalised
    importance-sampling estimate of ``grad log p(x)`` (the gradient of the IWAE bound).
    Guide (wake phase): ``sum_k w~_k log q(h_k | x)``, whose gradient estimates
    ``E_p(h|x)[grad log q(h | x)] = -grad KL(p(h | x) || q(h | x))``.
    ``h_k ~ q`` are fixed samples; the weights are normalised per data point and
    carry no gradient.
    """
    w = normalized_weights(log_p - log_q)
    return RWSObjectives((w * log_p).sum(0), (w * log_q).sum(0), w)


class ReweightedWakeSleep(Estimator):
    """Reweighted wake-sleep: importance-weighted wake updates and optional dreams.

    For each data point draw ``h_1..h_K ~ q(h | x)`` and normalise the weights
    ``w_k = p(x, h_k) / q(h_k | x)`` over the K particles *of that point*.  The model
    ascends ``sum_k w~_k log p(x, h_k)``.  The guide ascends, by ``guide_update``:

    * ``"wake"``: ``sum_k w~_k log q(h_k | x)``, fitting q to the model's posterior on
      real data (the inclusive KL ``KL(p(h|x) || q(h|x))``);
    * ``"sleep"``: ``log q(h | x)`` on dreams ``(h, x) ~ p`` as in wake-sleep;
    * ``"mixture"``: ``mixture_weight * wake + (1 - mixture_weight) * sleep`` (the
      paper found the average of both phases to work best).

    One surrogate: the samples are detached and the weights carry no gradient, so the
    model term reaches only the model's parameters and the guide terms only the guide's.
    The reported ``objective`` is the K-sample importance-weighted bound.

    Pyro's ``pyro.infer.ReweightedWakeSleep`` normalises the weights of a whole
    minibatch jointly (its weights are products over the data points); here every data
    point has its own weights, as in the paper.

    :param num_particles: K >= 2 samples per data point.
    :param guide_update: ``"wake"``, ``"sleep"`` or ``"mixture"``.
    :param mixture_weight: weight of the wake term when ``guide_update="mixture"``.
    :param dream_batch_size: dreamed points per step for the sleep term (default: the
        data batch size).

    Example::

        est = ReweightedWakeSleep(num_particles=5, guide_update="mixture")
        est.surrogate(model, guide, x).total.backward()
    """

    name: ClassVar[str] = "rws"
    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False
    min_particles: ClassVar[int] = 2

    def __init__(self, *, num_particles: int = 5, guide_update: str = "wake",
                 mixture_weight: float = 0.5, dream_batch_size: int | None = None,
                 **options):
        if isinstance(num_particles, int) and num_particles < 2:
            raise ValueError(
                f"ReweightedWakeSleep needs num_particles >= 2, got {num_particles}: with one "
                f"particle the normalised weight is 1 and the wake-phase guide gradient has "
                f"mean zero. For one sample per point use WakeSleep ('ws')")
        super().__init__(num_particles=num_particles, **options)
        if guide_update not in GUIDE_UPDATES:
            raise ValueError(f"guide_update={guide_update!r} is unknown; choose one of "
                             f"{GUIDE_UPDATES}")
        if not (isinstance(mixture_weight, (int, float)) and 0.0 <= mixture_weight <= 1.0):
            raise ValueError(f"mixture_weight is the weight of the wake-phase guide term and "
                             f"must lie in [0, 1], got {mixture_weight!r}")
        self.guide_update = guide_update
        self.mixture_weight = float(mixture_weight)
        self.dream_batch_size = check_dream_batch_size(dream_batch_size)

    @property
    def _wake_weight(self) -> float:
        return {"wake": 1.0, "sleep": 0.0}.get(self.guide_update, self.mixture_weight)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = self.traces(model, guide, args, kwargs, guide_value_hook=detached_sample)
        log_p, log_q = tr.log_p, tr.log_q
        obj = rws_objectives(log_p, log_q)
        w = obj.weights
        bound = (tr.scale * log_mean_exp((log_p - log_q).detach(), 0).sum())
        metrics = {"objective": bound, "iwae": bound,
                   "ess": (1.0 / (w * w).sum(0)).mean()}
        parts = {"wake_model": -tr.scale * obj.model.sum()}
        a = self._wake_weight
        if a > 0.0:
            parts["wake_guide"] = -a * tr.scale * obj.guide.sum()
        if a < 1.0:
            n = tr.batch_size or 1
            sleep, score = sleep_term(model, guide, self.dream_batch_size or n,
                                      nesting=self.plate_nesting(model, guide, args, kwargs),
                                      num_points=tr.scale * n, call=(args, kwargs),
                                      wake=tr.model_trace)
            parts["sleep_guide"] = -(1.0 - a) * sleep
            metrics["sleep_log_q"] = score.log_q.detach().mean()
        return LossParts(parts, metrics)

    def check(self, model, guide, *args, **kwargs) -> None:
        tr = self.traces(model, guide, args, kwargs, num_particles=self._check_particles)
        self.check_traces(tr)
        check_detachable(tr, self.name)
        if self._wake_weight < 1.0:
            score_dream(guide, dream(model, self.dream_batch_size or tr.batch_size or 1,
                                     call=(args, kwargs), wake=tr.model_trace),
                        nesting=self.plate_nesting(model, guide, args, kwargs))
