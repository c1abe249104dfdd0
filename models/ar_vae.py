"""VAEs whose decoder is an autoregressive likelihood: ``p(x | z)`` by MADE or NADE.

    z ~ N(0, I),    x | z ~ prod_k Bernoulli(x_{o_k}; sigmoid(f(x_{o_<k}, z)_{o_k})),

with ``f`` a MADE (:class:`~ppl_dgm.models.made.MADENet`) or NADE
(:class:`~ppl_dgm.models.nade.NADENet`) network that takes ``z`` as an extra, unmasked
input.  The pixels are no longer independent given ``z``, so the latent need not
explain local correlations (the PixelVAE / variational lossy autoencoder idea, here in
its simplest form).  The site ``"x"`` is an
:class:`~ppl_dgm.models.autoregressive.AutoregressiveBernoulli` with an exact log density,
so ELBO, IWAE and every other likelihood estimator train it with the usual Gaussian
encoder, and importance sampling estimates ``log p(x)``.

Example::

    from ppl_dgm.data import load_digits
    from ppl_dgm.estimators import ELBO
    from ppl_dgm.guides import GaussianEncoder
    from ppl_dgm.models import MADEVAE
    from ppl_dgm.train import fit

    data = load_digits()
    model = MADEVAE(x_dim=64, z_dim=8)
    guide = GaussianEncoder.from_model(model)
    fit(model, guide, ELBO(), data, steps=3000)
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import as_sizes, plate_size

from .made import MADENet
from .nade import NADENet

__all__ = ["AutoregressiveVAE", "MADEVAE", "NADEVAE"]

DECODERS = ("made", "nade")


class AutoregressiveVAE(PyroModule):
    """``z ~ N(0, I)``, ``x | z`` autoregressive (MADE or NADE conditioned on ``z``).

    :param x_dim: data width.  :param z_dim: latent size.
    :param decoder: ``"made"`` or ``"nade"``.
    :param hidden: widths of the masked network (MADE), or the one hidden width (NADE).
    :param context_hidden: widths of the unmasked tanh network from ``z`` into the
        decoder (``()``: linear).
    :param decoder_options: passed to the network (``num_masks``, ``order_agnostic``,
        ``connectivity_agnostic``, ``direct``, ``activation``, ``mask_seed`` for MADE;
        ``order``, ``order_seed``, ``activation`` for NADE).  In eval mode a MADE decoder
        with several masks is the mixture over them.
    """

    latent_dims: dict[str, int]
    default_guide = "gaussian"

    def __init__(self, x_dim: int = 64, z_dim: int = 8, decoder: str = "made",
                 hidden: Sequence[int] | int | str = (200,),
                 context_hidden: Sequence[int] | int | str = (200,), **decoder_options):
        super().__init__()
        if decoder not in DECODERS:
            raise ValueError(f"decoder={decoder!r} is unknown; choose one of {DECODERS}")
        self.x_dim, self.z_dim, self.decoder = int(x_dim), int(z_dim), decoder
        self.likelihood = "bernoulli"
        self.latent_dims = {"z": self.z_dim}
        if decoder == "made":
            net = MADENet(self.x_dim, hidden, context_dim=self.z_dim,
                          context_hidden=context_hidden, **decoder_options)
        else:
            sizes = as_sizes(hidden)
            if len(sizes) != 1:
                raise ValueError(f"a NADE decoder has one hidden width, got hidden={hidden!r}")
            net = NADENet(self.x_dim, sizes[0], context_dim=self.z_dim,
                          context_hidden=context_hidden, **decoder_options)
        self.nets = PyroModule[nn.ModuleList]([net])
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    @property
    def net(self) -> MADENet | NADENet:
        # reached through a PyroModule container: no pyro.module statement per step
        return self.nets[0]

    def observation(self, z: torch.Tensor):
        """The likelihood ``p(x | z)`` (batch shape ``z.shape[:-1]``)."""
        return self.net.distribution(z, z.shape[:-1], ensemble=not self.training)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        with pyro.plate("data", plate_size(x, batch_size)):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            return pyro.sample("x", self.observation(z), obs=x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` ancestral draws of x (``mean=True``: the conditional probabilities the
        draws were made with)."""
        z = dist.Normal(self.prior_loc, self.prior_scale).sample((n,))
        x, probs = self.net.distribution(z, z.shape[:-1], ensemble=True).ancestral()
        return probs if mean else x


class MADEVAE(AutoregressiveVAE):
    """:class:`AutoregressiveVAE` with a MADE decoder (registry name ``made-vae``)."""

    def __init__(self, x_dim: int = 64, z_dim: int = 8,
                 hidden: Sequence[int] | int | str = (200,),
                 context_hidden: Sequence[int] | int | str = (200,), **decoder_options):
        super().__init__(x_dim, z_dim, "made", hidden, context_hidden, **decoder_options)


class NADEVAE(AutoregressiveVAE):
    """:class:`AutoregressiveVAE` with a NADE decoder (registry name ``nade-vae``)."""

    def __init__(self, x_dim: int = 64, z_dim: int = 8, hidden: int = 100,
                 context_hidden: Sequence[int] | int | str = (200,), **decoder_options):
        super().__init__(x_dim, z_dim, "nade", hidden, context_hidden, **decoder_options)
