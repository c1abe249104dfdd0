"""Wake-sleep (Hinton, Dayan, Frey and Neal 1995)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..traces import Traces
from .base import Estimator, LossParts
from .dreams import DreamScore, dream, score_dream

__all__ = ["WakeSleep", "sleep_objective", "sleep_term", "wake_model_objective"]


def wake_model_objective(log_p: torch.Tensor) -> torch.Tensor:
    """Wake phase for the model: ``(1/K) sum_k log p(x, h_k)`` per point, ``(K, P) -> (P,)``.

    ``h_k ~ q(h | x)`` are fixed samples (no gradient flows through them).
    """
    return log_p.mean(0)


def sleep_objective(dream_log_q: torch.Tensor, num_points: float | torch.Tensor,
                    per_point: bool = True) -> torch.Tensor:
    """Sleep phase for the guide: ``E_p(h, x)[log q(h | x)]`` from dreams.

    ``dream_log_q`` holds ``log q(h_j | x_j)`` of each dreamed point ``(P,)``.  Its mean
    is multiplied by ``num_points``, the number of data points the wake batch stands
    for, so the sleep term weighs as much as a wake term over the same batch whatever
    the dream batch size.  Without per-point values (a global latent) the whole dream
    is one sample and its log q is used as it is.
    """
    if not per_point:
        return dream_log_q.sum()
    return num_points * dream_log_q.mean()


def sleep_term(model, guide, batch_size: int, *, nesting: int,
               num_points: float | torch.Tensor) -> tuple[torch.Tensor, DreamScore]:
    """Dream ``batch_size`` points from ``model`` and return the sleep objective (see
    :func:`sleep_objective`) with the guide's score on the dream."""
    score = score_dream(guide, dream(model, batch_size), nesting=nesting)
    return sleep_objective(score.log_q, num_points, score.per_point), score


def _detached_sample(name: str, site: dict) -> torch.Tensor:
    # Guide samples are data for the model update: no gradient flows through them
    # (also not the pathwise one a reparameterised guide would otherwise give).
    return site["value"].detach()


class WakeSleep(Estimator):
    """The Helmholtz machine's wake-sleep algorithm, as one surrogate.

    *Wake*: draw ``h_k ~ q(h | x)`` for each data point and ascend
    ``(1/K) sum_k log p(x, h_k)`` in the model's parameters.  *Sleep*: dream
    ``(h, x) ~ p(h) p(x | h)`` by running the model unconditioned
    (``model(None, batch_size=n)``) and ascend ``log q(h | x)`` in the guide's
    parameters.  Two objectives, one scalar: the guide samples are detached in the wake
    term and the dreams are drawn without gradient, so the wake term reaches only the
    model and the sleep term only the guide.  Wake-sleep follows no single objective;
    the reported ``objective`` is the ELBO of the wake samples (a diagnostic).

    The sleep phase minimises ``E_p(x)[KL(p(h | x) || q(h | x))]`` under the model's
    own data distribution, not the data's: early in training the guide learns from
    poor dreams.  Works with discrete latents (no reparameterisation is needed) and
    with any model and guide that satisfy the contracts (see :mod:`.dreams`).

    :param num_particles: K guide samples per data point in the wake phase.
    :param dream_batch_size: dreamed points per step (default: the data batch size).

    Example::

        est = WakeSleep(num_particles=1, dream_batch_size=100)
        est.surrogate(model, guide, x).total.backward()
    """

    name: ClassVar[str] = "ws"
    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False

    def __init__(self, *, num_particles: int = 1, dream_batch_size: int | None = None,
                 max_plate_nesting: int | None = None):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        self.dream_batch_size = _check_dream_batch_size(dream_batch_size)

    def wake_traces(self, model, guide, x) -> Traces:
        """Model and guide traces with the guide's samples detached."""
        return self.traces(model, guide, x, guide_value_hook=_detached_sample)

    def surrogate(self, model, guide, x) -> LossParts:
        tr = self.wake_traces(model, guide, x)
        wake = tr.scale * wake_model_objective(tr.log_p).sum()
        sleep, score = sleep_term(model, guide, self.dream_batch_size or x.shape[0],
                                  nesting=self.plate_nesting(model, guide, x),
                                  num_points=tr.scale * x.shape[0])
        elbo = (tr.scale * tr.log_w.mean(0).sum()).detach()
        return LossParts({"wake_model": -wake, "sleep_guide": -sleep},
                         {"objective": elbo, "elbo": elbo,
                          "sleep_log_q": score.log_q.detach().mean()})

    def check(self, model, guide, x) -> None:
        super().check(model, guide, x)
        score_dream(guide, dream(model, self.dream_batch_size or x.shape[0]),
                    nesting=self.plate_nesting(model, guide, x))


def _check_dream_batch_size(n):
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"dream_batch_size must be a positive integer (dreamed points per "
                         f"step) or None for the data batch size, got {n!r}")
    return n
