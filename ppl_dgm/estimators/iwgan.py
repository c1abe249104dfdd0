"""Importance weighted GAN (Hu, Yang, Salakhutdinov and Xing 2017, Section 4.1, Eq. 16).

The unified view reads the generator update as variational inference of ``x`` given
the indicator ``y``: the GAN maximises a lower bound on ``log q(y)`` (Eq. 15), with
the generator ``p_theta(x | y)`` as the inference distribution and the reversed
discriminator as the "likelihood".  Copying IWAE (Burda et al. 2015) gives a tighter
k-sample bound whose gradient (Eq. 16) is, for the generated samples ``y = 0``,

    sum_i w~_i grad_theta log q^r_phi0(y = 0 | x(z_i, theta)) = sum_i w~_i grad log D(x_i),

    w_i = q^r_phi0(y = 0 | x_i) / q_phi0(y = 0 | x_i) = D(x_i) / (1 - D(x_i)) = exp(logit_i),

with ``w~`` the weights normalised over the k samples and held fixed (stop-gradient).
With ``k = 1`` the weight is 1 and the update is exactly the non-saturating GAN.  The
discriminator is trained as in the GAN (on all generated samples).

Our reading against the project's REFERENCES.md: the weight and the gradient agree
with it.  REFERENCES does not say which samples form a group of k; the paper says "in
practice, the k samples correspond to sample minibatch".  We offer both:
``group="particles"`` (default) draws ``num_particles = k`` samples per real point and
normalises within each column of k, exactly IWAE's layout; ``group="batch"``
normalises over the whole generated minibatch (the paper's practice) and multiplies by
the number of groups so that the gradient has the GAN's scale.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch.nn import functional as F

from ..traces import data_argument
from ._adversarial import (
    TwoPlayers,
    check_instance_noise,
    check_n_critic,
    discriminator_loss,
    gan_game,
)
from .base import Estimator, LossParts

__all__ = ["IWGAN", "importance_weighted_generator_loss"]

GROUPS = ("particles", "batch")


def importance_weighted_generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``-sum_j sum_i w~_ij log D(x_ij)`` for logits of shape ``(k, m)``: ``m`` groups of
    ``k`` generated samples, weights ``w~ = softmax(logits)`` over each group, detached.

    For ``k = 1`` this is exactly the non-saturating loss ``-sum log D(x)``."""
    w = torch.softmax(logits_fake.detach(), 0)
    return (w * F.softplus(-logits_fake)).sum()


class IWGAN(TwoPlayers, Estimator):
    """Importance weighted GAN: the generator's gradient reweights its samples by
    ``D/(1 - D)``, normalised over groups of k (Hu et al. 2017, Eq. 16).

    :param num_particles: ``k``, generated samples per real data point (the
        discriminator sees all of them, each counted ``1/k``).
    :param group: ``"particles"`` normalises the weights over each point's ``k``
        samples; ``"batch"`` over the whole generated minibatch (the paper's practice).
    :param n_critic: ``None``: both players step on every step; ``k``: k
        discriminator-only steps per generator step (as in :class:`~.gan.GAN`).
    :param instance_noise: noise added to the discriminator's inputs, as in
        :class:`~.gan.GAN`.

    ``metrics["objective"]`` is the GAN value as in :class:`~.gan.GAN`; ``iw_ess`` is the
    effective sample size of the normalised weights as a fraction of the group size.

    Example::

        est = IWGAN(num_particles=5)
        fit(Generator(x_dim=64), Discriminator(x_dim=64), est, data, steps=3000)
    """

    name: ClassVar[str] = "iwgan"

    def __init__(self, *, num_particles: int = 1, group: str = "particles",
                 n_critic: int | None = None, instance_noise: float = 0.0,
                 **options):
        super().__init__(num_particles=num_particles, **options)
        if group not in GROUPS:
            raise ValueError(f"group={group!r} is unknown; choose one of {GROUPS}")
        self.group = group
        self.n_critic = check_n_critic(n_critic)
        self.instance_noise = check_instance_noise(instance_noise)

    def _grouped(self, logits_gen: torch.Tensor) -> torch.Tensor:
        return logits_gen.reshape(-1, 1) if self.group == "batch" else logits_gen

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        game = gan_game(model, guide, x, num_particles=self.num_particles,
                        instance_noise=self.instance_noise)
        loss_d = discriminator_loss(game.real, game.fake)
        # generator logits (k, n); "batch": one group of k*n samples, times n groups' worth
        grouped = self._grouped(game.generator)
        loss_g = importance_weighted_generator_loss(grouped)
        if self.group == "batch":
            loss_g = loss_g * game.generator.shape[1]
        w = torch.softmax(grouped.detach(), 0)
        metrics = game.metrics(loss_d, loss_g)
        metrics["iw_ess"] = (1.0 / (w * w).sum(0) / grouped.shape[0]).mean()
        return LossParts({"discriminator": loss_d, "generator": loss_g}, metrics)
