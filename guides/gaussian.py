"""Amortised diagonal-Gaussian inference network."""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch.nn import functional as F

from ppl_dgm.nn import as_sizes, mlp

__all__ = ["GaussianEncoder"]


class GaussianEncoder(PyroModule):
    """``q(z | x) = N(mu(x), diag(sigma(x)^2))`` with an MLP encoder.

    :param x_dim: data width.  :param z_dim: latent size.
    :param hidden: encoder widths (``()`` gives a linear encoder).
    :param site: name of the latent sample site (the model's latent).

    Build one that fits a model with :meth:`from_model`.
    """

    def __init__(self, x_dim: int, z_dim: int, hidden: Sequence[int] | int | str = (200,),
                 activation: str = "tanh", site: str = "z"):
        super().__init__()
        self.x_dim, self.z_dim, self.site = int(x_dim), int(z_dim), site
        self.encoder = mlp(self.x_dim, as_sizes(hidden), 2 * self.z_dim, activation=activation)

    @classmethod
    def from_model(cls, model, **options) -> GaussianEncoder:
        latents = getattr(model, "latent_dims", None)
        if not latents or len(latents) != 1:
            raise ValueError(
                f"GaussianEncoder fits a model with exactly one latent site; "
                f"{type(model).__name__} declares latent_dims={latents!r}. Give the guide "
                f"explicitly (x_dim=..., z_dim=..., site=...).")
        (site, z_dim), = latents.items()
        return cls(model.x_dim, z_dim, site=site, **options)

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        loc, raw = self.encoder(x).chunk(2, -1)
        return dist.Normal(loc, F.softplus(raw) + 1e-4).to_event(1)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError("GaussianEncoder is an inference network: it needs observed x")
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.distribution(x))
