"""A multilevel (hierarchical) normal model with group-level latents."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import plate_size

__all__ = ["Hierarchical"]


class Hierarchical(PyroModule):
    """Random-intercept model: groups share a population mean and spread.

    Each data point is one group ``j`` (a school, a hospital, a subject) observed through
    ``m = x_dim`` measurements ``x_j = (x_j1, ..., x_jm)``::

        mu      ~ N(0, mu_scale^2)                 population mean      (global)
        tau     ~ HalfNormal(tau_scale)            spread of the groups (global)
        theta_j ~ N(mu, tau^2)                     group-level latent, in plate "data"
        x_jk    ~ N(theta_j, sigma^2)              measurements, the site "x"

    ``sigma`` is a model parameter (learned by the ELBO, i.e. empirical Bayes) unless
    ``learn_noise=False``.  Because ``mu`` and ``tau`` are outside the data plate, the
    posterior of one group depends on all the others: importance weights exist only for
    the whole data set, and a reference posterior (NUTS) conditions on every group.
    This is the classic case where a mean-field guide is too narrow for ``tau`` and
    misses the ``theta``-``tau`` funnel, which :func:`ppl_dgm.diagnostics.nuts_reference`
    shows.

    :param x_dim: measurements per group (m).
    :param num_groups: the number of groups in the full data set, when training on
        minibatches of groups: the group terms are then scaled by
        ``num_groups / batch`` so the ELBO of a minibatch is unbiased for the full one.
        ``None`` (default): every batch is the whole data set.

    Example::

        model = Hierarchical(x_dim=5)
        x = model.sample(8)            # 8 groups of 5 measurements
    """

    def __init__(self, x_dim: int = 5, *, mu_scale: float = 5.0, tau_scale: float = 2.0,
                 noise_scale: float = 1.0, learn_noise: bool = True,
                 num_groups: int | None = None):
        super().__init__()
        self.x_dim = int(x_dim)
        self.num_groups = None if num_groups is None else int(num_groups)
        self.latent_dims = {"mu": 1, "tau": 1, "theta": 1}
        self.register_buffer("mu_scale", torch.tensor(float(mu_scale)))
        self.register_buffer("tau_scale", torch.tensor(float(tau_scale)))
        log_sigma = torch.tensor(float(noise_scale)).log()
        if learn_noise:
            self.log_sigma = nn.Parameter(log_sigma)
        else:
            self.register_buffer("log_sigma", log_sigma)
        self.register_buffer("zero", torch.tensor(0.0))

    def data_plate(self, n: int, device) -> pyro.plate:
        """The ``"data"`` plate over ``n`` groups, scaled when they are a minibatch."""
        if self.num_groups is None or self.num_groups == n:
            return pyro.plate("data", n)
        return pyro.plate("data", self.num_groups, subsample=torch.arange(n, device=device))

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        n = plate_size(x, batch_size)
        mu = pyro.sample("mu", dist.Normal(self.zero, self.mu_scale))
        tau = pyro.sample("tau", dist.HalfNormal(self.tau_scale))
        with self.data_plate(n, self.zero.device):
            theta = pyro.sample("theta", dist.Normal(mu, tau))
            loc = theta.unsqueeze(-1).expand(*theta.shape, self.x_dim)
            return pyro.sample("x", dist.Normal(loc, self.log_sigma.exp()).to_event(1), obs=x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` groups drawn from the prior predictive (their means with ``mean=True``)."""
        mu = dist.Normal(self.zero, self.mu_scale).sample()
        tau = dist.HalfNormal(self.tau_scale).sample()
        theta = dist.Normal(mu, tau).sample((n,))
        loc = theta.unsqueeze(-1).expand(n, self.x_dim)
        return loc.clone() if mean else dist.Normal(loc, self.log_sigma.exp()).sample()
