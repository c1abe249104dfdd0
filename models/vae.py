"""The variational autoencoder's generative model (Kingma and Welling 2013)."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import as_sizes, mlp, plate_size

__all__ = ["VAE"]

LIKELIHOODS = ("bernoulli", "gaussian")


class VAE(PyroModule):
    """``z ~ N(0, I)``, ``x | z ~ Bernoulli(sigmoid(f(z)))`` or ``N(f(z), sigma^2)``.

    :param x_dim: data width (64 for 8x8 digits, 784 for MNIST).
    :param z_dim: latent size.
    :param hidden: decoder widths, e.g. ``(200,)`` or ``"400,400"``.
    :param likelihood: ``"bernoulli"`` for binary data, ``"gaussian"`` (a learned
        per-dimension scale) for real-valued data.

    Example::

        model = VAE(x_dim=64, z_dim=8, hidden=(200,))
        x = model.sample(16)
    """

    latent_dims: dict[str, int]

    def __init__(self, x_dim: int = 64, z_dim: int = 8, hidden: Sequence[int] | int | str = (200,),
                 likelihood: str = "bernoulli", activation: str = "tanh"):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")
        self.x_dim, self.z_dim, self.likelihood = int(x_dim), int(z_dim), likelihood
        self.latent_dims = {"z": self.z_dim}
        self.decoder = mlp(self.z_dim, as_sizes(hidden), self.x_dim, activation=activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.x_dim))
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    def observation(self, out: torch.Tensor) -> dist.Distribution:
        """The likelihood p(x | z) given the decoder output."""
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        return dist.Normal(out, self.log_scale.exp()).to_event(1)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        with pyro.plate("data", plate_size(x, batch_size)):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            out = self.decoder(z)
            return pyro.sample("x", self.observation(out), obs=x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` draws of x (or of E[x | z] with ``mean=True``, for image grids)."""
        z = dist.Normal(self.prior_loc, self.prior_scale).sample((n,))
        out = self.decoder(z)
        if mean:
            return torch.sigmoid(out) if self.likelihood == "bernoulli" else out
        return self.observation(out).sample()
