"""Bounds and likelihoods of a trained model: ELBO, IWAE-K, importance sampling, exact.

All estimates are per data point.  The programs are called as ``model(x)`` and
``guide(x)``, or as a :class:`~ppl_dgm.programs.ProgramCall` (``call=``) says.
Importance sampling uses the guide as proposal,
``log p(x) ~= log (1/K) sum_k p(x, h_k) / q(h_k | x)``, a stochastic lower bound that
tightens as K grows.  Samples are drawn in chunks and combined with a streaming
logsumexp, so memory does not grow with K (5000 and more are fine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from . import protocol
from .errors import DataError
from .particles import run_particles
from .programs import ProgramCall
from .traces import guess_plate_nesting

__all__ = ["EvalResult", "bound", "evaluate", "exact_log_prob", "importance_log_likelihood",
           "log_weights"]


def _nesting(model, guide, x, call=None) -> int:
    return guess_plate_nesting(model, guide, *_bind(call, x[:2]))


def _bind(call: ProgramCall | None, x):
    return ((x,), {}) if call is None else call.bind(x)


@torch.no_grad()
def log_weights(model, guide, x: torch.Tensor, num_samples: int, *,
                nesting: int | None = None, call: ProgramCall | None = None) -> torch.Tensor:
    """Log importance weights ``(num_samples, N)`` for data points ``x`` (one chunk)."""
    nesting = _nesting(model, guide, x, call) if nesting is None else nesting
    args, kwargs = _bind(call, x)
    tr = run_particles(model, guide, args, kwargs, num_particles=num_samples, nesting=nesting)
    if not tr.per_point:
        raise DataError("per-point likelihoods need every latent inside the model's 'data' "
                        f"plate; latents {list(tr.latents)} include a global one")
    return tr.log_w


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i:i + batch_size]


@torch.no_grad()
def importance_log_likelihood(model, guide, x: torch.Tensor, *, num_samples: int = 5000,
                              chunk_size: int = 250, batch_size: int = 500,
                              call: ProgramCall | None = None) -> torch.Tensor:
    """Importance-sampled ``log p(x)`` per data point, memory flat in ``num_samples``."""
    if num_samples < 1:
        raise ValueError(f"num_samples must be >= 1, got {num_samples}")
    nesting = _nesting(model, guide, x, call)
    out = []
    for xb in _batches(x, batch_size):
        running_max = torch.full((xb.shape[0],), -math.inf, device=xb.device)
        running_sum = torch.zeros(xb.shape[0], device=xb.device)
        done = 0
        while done < num_samples:
            k = min(chunk_size, num_samples - done)
            lw = log_weights(model, guide, xb, k, nesting=nesting, call=call)
            new_max = torch.maximum(running_max, lw.max(0).values)
            running_sum = (running_sum * torch.exp(running_max - new_max)
                           + torch.exp(lw - new_max).sum(0))
            running_max = new_max
            done += k
        out.append(running_max + torch.log(running_sum) - math.log(num_samples))
    return torch.cat(out)


@torch.no_grad()
def bound(model, guide, x: torch.Tensor, k: int = 1, *, repeats: int = 1,
          batch_size: int = 500, call: ProgramCall | None = None) -> torch.Tensor:
    """The K-sample bound ``log (1/K) sum_k w_k`` per point (K=1: the ELBO), averaged
    over ``repeats`` independent draws."""
    nesting = _nesting(model, guide, x, call)
    out = []
    for xb in _batches(x, batch_size):
        total = torch.zeros(xb.shape[0], device=xb.device)
        for _ in range(repeats):
            lw = log_weights(model, guide, xb, k, nesting=nesting, call=call)
            total += torch.logsumexp(lw, 0) - math.log(k)
        out.append(total / repeats)
    return torch.cat(out)


def exact_log_prob(model, x: torch.Tensor) -> torch.Tensor | None:
    """``log p(x)`` per point where the model computes it exactly, else None (see
    :class:`ppl_dgm.protocol.ExactLikelihood`)."""
    return protocol.exact_log_prob(model, x)


@dataclass(frozen=True)
class EvalResult:
    """Mean per-point values (nats) and the per-point tensors they came from."""

    summary: dict[str, float]
    per_point: dict[str, torch.Tensor] = field(repr=False)

    def nll(self) -> float:
        """The best available negative log-likelihood: exact if known, else IS."""
        key = "exact" if "exact" in self.summary else "is"
        return -self.summary[key]


def evaluate(model, guide, x: torch.Tensor, *, num_samples: int = 5000,
             ks: Sequence[int] = (1, 5, 50), repeats: int = 10, seed: int | None = 0,
             batch_size: int = 500, call: ProgramCall | None = None) -> EvalResult:
    """The bound ladder on ``x``: ELBO, IWAE-K for each K, IS with ``num_samples``,
    and the exact log-likelihood where the model has one.  Means are in nats per point."""
    if seed is not None:
        torch.manual_seed(seed)
    per_point: dict[str, torch.Tensor] = {}
    for k in ks:
        per_point["elbo" if k == 1 else f"iwae_{k}"] = bound(
            model, guide, x, k, repeats=max(1, repeats if k < 100 else 1), batch_size=batch_size,
            call=call)
    per_point["is"] = importance_log_likelihood(model, guide, x, num_samples=num_samples,
                                                batch_size=batch_size, call=call)
    exact = exact_log_prob(model, x)
    if exact is not None:
        per_point["exact"] = exact
    summary = {key: float(v.mean()) for key, v in per_point.items()}
    summary["num_samples"] = num_samples
    return EvalResult(summary, per_point)
