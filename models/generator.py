"""Implicit generators: ``z ~ N(0, I)``, ``x = G(z)`` (Goodfellow et al. 2014).

An implicit model has no likelihood: it is a program that *generates* data.  The
generated data are the site ``"x"`` inside ``pyro.plate("data", n)``, recorded with
``pyro.deterministic`` (a Delta site), so every adversarial or moment-matching
estimator finds them by name in the model's trace and differentiates through ``G``.

In the unified view of Hu, Yang, Salakhutdinov and Xing (2017) this program is
``p_theta(x | y = 0)``, the generated-sample half of ``p_theta(x | y)``; the other half,
``p(x | y = 1)``, is the data distribution itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import as_sizes, conv_image_shape, mlp, plate_size

__all__ = ["DCGANGenerator", "Generator"]

OUTPUTS = ("sigmoid", "identity")


class _ImplicitGenerator(PyroModule):
    """Shared program: prior on ``z``, deterministic ``x = G(z)``, ``sample(n)``.

    Subclasses set ``self.net`` (a module mapping ``(n, z_dim)`` to ``(n, x_dim)``).
    """

    x_dim: int
    z_dim: int
    latent_dims: dict[str, int]

    def _init_common(self, x_dim: int, z_dim: int, output: str) -> None:
        if output not in OUTPUTS:
            raise ValueError(f"output={output!r} is unknown; choose one of {OUTPUTS} "
                             f"('sigmoid' for data in [0, 1] such as binarised images, "
                             f"'identity' for real-valued data)")
        if int(x_dim) < 1 or int(z_dim) < 1:
            raise ValueError(f"x_dim and z_dim must be positive, got x_dim={x_dim}, "
                             f"z_dim={z_dim}")
        self.x_dim, self.z_dim, self.output = int(x_dim), int(z_dim), output
        self.latent_dims = {"z": self.z_dim}
        self.register_buffer("prior_loc", torch.zeros(self.z_dim))
        self.register_buffer("prior_scale", torch.ones(self.z_dim))

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """``G(z)`` for noise of shape ``(..., z_dim)``; returns ``(..., x_dim)``."""
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, self.z_dim))
        if self.output == "sigmoid":
            out = torch.sigmoid(out)
        return out.reshape(*lead, self.x_dim)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        """Generate ``batch_size`` points (or as many as ``x`` has rows).

        An implicit model cannot condition on data: ``x`` only sets how many points
        are generated.  The generated points are the deterministic site ``"x"``.
        """
        with pyro.plate("data", plate_size(x, batch_size)):
            z = pyro.sample("z", dist.Normal(self.prior_loc, self.prior_scale).to_event(1))
            return pyro.deterministic("x", self.generate(z), event_dim=1)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = True) -> torch.Tensor:
        """``n`` generated points ``G(z)``.  With ``mean=False`` and a sigmoid output,
        each pixel is drawn as Bernoulli(G(z)) (binary images)."""
        z = dist.Normal(self.prior_loc, self.prior_scale).sample((n,))
        out = self.generate(z)
        if not mean and self.output == "sigmoid":
            out = torch.bernoulli(out)
        return out


class Generator(_ImplicitGenerator):
    """MLP generator ``x = G(z)`` with ``z ~ N(0, I)``.

    :param x_dim: data width (64 for 8x8 digits).  :param z_dim: noise size.
    :param hidden: hidden widths, e.g. ``(128, 128)`` or ``"256,256"``.
    :param activation: hidden nonlinearity (``"relu"``, ``"leaky_relu"``, ``"tanh"``...).
    :param output: ``"sigmoid"`` (data in [0, 1]) or ``"identity"`` (real-valued data).

    Example::

        gen = Generator(x_dim=64, z_dim=16)
        x = gen.sample(16)                     # (16, 64), values in (0, 1)
        tr = pyro.poutine.trace(gen).get_trace(None, batch_size=8)
        tr.nodes["x"]["value"].shape           # (8, 64): the generated data site
    """

    def __init__(self, x_dim: int = 64, z_dim: int = 16,
                 hidden: Sequence[int] | int | str = (128, 128), activation: str = "relu",
                 output: str = "sigmoid"):
        super().__init__()
        self._init_common(x_dim, z_dim, output)
        self.net = mlp(self.z_dim, as_sizes(hidden), self.x_dim, activation=activation)


class DCGANGenerator(_ImplicitGenerator):
    """DCGAN-style convolutional generator (Radford, Metz and Chintala 2015).

    ``z -> Linear -> (2c, H/4, W/4) -> ConvT(stride 2) -> (c, H/2, W/2) -> ConvT(stride 2)
    -> (1, H, W)``, ReLU inside, sigmoid (or identity) output.  Batch normalisation is
    left out so that the generator behaves identically in train and eval mode and for
    any leading batch shape.

    :param x_dim: number of pixels of a square image whose side is divisible by 4
        (64 for 8x8 digits, 784 for 28x28 MNIST), unless ``image_shape`` is given.
    :param image_shape: ``(H, W)``, both divisible by 4.
    :param channels: ``c``, the width of the last hidden feature map.
    """

    def __init__(self, x_dim: int = 64, z_dim: int = 16, channels: int = 64,
                 image_shape: Sequence[int] | None = None, output: str = "sigmoid"):
        super().__init__()
        self._init_common(x_dim, z_dim, output)
        h, w = conv_image_shape(self.x_dim, image_shape, type(self).__name__,
                                alternative="Generator")
        self.image_shape = (h, w)
        c = int(channels)
        self.net = PyroModule[nn.Sequential](
            nn.Linear(self.z_dim, 2 * c * (h // 4) * (w // 4)), nn.ReLU(),
            nn.Unflatten(1, (2 * c, h // 4, w // 4)),
            nn.ConvTranspose2d(2 * c, c, kernel_size=4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(c, 1, kernel_size=4, stride=2, padding=1),
            nn.Flatten(1))
