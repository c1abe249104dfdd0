"""A code model for predictability minimisation (Schmidhuber 1992).

The code ``c = sigmoid(E(x))`` (``code_dim`` units in (0, 1)) is a deterministic function
of the data, recorded as the site ``"code"``; a decoder reconstructs the data from it
(site ``"x"``, Bernoulli or Gaussian).  Unconditioned, the program draws each code unit
independently, ``c_i ~ Bernoulli(mean of unit i over the training data)``, and decodes
it: once predictability minimisation has made the code factorial, independent units
are exactly what a sample of the data's code looks like, so ``sample(n)`` gives data.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import as_sizes, mlp, plate_size

__all__ = ["FactorialCode"]

LIKELIHOODS = ("bernoulli", "gaussian")


class FactorialCode(PyroModule):
    """Encoder ``x -> c = sigmoid(E(x))`` and decoder ``c -> p(x | c)``.

    :param x_dim: data width.  :param code_dim: number of code units.
    :param hidden: encoder and decoder widths.
    :param likelihood: ``"bernoulli"`` (binary data) or ``"gaussian"`` (a learned
        per-dimension scale).
    :param momentum: rate of the running mean of each code unit (kept in the buffer
        ``code_mean`` while training; the unconditioned program draws units with it).

    Example::

        model = FactorialCode(x_dim=8, code_dim=4, likelihood="gaussian")
        model.encode(x)          # (n, 4) code units in (0, 1)
    """

    def __init__(self, x_dim: int = 64, code_dim: int = 4,
                 hidden: Sequence[int] | int | str = (64,), likelihood: str = "bernoulli",
                 activation: str = "tanh", momentum: float = 0.01):
        super().__init__()
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood={likelihood!r} is unknown; choose one of {LIKELIHOODS}")
        if not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be in (0, 1], got {momentum}")
        self.x_dim, self.code_dim, self.likelihood = int(x_dim), int(code_dim), likelihood
        self.momentum = float(momentum)
        sizes = as_sizes(hidden)
        self.encoder = mlp(self.x_dim, sizes, self.code_dim, activation=activation)
        self.decoder = mlp(self.code_dim, tuple(reversed(sizes)), self.x_dim,
                           activation=activation)
        if likelihood == "gaussian":
            self.log_scale = nn.Parameter(torch.zeros(self.x_dim))
        self.register_buffer("code_mean", torch.full((self.code_dim,), 0.5))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code units in (0, 1) for data ``(..., x_dim)``."""
        return torch.sigmoid(self.encoder(x))

    def observation(self, out: torch.Tensor) -> dist.Distribution:
        if self.likelihood == "bernoulli":
            return dist.Bernoulli(logits=out).to_event(1)
        return dist.Normal(out, self.log_scale.exp()).to_event(1)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        with pyro.plate("data", plate_size(x, batch_size)):
            if x is None:
                code = pyro.sample("code", dist.Bernoulli(self.code_mean).to_event(1))
            else:
                code = pyro.deterministic("code", self.encode(x), event_dim=1)
                if self.training and torch.is_grad_enabled():
                    with torch.no_grad():
                        flat = code.detach().reshape(-1, self.code_dim).mean(0)
                        self.code_mean.lerp_(flat, self.momentum)
            return pyro.sample("x", self.observation(self.decoder(code)), obs=x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """Decode ``n`` codes with independent units; ``mean=True`` gives E[x | c]."""
        code = dist.Bernoulli(self.code_mean).sample((n,))
        out = self.decoder(code)
        if mean:
            return torch.sigmoid(out) if self.likelihood == "bernoulli" else out
        return self.observation(out).sample()
