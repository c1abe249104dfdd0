"""Adversary activated VAE (Hu, Yang, Salakhutdinov and Xing 2017, Section 4.2, Eq. 17).

Lemma 2 of the paper rewrites the VAE objective with the real/generated indicator ``y``
and a *perfect* discriminator ``q_*(y | x)`` (``y = 1`` with probability 1 on real data,
``y = 0`` on generated samples):

    L_vae = E_{p_theta0(x)} [ E_{q_eta(z|x,y) q^r_*(y|x)} log p_theta(x|z,y)
                              - KL(q_eta(z|x,y) q^r_*(y|x) || p(z|y) p(y)) ],

where ``p_theta0(x) = (p_g_theta0(x) + p_data(x)) / 2`` mixes real data and samples of
the current generator (held fixed), ``q^r(y|x) = q(1 - y | x)`` and the ``y = 1``
branch (``p(x | z, y=1) = p_data``) has no free parameters.  For a real ``x`` the
reversed perfect discriminator picks ``y = 0``, the VAE's branch: the ordinary ELBO.
For a generated ``x`` it picks ``y = 1``, a constant: generated samples are blocked.

AAVAE (Eq. 17) replaces ``q_*`` by a learned discriminator ``q_phi(y|x)``, ``D(x) =
q_phi(y = 1 | x)``.  Unfolding ``y``, the terms that depend on (theta, eta) are

    L_aavae = E_data [ D(x) ELBO(x) ] + E_{x ~ p_g_theta0} [ D(x) ELBO(x) ]  (+ const),

the factor 1/2 of the mixture omitted as in the paper.  Real examples *and* generated
samples (drawn from the VAE, held fixed as data) feed the VAE, each weighted by
``q^r_phi(y = 0 | x) = D(x)``, how real the discriminator finds it.  The discriminator
is trained as in the GAN, real against the VAE's samples (``max_phi E log q_phi(y|x)``);
its weights enter the VAE's objective detached (phi is not trained by Eq. 17).

Reduction: with the perfect discriminator (``D = 1`` on real data, ``D = 0`` on
generated samples) this is exactly the ELBO.  Our reading differs from REFERENCES.md,
which says generated samples are weighted by how real D finds them and that a
discriminator that always answers "generated" reduces AAVAE to the VAE: the paper
weights *real* examples by ``q^r_phi(y|x)`` too ("Second, real examples are also
weighted by q^r_phi(y|x)"), so ``D = 0`` everywhere would zero the whole objective.
``weight_real=False`` gives REFERENCES' reading (real examples always weight 1), under
which ``D = 0`` ("always generated") is the plain VAE.

The discriminator is an auxiliary network of the estimator (``self.aux``), because the
guide slot holds the VAE's encoder ``q_eta(z|x)``.  Give one (any module mapping
``(n, D)`` data to ``(n,)`` or ``(n, 1)`` logits, e.g. ``Discriminator(64).net``) or let
the estimator build an MLP from ``disc_hidden`` when it first sees the data width
(in :meth:`prepare`, which :func:`ppl_dgm.train.fit` calls before building the
optimiser).  A checkpoint rebuilds it from the saved weights' shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from pyro import poutine

from ..errors import IncompatibleEstimatorError
from ..nn import as_sizes, mlp
from ..programs import generates_with_batch_size, program_name
from ..traces import data_argument
from ._adversarial import alternating_groups, check_n_critic, discriminator_loss
from .base import Estimator, LossParts

__all__ = ["AAVAE", "aavae_objective"]

_DISC = "discriminator"
_ADVERSARY = frozenset({"estimator"})   # the discriminator is an auxiliary network
_VAE = frozenset({"model", "guide"})


def aavae_objective(elbo_real: torch.Tensor, elbo_fake: torch.Tensor,
                    d_real: torch.Tensor, d_fake: torch.Tensor, *,
                    weight_real: bool = True) -> torch.Tensor:
    """``sum_i D(x_i) ELBO(x_i) + sum_j D(x~_j) ELBO(x~_j)`` (Eq. 17 unfolded over y).

    ``d_*`` are the discriminator's probabilities ``q_phi(y = 1 | x)`` (used as fixed
    weights); with ``weight_real=False`` real examples weigh 1."""
    real = (d_real.detach() * elbo_real).sum() if weight_real else elbo_real.sum()
    return real + (d_fake.detach() * elbo_fake).sum()


class AAVAE(Estimator):
    """Adversary activated VAE: the ELBO on real data and on the VAE's own samples,
    each point weighted by a learned discriminator's ``D(x)``.

    :param num_particles: samples of z per point for each ELBO.
    :param discriminator: a module mapping data ``(n, D)`` to logits ``(n,)`` or
        ``(n, 1)``; built from ``disc_hidden``/``disc_activation`` when None.
    :param weight_real: weight real examples by ``D(x)`` as the paper does (True), or by
        1 (REFERENCES.md's reading).
    :param n_critic: ``None``: VAE and discriminator step together; ``k``: k
        discriminator-only steps per VAE step.

    ``metrics["objective"]`` is ``L_aavae`` (Eq. 17) summed over the minibatch (n real and
    n generated points, scaled like the ELBO); also ``elbo`` (the plain ELBO of the real
    minibatch, comparable with :class:`~ppl_dgm.estimators.ELBO`'s objective), ``d_real``,
    ``d_fake`` and ``loss_d``.

    Example::

        model = VAE(x_dim=64, z_dim=8); guide = GaussianEncoder.from_model(model)
        fit(model, guide, AAVAE(), data, steps=3000)
    """

    name: ClassVar[str] = "aavae"
    needs_reparam: ClassVar[bool] = True

    def __init__(self, *, num_particles: int = 1, discriminator: torch.nn.Module | None = None,
                 disc_hidden: Sequence[int] | int | str = (128,),
                 disc_activation: str = "leaky_relu", weight_real: bool = True,
                 n_critic: int | None = None, **options):
        super().__init__(num_particles=num_particles, **options)
        self.disc_hidden = as_sizes(disc_hidden)
        self.disc_activation = disc_activation
        mlp(1, self.disc_hidden, 1, activation=disc_activation)  # validate the options now
        self.weight_real = bool(weight_real)
        self.n_critic = check_n_critic(n_critic)
        if discriminator is not None:
            self.aux.add_module(_DISC, discriminator)

    # ------------------------------------------------------------- the discriminator
    @property
    def discriminator(self) -> torch.nn.Module | None:
        return self.aux._modules.get(_DISC)

    def build_discriminator(self, x_dim: int, device=None) -> torch.nn.Module:
        """Build the default MLP discriminator for data of width ``x_dim`` (once)."""
        if self.discriminator is None:
            net = mlp(int(x_dim), self.disc_hidden, 1, activation=self.disc_activation)
            self.aux.add_module(_DISC, net.to(device) if device is not None else net)
        return self.discriminator

    def load_state_dict(self, state) -> None:
        first = f"{_DISC}.0.weight"
        if self.discriminator is None and first in state:
            self.build_discriminator(state[first].shape[1], device=state[first].device)
        super().load_state_dict(state)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        out = self.discriminator(x.reshape(x.shape[0], -1))
        return out.reshape(x.shape[0])

    # ------------------------------------------------------------- protocol
    def active_groups(self, step: int) -> frozenset[str] | None:
        return alternating_groups(step, self.n_critic, _ADVERSARY, _VAE)

    def check(self, model, guide, *args, **kwargs) -> None:
        tr = self.traces(model, guide, args, kwargs, num_particles=self._check_particles)
        self.check_traces(tr)
        if not generates_with_batch_size(model):
            raise IncompatibleEstimatorError(
                f"estimator 'aavae' feeds the model's own samples back to the VAE, drawn as "
                f"model(None, batch_size=n) from its site 'x'; model {program_name(model)} "
                f"takes no batch_size. Use 'elbo' or 'iwae' for this model")
        if not tr.per_point:
            raise IncompatibleEstimatorError(
                f"estimator 'aavae' weights each data point's ELBO by the discriminator, so "
                f"every latent must live in the model's 'data' plate; {list(tr.latents)} "
                f"include a global latent. Use 'elbo' for this model")

    def prepare(self, model, guide, *args, **kwargs) -> None:
        x = data_argument(args, kwargs)
        self.build_discriminator(x[0].numel(), device=x.device)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        if self.discriminator is None:
            self.build_discriminator(x[0].numel(), device=x.device)
        n = x.shape[0]
        tr_real = self.traces(model, guide, x)
        with torch.no_grad():
            fake = poutine.trace(model).get_trace(None, batch_size=n).nodes["x"]["value"]
        tr_fake = self.traces(model, guide, fake)
        elbo_real = tr_real.scale * tr_real.log_w.mean(0)
        elbo_fake = tr_fake.scale * tr_fake.log_w.mean(0)
        logits = self._logits(torch.cat([x, fake]))
        logits_real, logits_fake = logits[:n], logits[n:]
        d_real, d_fake = torch.sigmoid(logits_real), torch.sigmoid(logits_fake)
        objective = aavae_objective(elbo_real, elbo_fake, d_real, d_fake,
                                    weight_real=self.weight_real)
        loss_d = discriminator_loss(logits_real, logits_fake.unsqueeze(0))
        metrics = {"objective": objective.detach(), "elbo": elbo_real.detach().sum(),
                   "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean(),
                   "loss_d": loss_d.detach()}
        return LossParts({"aavae": -objective, "discriminator": loss_d}, metrics)
