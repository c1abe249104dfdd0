"""Generative moment matching networks: minimise MMD^2 between generated and real data.

Li, Swersky and Zemel (2015) and Dziugaite, Roy and Ghahramani (2015) train an implicit
generator by the squared maximum mean discrepancy between a generated and a data
minibatch under a characteristic kernel: a sum of Gaussian kernels, with the biased
V-statistic (GMMN) or the unbiased U-statistic (Dziugaite et al.); see
:mod:`ppl_dgm.kernels`.

GMMN's MNIST bandwidths {2, 5, 10, 20, 40, 80} divide the squared distance by
``2 * s`` in their reference code (REFERENCES.md), i.e. ``sigma_s^2 = s``: pass
``sigmas=GMMN_MNIST_SIGMAS`` for that setting.  By default (``sigmas=None``) the
bandwidths are multiples of the median pairwise distance of the real minibatch
(computed on the device, detached), which adapts to any data scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch

from ..kernels import median_distance, mmd2
from ..traces import data_argument
from ._adversarial import check_generator, generate
from .base import Estimator, LossParts

__all__ = ["GMMN_MNIST_SIGMAS", "MMD"]

GMMN_MNIST_SIGMAS = tuple(math.sqrt(s) for s in (2.0, 5.0, 10.0, 20.0, 40.0, 80.0))
MEDIAN_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)


class MMD(Estimator):
    """GMMN: train an implicit generator by minimising MMD^2 to the data minibatch.

    :param sigmas: kernel bandwidths; ``None`` uses ``median_multiples`` times the
        median pairwise distance of each real minibatch.
    :param median_multiples: the multiples used when ``sigmas`` is None.
    :param unbiased: the U-statistic (Dziugaite et al.) instead of the biased
        V-statistic (Li et al., the default).
    :param num_generated: generated points per step (default: the minibatch size).

    There is no adversary: the guide is not used (any guide, e.g. the default
    discriminator, may sit in its slot and stays untouched).
    ``metrics["objective"]`` is ``-MMD^2`` of the minibatch (a two-sample statistic of
    the whole batch, not a sum over points); ``metrics["mmd2"]`` is ``MMD^2``.

    Example::

        fit(Generator(x_dim=64), Discriminator(x_dim=64), MMD(), data, steps=3000)
    """

    name: ClassVar[str] = "mmd"
    handles_discrete_latents: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = False
    needs_likelihood: ClassVar[bool] = False

    def __init__(self, *, sigmas: Sequence[float] | None = None,
                 median_multiples: Sequence[float] = MEDIAN_MULTIPLES, unbiased: bool = False,
                 num_generated: int | None = None, **options):
        super().__init__(**options)
        if sigmas is not None:
            sigmas = [float(s) for s in (sigmas if isinstance(sigmas, (list, tuple))
                                         else [sigmas])]
            if not sigmas or not all(s > 0 for s in sigmas):
                raise ValueError(f"sigmas must be positive bandwidths, got {sigmas!r}")
            self.aux.register_buffer("sigmas", torch.tensor(sigmas))
        multiples = [float(s) for s in median_multiples]
        if not multiples or not all(s > 0 for s in multiples):
            raise ValueError(f"median_multiples must be positive, got {median_multiples!r}")
        self.aux.register_buffer("median_multiples", torch.tensor(multiples))
        self.fixed_sigmas = sigmas is not None
        self.unbiased = bool(unbiased)
        if num_generated is not None and int(num_generated) < 2:
            raise ValueError(f"num_generated must be >= 2, got {num_generated}")
        self.num_generated = None if num_generated is None else int(num_generated)

    def check(self, model, guide, *args, **kwargs) -> None:
        x = data_argument(args, kwargs)
        check_generator(model, x, self.name)

    def bandwidths(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_sigmas:
            return self.aux.sigmas
        return median_distance(x.reshape(x.shape[0], -1)).detach() * self.aux.median_multiples

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        fake = generate(model, self.num_generated or x.shape[0])
        value = mmd2(fake, x, self.bandwidths(x), unbiased=self.unbiased)
        return LossParts({"mmd2": value}, {"objective": -value.detach(),
                                           "mmd2": value.detach()})
