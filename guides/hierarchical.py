"""A mean-field guide for the hierarchical model: global factors plus an amortised encoder."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import as_sizes, mlp

__all__ = ["HierarchicalGuide"]


class HierarchicalGuide(PyroModule):
    """``q(mu) q(tau) prod_j q(theta_j | x_j)`` for :class:`~ppl_dgm.models.Hierarchical`.

    ``q(mu)`` is normal and ``q(tau)`` log-normal with free parameters; ``q(theta_j |
    x_j)`` is normal with mean and scale from a small network of the group's sorted
    measurements (amortised, so it works for any number of groups).  Every factor is
    independent of the others, so the guide cannot express the dependence of the group
    means on ``tau`` that the true posterior has: a deliberately simple guide to compare
    with NUTS.

    :param x_dim: measurements per group.  :param hidden: encoder widths.
    :param num_groups: as in the model (minibatch scaling); ``from_model`` copies it.
    """

    def __init__(self, x_dim: int, *, hidden: Sequence[int] | int | str = (32,),
                 activation: str = "tanh", num_groups: int | None = None):
        super().__init__()
        self.x_dim = int(x_dim)
        self.num_groups = None if num_groups is None else int(num_groups)
        self.mu_loc = nn.Parameter(torch.tensor(0.0))
        self.mu_raw = nn.Parameter(torch.tensor(0.0))
        self.tau_loc = nn.Parameter(torch.tensor(0.0))
        self.tau_raw = nn.Parameter(torch.tensor(-1.0))
        # input: the group's mean, log sd and its sorted measurements
        self.encoder = mlp(self.x_dim + 2, as_sizes(hidden), 2, activation=activation)

    @classmethod
    def from_model(cls, model, **options) -> HierarchicalGuide:
        options.setdefault("num_groups", getattr(model, "num_groups", None))
        return cls(model.x_dim, **options)

    def theta_distribution(self, x: torch.Tensor) -> dist.Normal:
        mean = x.mean(-1, keepdim=True)
        spread = x.std(-1, keepdim=True).clamp_min(1e-3).log() if self.x_dim > 1 \
            else torch.zeros_like(mean)
        features = torch.cat([mean, spread, x.sort(-1).values - mean], -1)
        loc, raw = self.encoder(features).unbind(-1)
        return dist.Normal(mean.squeeze(-1) + loc, F.softplus(raw) + 1e-4)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError("HierarchicalGuide is an inference network: it needs observed x")
        n = x.shape[0]
        pyro.sample("mu", dist.Normal(self.mu_loc, F.softplus(self.mu_raw) + 1e-4))
        pyro.sample("tau", dist.LogNormal(self.tau_loc, F.softplus(self.tau_raw) + 1e-4))
        if self.num_groups is None or self.num_groups == n:
            plate = pyro.plate("data", n)
        else:
            plate = pyro.plate("data", self.num_groups, subsample=torch.arange(n, device=x.device))
        with plate:
            return pyro.sample("theta", self.theta_distribution(x))
