"""Wasserstein GAN with gradient penalty (Gulrajani et al. 2017).

Not part of the lecture, but expected by users.  The critic ``f_phi`` is the
discriminator guide's logit (its site ``"y"``), read as an unbounded score rather than
a probability.  The critic maximises the Kantorovich-Rubinstein estimate

    W ~= E_data f(x) - E_z f(G(z))

minus ``lambda * E_xhat (||grad_xhat f(xhat)||_2 - 1)^2`` on random interpolates
``xhat = eps x + (1 - eps) G(z)`` (the soft 1-Lipschitz constraint); the generator
maximises ``E_z f(G(z))``.  The same routing as :class:`~ppl_dgm.estimators.gan.GAN`:
the critic's terms see ``G(z)`` detached, the generator's term sees the critic's
parameters detached.  The penalty differentiates ``f`` with ``create_graph=True``
inside the surrogate (no host synchronisation).
"""

from __future__ import annotations

from typing import ClassVar

import torch

from ..traces import data_argument
from ._adversarial import (
    TwoPlayers,
    check_n_critic,
    discriminator_logits,
    generate,
)
from .base import Estimator, LossParts

__all__ = ["WGANGP", "gradient_penalty", "wasserstein_estimate"]


def wasserstein_estimate(critic_real: torch.Tensor, critic_fake: torch.Tensor) -> torch.Tensor:
    """``sum f(x) - sum f(G(z))`` (n real, n generated): n times the critic's estimate
    of the Wasserstein-1 distance."""
    return critic_real.sum() - critic_fake.sum()


def gradient_penalty(critic, x_real: torch.Tensor, x_fake: torch.Tensor) -> torch.Tensor:
    """``sum_i (||grad f(xhat_i)||_2 - 1)^2`` on interpolates ``xhat_i = eps_i x_i +
    (1 - eps_i) x~_i``, ``eps_i ~ U(0, 1)``; differentiable in the critic's parameters.

    ``critic`` maps ``(n, ...)`` data to ``(n,)`` scores; ``x_fake`` should be detached.
    """
    eps = torch.rand((x_real.shape[0],) + (1,) * (x_real.dim() - 1), device=x_real.device,
                     dtype=x_real.dtype)
    xhat = (eps * x_real + (1 - eps) * x_fake).requires_grad_(True)
    scores = critic(xhat)
    (grad,) = torch.autograd.grad(scores.sum(), xhat, create_graph=True)
    norm = grad.reshape(grad.shape[0], -1).norm(dim=1)
    return ((norm - 1.0) ** 2).sum()


class WGANGP(TwoPlayers, Estimator):
    """WGAN-GP: critic ``f`` (the discriminator guide's logit) against an implicit
    generator.

    :param penalty: ``lambda``, the gradient-penalty weight (10 in the paper).
    :param n_critic: critic steps per generator step (5 in the paper); ``None`` updates
        both on every step.

    ``metrics["objective"]`` is ``sum f(x) - sum f(G(z))`` over the minibatch (n real and
    n generated points): n times the critic's Wasserstein-1 estimate, without the
    penalty.  Also reported: ``penalty`` (the unweighted sum) and ``loss_g``.

    Example::

        fit(Generator(x_dim=64), Discriminator(x_dim=64), WGANGP(), data, steps=5000)
    """

    name: ClassVar[str] = "wgan-gp"

    def __init__(self, *, penalty: float = 10.0, n_critic: int | None = 5,
                 **options):
        super().__init__(**options)
        if not penalty >= 0:
            raise ValueError(f"penalty must be >= 0, got {penalty!r}")
        self.penalty = float(penalty)
        self.n_critic = check_n_critic(n_critic)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        n = x.shape[0]
        fake = generate(model, n)
        scores = discriminator_logits(guide, torch.cat([x, fake.detach()]))
        critic_real, critic_fake = scores[:n], scores[n:]
        w = wasserstein_estimate(critic_real, critic_fake)
        gp = gradient_penalty(lambda z: discriminator_logits(guide, z), x, fake.detach())
        loss_critic = -w + self.penalty * gp
        loss_g = -discriminator_logits(guide, fake, frozen=True).sum()
        metrics = {"objective": w.detach(), "penalty": gp.detach(),
                   "loss_critic": loss_critic.detach(), "loss_g": loss_g.detach()}
        return LossParts({"critic": loss_critic, "generator": loss_g}, metrics)
