"""Discriminators as inference models ``q_phi(y | x)`` of the real/generated indicator.

In the unified view of GANs and VAEs (Hu, Yang, Salakhutdinov and Xing 2017) the
indicator ``y`` (1: real data, 0: generated) is a latent variable and the
discriminator is its inference model: ``D(x) = q_phi(y = 1 | x)``.  Each class here is
a Pyro guide whose program draws the site ``"y"`` from ``Bernoulli(logits=f_phi(x))``
inside ``pyro.plate("data", n)``.  Estimators read the logits from that site of the
guide's trace; ``logits(x)`` gives them directly, and ``net`` is the plain network
``(n, D) -> (n, 1)`` (an auxiliary discriminator for AAVAE, for instance).

:class:`UnitPredictors` is the adversary of predictability minimisation
(Schmidhuber 1992): one predictor per code unit, each guessing its unit from the
others.  It plays the discriminator's role against a code model.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import as_sizes, conv_image_shape, mlp

__all__ = ["DCGANDiscriminator", "Discriminator", "UnitPredictors"]

INDICATOR_SITE = "y"
CODE_SITE = "code"


class _IndicatorGuide(PyroModule):
    """Shared program ``y ~ Bernoulli(logits = f(x))`` over the data plate."""

    net: nn.Module

    @classmethod
    def from_model(cls, model, **options):
        x_dim = getattr(model, "x_dim", None)
        if x_dim is None:
            raise ValueError(f"{cls.__name__}.from_model needs the model's data width "
                             f"(an x_dim attribute); {type(model).__name__} has none. Build "
                             f"it directly: {cls.__name__}(x_dim=...)")
        return cls(x_dim=x_dim, **options)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``log D(x) - log(1 - D(x))`` for data ``(n, x_dim)``; shape ``(n,)``."""
        return self.net(x).squeeze(-1)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError(f"{type(self).__name__} is an inference model q(y|x): it needs "
                             f"data x (real or generated)")
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(INDICATOR_SITE, dist.Bernoulli(logits=self.logits(x)))


class Discriminator(_IndicatorGuide):
    """MLP discriminator ``q_phi(y = 1 | x) = sigmoid(f_phi(x))``.

    :param x_dim: data width.  :param hidden: hidden widths (``(128,)`` by default).
    :param activation: hidden nonlinearity (leaky ReLU, as in most GANs).

    Example::

        disc = Discriminator(x_dim=64)
        disc.logits(x)                     # (n,) logits of D(x) = q(y=1|x)
        tr = pyro.poutine.trace(disc).get_trace(x)
        tr.nodes["y"]["fn"].logits         # the same, as estimators read them
    """

    def __init__(self, x_dim: int = 64, hidden: Sequence[int] | int | str = (128,),
                 activation: str = "leaky_relu"):
        super().__init__()
        self.x_dim = int(x_dim)
        self.net = mlp(self.x_dim, as_sizes(hidden), 1, activation=activation)


class DCGANDiscriminator(_IndicatorGuide):
    """DCGAN-style convolutional discriminator: two stride-2 convolutions with leaky
    ReLU, then a linear logit.  Images of ``x_dim`` pixels (square, side divisible by 4)
    or ``image_shape=(H, W)``; ``channels`` is the first feature map's width."""

    def __init__(self, x_dim: int = 64, channels: int = 64,
                 image_shape: Sequence[int] | None = None):
        super().__init__()
        self.x_dim = int(x_dim)
        h, w = conv_image_shape(self.x_dim, image_shape, type(self).__name__,
                                alternative="Discriminator")
        c = int(channels)
        self.net = PyroModule[nn.Sequential](
            nn.Unflatten(1, (1, h, w)),
            nn.Conv2d(1, c, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(1), nn.Linear(2 * c * (h // 4) * (w // 4), 1))


class _MaskedPredictors(nn.Module):
    """``m`` one-hidden-layer predictors evaluated together; predictor ``i`` never sees
    input ``i`` (its first-layer weights from unit ``i`` are masked to zero)."""

    def __init__(self, m: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(m, m, hidden) / m ** 0.5)
        self.b1 = nn.Parameter(torch.zeros(m, hidden))
        self.w2 = nn.Parameter(torch.randn(m, hidden) / hidden ** 0.5)
        self.b2 = nn.Parameter(torch.zeros(m))
        self.register_buffer("mask", (1.0 - torch.eye(m)).unsqueeze(-1))

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(torch.einsum("...j,ijh->...ih", code, self.w1 * self.mask) + self.b1)
        return (h * self.w2).sum(-1) + self.b2


class UnitPredictors(PyroModule):
    """Predictors ``P_i(code_{-i})`` of each code unit from the others (Schmidhuber 1992).

    As a Pyro program it is the pseudo-likelihood model ``prod_i N(code_i | P_i, 1)``:
    the site ``"code"`` has mean ``P(code)``, so its log density is minus half the
    squared prediction error.  Predictability minimisation trains the predictors to
    minimise that error and the code to maximise it.

    :param code_dim: number of code units ``m``.  :param hidden: hidden width per
        predictor.
    """

    def __init__(self, code_dim: int = 4, hidden: int = 32):
        super().__init__()
        if int(code_dim) < 2:
            raise ValueError(f"predictability minimisation needs at least 2 code units "
                             f"(each is predicted from the others); got code_dim={code_dim}")
        self.code_dim = int(code_dim)
        # A PyroModule container: the predictors are reached without a pyro.module
        # statement on every call (as ppl_dgm.nn.mlp does for MLPs).
        self.net = PyroModule[nn.Sequential](_MaskedPredictors(self.code_dim, int(hidden)))
        self.register_buffer("unit_scale", torch.ones(()))

    @classmethod
    def from_model(cls, model, **options) -> UnitPredictors:
        code_dim = getattr(model, "code_dim", None)
        if code_dim is None:
            raise ValueError(f"UnitPredictors fits a code model with a code_dim attribute; "
                             f"{type(model).__name__} has none. Build it directly: "
                             f"UnitPredictors(code_dim=...)")
        return cls(code_dim=code_dim, **options)

    def predict(self, code: torch.Tensor) -> torch.Tensor:
        """Predictions ``P_i(code_{-i})`` for all units, shape like ``code``."""
        return self.net(code)

    def forward(self, code: torch.Tensor | None = None,
                batch_size: int | None = None) -> torch.Tensor:
        if code is None:
            raise ValueError("UnitPredictors predicts code units from the others: call it "
                             "with a code of shape (n, code_dim)")
        with pyro.plate("data", code.shape[0]):
            return pyro.sample(CODE_SITE, dist.Normal(self.predict(code), self.unit_scale)
                               .to_event(1))
