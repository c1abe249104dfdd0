"""Generative adversarial networks (Goodfellow et al. 2014) as one routed surrogate.

The unified view (Hu, Yang, Salakhutdinov and Xing 2017, "On Unifying Deep Generative
Models", Eq. 3-5) reads a GAN as variational EM over a real/generated indicator ``y``
(1: real, 0: generated):

* the model's program generates ``x = G_theta(z)`` (the site ``"x"``), which is
  ``p_theta(x | y = 0)``; real data are ``p(x | y = 1)``;
* the guide is the discriminator, an inference model ``q_phi(y | x)`` (the site ``"y"``),
  ``D(x) = q_phi(y = 1 | x)``;
* discriminator:  ``max_phi E_{p_theta(x|y) p(y)} [log q_phi(y | x)]``
  ``= E_data log D(x) + E_z log(1 - D(G(z)))`` (up to the factor 1/2 of ``p(y)``);
* generator:  ``max_theta E_{p_theta(x|y) p(y)} [log q^r_phi(y | x)]`` with the reversed
  discriminator ``q^r_phi(y | x) = q_phi(1 - y | x)``; only ``y = 0`` depends on theta,
  giving the non-saturating ``E_z log D(G(z))``.  Goodfellow's minimax generator
  instead minimises ``E_z log(1 - D(G(z)))``.

One scalar carries both updates.  The discriminator's terms see ``G(z)`` detached, so
they reach only phi; the generator's term evaluates ``D`` with its parameters detached
(``torch.func.functional_call``), so it reaches only theta, through ``G(z)``.  A single
backward pass therefore gives simultaneous gradient steps; ``n_critic=k`` instead
alternates ``k`` discriminator-only steps with one generator-only step (see
:func:`._adversarial.alternating_groups`).

The pieces shared by every adversarial estimator (generated data, discriminator
logits, frozen calls, checks, schedules) live in the kit :mod:`._adversarial`.
"""

from __future__ import annotations

from typing import ClassVar

from ..traces import data_argument
from ._adversarial import (
    LOSSES,
    TwoPlayers,
    check_instance_noise,
    check_n_critic,
    discriminator_loss,
    gan_game,
    generator_loss,
)
from .base import Estimator, LossParts

__all__ = ["GAN", "NSGAN"]


class GAN(TwoPlayers, Estimator):
    """The GAN of Goodfellow et al. (2014): discriminator ``q_phi(y|x)`` against an
    implicit generator, in one routed surrogate.

    :param loss: ``"minimax"`` (the generator minimises ``E log(1 - D(G(z)))``, the
        original game, whose gradient vanishes when D wins) or ``"nonsaturating"``
        (maximises ``E log D(G(z))``, the unified view's ``log q^r(y|x)``).
    :param n_critic: ``None`` (default): both players step on every step (simultaneous
        gradient descent on the one routed surrogate).  ``k >= 1``: ``k`` steps that
        update only the discriminator, then one that updates only the generator.
    :param instance_noise: standard deviation of Gaussian noise added to every input of
        the discriminator, real and generated (Sonderby et al. 2016; Arjovsky and Bottou
        2017).  It makes the two distributions overlap, which keeps the discriminator
        from winning outright on binary data (where any non-binary pixel gives a
        generated image away) and reduces mode collapse.  0 (default) turns it off.

    ``metrics["objective"]`` is the GAN value ``V(D, G) = sum_i log D(x_i) +
    sum_i log(1 - D(G(z_i)))`` over the minibatch (n real, n generated points), which the
    discriminator maximises; at the equilibrium ``D = 1/2`` it is ``-2 n log 2``.  Also
    reported: ``d_real`` and ``d_fake`` (mean D), ``loss_d`` and ``loss_g``.

    Example::

        gen, disc = Generator(x_dim=64), Discriminator(x_dim=64)
        fit(gen, disc, GAN(loss="nonsaturating"), data, steps=3000)
    """

    name: ClassVar[str] = "gan"
    default_loss: ClassVar[str] = "minimax"

    def __init__(self, *, loss: str | None = None, n_critic: int | None = None,
                 instance_noise: float = 0.0, **options):
        super().__init__(**options)
        loss = self.default_loss if loss is None else loss
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}")
        self.loss_type = loss
        self.n_critic = check_n_critic(n_critic)
        self.instance_noise = check_instance_noise(instance_noise)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        game = gan_game(model, guide, x, instance_noise=self.instance_noise)
        loss_d = discriminator_loss(game.real, game.fake)
        loss_g = generator_loss(game.generator, self.loss_type)
        return LossParts({"discriminator": loss_d, "generator": loss_g},
                         game.metrics(loss_d, loss_g))


class NSGAN(GAN):
    """:class:`GAN` with the non-saturating generator loss ``-E log D(G(z))`` (the
    unified view's generator objective ``E log q^r_phi(y | x)``)."""

    name: ClassVar[str] = "nsgan"
    default_loss: ClassVar[str] = "nonsaturating"
