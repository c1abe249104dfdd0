"""The Helmholtz machine's recognition network: layered Bernoulli units, bottom up."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import as_sizes, mlp

__all__ = ["HelmholtzGuide"]


class HelmholtzGuide(PyroModule):
    """``q(h_1 | x) q(h_2 | h_1) ... q(h_L | h_{L-1})``, each a factorised Bernoulli.

    The recognition model of the Helmholtz machine (Dayan, Hinton, Neal and Zemel 1995)
    as used by NVIL, VIMCO and reweighted wake-sleep: layer ``l`` reads the layer below
    it (``x`` for the first) through a linear map (``hidden=()``, the classic choice) or
    an MLP, and samples the site of the model's layer ``l``.

    :param x_dim: visible units.
    :param layers: latent widths, bottom-up (the model's ``layers``).
    :param hidden: hidden widths of each layer's MLP; ``()`` is linear.
    :param sites: site names, bottom-up (default ``"h1"``, ``"h2"``, ...).

    Build one that matches any model with ``x_dim`` and a bottom-up ``latent_dims``
    (such as :class:`~ppl_dgm.models.SigmoidBeliefNet`) with :meth:`from_model`.

    Example::

        guide = HelmholtzGuide.from_model(SigmoidBeliefNet(64, (12,)), hidden=(100,))
    """

    def __init__(self, x_dim: int, layers: Sequence[int] | int | str, *,
                 hidden: Sequence[int] | int | str = (), activation: str = "tanh",
                 sites: Sequence[str] | None = None):
        super().__init__()
        sizes = as_sizes(layers)
        if not sizes or any(h < 1 for h in sizes):
            raise ValueError(f"layers={layers!r}: give one or more positive latent widths, "
                             f"bottom-up")
        self.x_dim, self.layer_sizes = int(x_dim), sizes
        self.sites = tuple(sites) if sites is not None else tuple(
            f"h{i + 1}" for i in range(len(sizes)))
        if len(self.sites) != len(sizes):
            raise ValueError(f"sites={self.sites} names {len(self.sites)} layers but layers="
                             f"{sizes} has {len(sizes)}")
        self.hidden = as_sizes(hidden)
        below = (self.x_dim, *sizes[:-1])
        self.nets = PyroModule[nn.ModuleList](
            [mlp(below[i], self.hidden, sizes[i], activation=activation)
             for i in range(len(sizes))])

    @classmethod
    def from_model(cls, model, **options) -> HelmholtzGuide:
        """A guide with one layer per latent site of ``model`` (its ``latent_dims``,
        bottom-up, and ``x_dim``)."""
        latents = getattr(model, "latent_dims", None)
        if not latents or not hasattr(model, "x_dim"):
            raise ValueError(
                f"HelmholtzGuide.from_model needs a model with x_dim and a bottom-up "
                f"latent_dims dict (like SigmoidBeliefNet); {type(model).__name__} has "
                f"latent_dims={latents!r}. Build HelmholtzGuide(x_dim, layers) directly.")
        return cls(model.x_dim, tuple(latents.values()), sites=tuple(latents), **options)

    def layer_logits(self, layer: int, below: torch.Tensor) -> torch.Tensor:
        """Logits of ``q(h_{layer+1} | below)`` (``layer`` counts from 0)."""
        return self.nets[layer](below)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError("HelmholtzGuide is a recognition network: it needs observed x")
        below = x
        with pyro.plate("data", x.shape[0]):
            for i, site in enumerate(self.sites):
                below = pyro.sample(site, dist.Bernoulli(
                    logits=self.layer_logits(i, below)).to_event(1))
        return below

    def log_prob(self, x: torch.Tensor, latents: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """``log q(h | x)`` for given latent values (any common leading batch shape)."""
        below, total = x, None
        for i, site in enumerate(self.sites):
            logits = self.layer_logits(i, below)
            h = latents[site]
            term = (h * logits - F.softplus(logits)).sum(-1)
            total = term if total is None else total + term
            below = h
        return total

    @torch.no_grad()
    def sample(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """One draw ``h ~ q(h | x)`` per row of ``x``, as ``{"h1": ..., ...}``."""
        below, out = x, {}
        for i, site in enumerate(self.sites):
            below = torch.bernoulli(torch.sigmoid(self.layer_logits(i, below)))
            out[site] = below
        return out
