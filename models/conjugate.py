"""A linear-Gaussian model whose posterior and evidence are known exactly."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import plate_size

__all__ = ["ConjugateGaussian"]


class ConjugateGaussian(PyroModule):
    """``z ~ N(0, I_d)``, ``x | z ~ N(W z + b, sigma^2 I_D)`` (probabilistic PCA).

    The marginal ``p(x) = N(b, W W^T + sigma^2 I)`` and the posterior
    ``p(z | x) = N(S W^T (x - b) / sigma^2, S)`` with ``S = (I + W^T W / sigma^2)^-1``
    are exact, so estimators can be checked against closed forms: :meth:`log_prob`,
    :meth:`posterior` and :meth:`expected_elbo` (the ELBO of a diagonal Gaussian q in
    closed form, differentiable in every argument).

    :param x_dim: D.  :param z_dim: d.  :param noise_scale: sigma (fixed).
    :param seed: seed of the random initial W.
    """

    def __init__(self, x_dim: int = 4, z_dim: int = 2, noise_scale: float = 0.5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.x_dim, self.z_dim, self.likelihood = int(x_dim), int(z_dim), "gaussian"
        self.latent_dims = {"z": self.z_dim}
        self.W = nn.Parameter(torch.randn(self.x_dim, self.z_dim, generator=g))
        self.b = nn.Parameter(0.1 * torch.randn(self.x_dim, generator=g))
        self.register_buffer("noise_scale", torch.tensor(float(noise_scale)))
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        with pyro.plate("data", plate_size(x, batch_size)):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            loc = z @ self.W.T + self.b
            return pyro.sample("x", dist.Normal(loc, self.noise_scale).to_event(1), obs=x)

    def marginal(self) -> torch.distributions.MultivariateNormal:
        cov = self.W @ self.W.T + self.noise_scale**2 * torch.eye(self.x_dim, device=self.W.device)
        return torch.distributions.MultivariateNormal(self.b, covariance_matrix=cov)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log evidence ``log p(x)`` per data point."""
        return self.marginal().log_prob(x)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact posterior mean ``(B, d)`` and covariance ``(d, d)``."""
        s2 = self.noise_scale**2
        prec = torch.eye(self.z_dim, device=x.device) + self.W.T @ self.W / s2
        cov = torch.linalg.inv(prec)
        mean = (x - self.b) @ self.W @ cov / s2
        return mean, cov

    def expected_elbo(self, x: torch.Tensor, q_loc: torch.Tensor, q_scale: torch.Tensor
                      ) -> torch.Tensor:
        """Closed-form ELBO per data point for ``q(z|x) = N(q_loc, diag(q_scale^2))``."""
        s2 = self.noise_scale**2
        resid = x - self.b - q_loc @ self.W.T
        trace_term = (q_scale**2) @ (self.W**2).sum(0)
        log_lik = (-0.5 * self.x_dim * torch.log(2 * math.pi * s2)
                   - ((resid**2).sum(-1) + trace_term) / (2 * s2))
        log_prior = -0.5 * self.z_dim * math.log(2 * math.pi) - 0.5 * (
            (q_loc**2).sum(-1) + (q_scale**2).sum(-1))
        entropy = torch.log(q_scale).sum(-1) + 0.5 * self.z_dim * (1 + math.log(2 * math.pi))
        return log_lik + log_prior + entropy

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        z = torch.randn(n, self.z_dim, device=self.W.device)
        loc = z @ self.W.T + self.b
        return loc if mean else loc + self.noise_scale * torch.randn_like(loc)
