"""Gradient variance and signal-to-noise ratio of an estimator, per parameter group.

An estimator's update for a parameter group (model or guide) is the gradient of its
surrogate with respect to that group's parameters.  Holding the parameters and the data
batch fixed, every call of the surrogate draws fresh latent samples, so the gradient is
a random vector ``g``.  :func:`gradient_stats` draws it ``num_draws`` times and keeps,
per parameter element, a running mean and variance (Welford's algorithm, in float64),
then summarises each group by

* ``total_variance = sum_i Var[g_i]`` (the trace of the covariance) and
  ``mean_variance = total_variance / num_elements``;
* ``snr = ||E g|| / sqrt(total_variance)``, the norm signal-to-noise ratio (how large
  the expected update is against the noise around it);
* ``mean_snr``: the average over elements of ``|E g_i| / sd(g_i)`` (elements with zero
  variance left out), the per-parameter SNR that Rainforth et al. (2018) track.

Draws are independent because each one runs the estimator on a fresh copy of it: an
estimator that updates running statistics in place (NVIL's centering, for example)
sees its snapshot state at every draw, and the caller's estimator is left unchanged.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import pyro
import torch

from .programs import trainables

__all__ = ["GradStats", "Welford", "gradient_stats"]


class Welford:
    """Running mean and variance of vectors (Welford 1962), numerically stable.

    Example::

        w = Welford(3)
        for g in draws:
            w.update(g)
        w.mean, w.variance  # unbiased (n - 1) variance per element
    """

    def __init__(self, size: int, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None):
        self.count = 0
        self.mean = torch.zeros(size, dtype=dtype, device=device)
        self._m2 = torch.zeros(size, dtype=dtype, device=device)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1).to(self.mean)
        if x.shape != self.mean.shape:
            raise ValueError(f"Welford holds vectors of size {self.mean.numel()}, got "
                             f"{x.numel()} values")
        self.count += 1
        delta = x - self.mean
        self.mean += delta / self.count
        self._m2 += delta * (x - self.mean)

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased per-element variance (needs at least two updates)."""
        if self.count < 2:
            return torch.full_like(self._m2, math.nan)
        return self._m2 / (self.count - 1)


@dataclass(frozen=True)
class GradStats:
    """Summary of ``num_draws`` gradient draws for one parameter group."""

    group: str
    num_draws: int
    num_elements: int
    mean_norm: float
    total_variance: float
    mean_variance: float
    snr: float
    mean_snr: float

    def as_dict(self) -> dict:
        return asdict(self)


def _summarise(group: str, w: Welford) -> GradStats:
    n = w.mean.numel()
    if n == 0:
        nan = math.nan
        return GradStats(group, w.count, 0, nan, nan, nan, nan, nan)
    var = w.variance.clamp_min(0.0)
    total = float(var.sum())
    mean_norm = float(w.mean.norm())
    sd = var.sqrt()
    nonzero = sd > 0
    mean_snr = float((w.mean.abs()[nonzero] / sd[nonzero]).mean()) if bool(nonzero.any()) \
        else math.nan
    snr = mean_norm / math.sqrt(total) if total > 0 else math.nan
    return GradStats(group, w.count, n, mean_norm, total, total / n, snr, mean_snr)


def gradient_stats(model, guide, estimator, x: torch.Tensor, *, num_draws: int = 100,
                   groups: Mapping[str, torch.nn.Module] | None = None,
                   seed: int | None = None) -> dict[str, GradStats]:
    """Variance and SNR of ``estimator``'s gradient for each parameter group.

    :param x: the fixed data batch.
    :param num_draws: gradient draws (at least 2); each is one surrogate evaluation.
    :param groups: role -> module whose parameters form a group (default: the model's
        and the guide's parameters, module or param-store ones, see
        :func:`ppl_dgm.programs.trainables`).
    :param seed: seed for the draws; the caller's random stream is left untouched
        (the draws run inside :func:`torch.random.fork_rng`).

    The gradient measured is that of the surrogate's total (the loss the optimiser
    minimises), i.e. exactly the update the estimator prescribes for each group; the
    modules' parameters and ``.grad`` fields are not changed.
    """
    if not isinstance(num_draws, int) or num_draws < 2:
        raise ValueError(f"num_draws must be an integer >= 2 to estimate a variance, got "
                         f"{num_draws!r}")
    groups = dict(groups) if groups is not None else trainables(model, guide, (x,))
    params = {role: [p for p in m.parameters() if p.requires_grad] for role, m in groups.items()}
    flat = [p for ps in params.values() for p in ps]
    stats = {role: Welford(sum(p.numel() for p in ps), device=x.device)
             for role, ps in params.items()}
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), pyro.validation_enabled(False):
        if hasattr(estimator, "plate_nesting"):  # cache it once, not in every copy
            estimator.plate_nesting(model, guide, x)
        if seed is not None:
            torch.manual_seed(seed)
        for _ in range(num_draws):
            est = copy.deepcopy(estimator)
            total = est.surrogate(model, guide, x).total
            if flat and total.requires_grad:
                grads = torch.autograd.grad(total, flat, allow_unused=True)
            else:  # the surrogate does not depend on these parameters at all
                grads = (None,) * len(flat)
            i = 0
            for role, ps in params.items():
                pieces = []
                for p in ps:
                    g = grads[i]
                    i += 1
                    pieces.append((torch.zeros_like(p) if g is None else g).reshape(-1))
                stats[role].update(torch.cat(pieces) if pieces else torch.zeros(0))
    return {role: _summarise(role, w) for role, w in stats.items()}
