"""Wake-sleep (Hinton, Dayan, Frey and Neal 1995)."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..traces import Traces
from ._dreams import (
    check_detachable,
    check_dream_batch_size,
    detached_sample,
    dream,
    score_dream,
    sleep_term,
)
from .base import Estimator, LossParts

__all__ = ["WakeSleep", "wake_model_objective"]


def wake_model_objective(log_p: torch.Tensor) -> torch.Tensor:
    """Wake phase for the model: ``(1/K) sum_k log p(x, h_k)`` per point, ``(K, P) -> (P,)``.

    ``h_k ~ q(h | x)`` are fixed samples (no gradient flows through them).
    """
    return log_p.mean(0)


class WakeSleep(Estimator):
    """The Helmholtz machine's wake-sleep algorithm, as one surrogate.

    *Wake*: draw ``h_k ~ q(h | x)`` for each data point and ascend
    ``(1/K) sum_k log p(x, h_k)`` in the model's parameters.  *Sleep*: dream
    ``(h, x) ~ p(h) p(x | h)`` by running the model unconditioned
    (``model(None, batch_size=n)``, or any program with its observed sites
    unconditioned) and ascend ``log q(h | x)`` in the guide's
    parameters.  Two objectives, one scalar: the guide samples are detached in the wake
    term and the dreams are drawn without gradient, so the wake term reaches only the
    model and the sleep term only the guide.  Wake-sleep follows no single objective;
    the reported ``objective`` is the ELBO of the wake samples (a diagnostic).

    The sleep phase minimises ``E_p(x)[KL(p(h | x) || q(h | x))]`` under the model's
    own data distribution, not the data's: early in training the guide learns from
    poor dreams.  Works with discrete latents (no reparameterisation is needed) and
    with any model and guide that satisfy the contracts (see :mod:`._dreams`).

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
                 **options):
        super().__init__(num_particles=num_particles, **options)
        self.dream_batch_size = check_dream_batch_size(dream_batch_size)

    def wake_traces(self, model, guide, args=(), kwargs=None) -> Traces:
        """Model and guide traces with the guide's samples detached."""
        return self.traces(model, guide, args, kwargs, guide_value_hook=detached_sample)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = self.wake_traces(model, guide, args, kwargs)
        wake = tr.scale * wake_model_objective(tr.log_p).sum()
        n = tr.batch_size or 1
        sleep, score = sleep_term(model, guide, self.dream_batch_size or n,
                                  nesting=self.plate_nesting(model, guide, args, kwargs),
                                  num_points=tr.scale * n, call=(args, kwargs),
                                  wake=tr.model_trace)
        elbo = (tr.scale * tr.log_w.mean(0).sum()).detach()
        return LossParts({"wake_model": -wake, "sleep_guide": -sleep},
                         {"objective": elbo, "elbo": elbo,
                          "sleep_log_q": score.log_q.detach().mean()})

    def check(self, model, guide, *args, **kwargs) -> None:
        tr = self.traces(model, guide, args, kwargs, num_particles=self._check_particles)
        self.check_traces(tr)
        check_detachable(tr, self.name)
        score_dream(guide, dream(model, self.dream_batch_size or tr.batch_size or 1,
                                 call=(args, kwargs), wake=tr.model_trace),
                    nesting=self.plate_nesting(model, guide, args, kwargs))
