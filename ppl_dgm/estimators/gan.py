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
:meth:`AdversarialEstimator.active_groups`).

This module also holds the pieces shared by every adversarial estimator (generated
data from a model's trace, discriminator logits from a guide's trace, frozen calls,
checks), used by ``iwgan``, ``wgan_gp``, ``mmd``, ``pm`` and ``aavae``.
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.func import functional_call
from torch.nn import functional as F

from ..errors import DataError, IncompatibleEstimatorError
from .base import Estimator, LossParts

__all__ = [
    "GAN",
    "GENERATED_SITE",
    "INDICATOR_SITE",
    "NSGAN",
    "AdversarialEstimator",
    "check_discriminator",
    "check_generator",
    "discriminator_logits",
    "discriminator_loss",
    "frozen_call",
    "gan_value",
    "generate",
    "generator_loss",
]

GENERATED_SITE = "x"
INDICATOR_SITE = "y"
LOSSES = ("minimax", "nonsaturating")

_CRITIC = frozenset({"guide", "estimator"})
_GENERATOR = frozenset({"model", "estimator"})


# --------------------------------------------------------------------------- pure math
def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``-[sum_i log D(x_i) + sum_j mean_k log(1 - D(x~_kj))]`` from logits.

    ``logits_real``: ``(n,)``; ``logits_fake``: ``(K, n)`` (K generated points per real
    point, averaged).  ``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)``.
    """
    return F.softplus(-logits_real).sum() + F.softplus(logits_fake).mean(0).sum()


def gan_value(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """The GAN value ``V(D, G) = sum log D(x) + sum log(1 - D(G(z)))`` (the discriminator
    maximises it; at the equilibrium it is ``-2 n log 2``)."""
    return -discriminator_loss(logits_real, logits_fake)


def generator_loss(logits_fake: torch.Tensor, loss: str = "nonsaturating") -> torch.Tensor:
    """The generator's loss from the logits of ``D(G(z))`` (any shape, summed).

    ``"nonsaturating"``: ``-sum log D(G(z))``;  ``"minimax"``: ``sum log(1 - D(G(z)))``.
    Averaged over a leading particle dimension when there is one (shape ``(K, n)``).
    """
    if loss == "nonsaturating":
        per = F.softplus(-logits_fake)
    elif loss == "minimax":
        per = -F.softplus(logits_fake)
    else:
        raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}")
    return per.mean(0).sum() if per.dim() > 1 else per.sum()


# --------------------------------------------------------------------------- traces
def frozen_call(module: torch.nn.Module, *args, **kwargs):
    """Call ``module`` with its parameters detached: gradients reach only the inputs.

    Used to route a player's gradient through the other player's network without
    updating that network (the generator's term through ``D``, the code's term through
    the predictors)."""
    params = {name: p.detach() for name, p in module.named_parameters()}
    return functional_call(module, params, args, kwargs)


def generate(model, n: int) -> torch.Tensor:
    """``n`` generated data points: the site ``"x"`` of ``model(None, batch_size=n)``,
    differentiable with respect to the model's parameters."""
    tr = poutine.trace(model).get_trace(None, batch_size=n)
    return tr.nodes[GENERATED_SITE]["value"]


def discriminator_logits(guide, x: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
    """Logits of ``D(x) = q_phi(y = 1 | x)``: the site ``"y"`` of the guide's trace on
    ``x``.  ``frozen=True`` detaches the guide's parameters (gradients reach ``x`` only)."""
    fn = partial(frozen_call, guide) if frozen else guide
    tr = poutine.trace(fn).get_trace(x)
    return tr.nodes[INDICATOR_SITE]["fn"].logits


# --------------------------------------------------------------------------- checks
def _name(obj) -> str:
    return type(obj).__name__


def sample_sites(trace) -> list[str]:
    """Names of a trace's sample sites, plate subsample sites left out."""
    return [k for k, s in trace.nodes.items() if s["type"] == "sample"
            and not site_is_subsample(s)]


def check_generator(model, x: torch.Tensor, who: str) -> None:
    """The model must generate the data site ``"x"``, differentiably, shaped like ``x``."""
    n = min(2, x.shape[0])
    try:
        with torch.no_grad():
            tr = poutine.trace(model).get_trace(None, batch_size=n)
    except Exception as e:  # a user's model: report what failed, keep the cause
        raise IncompatibleEstimatorError(
            f"estimator {who!r} runs the model as a generator, model(None, batch_size={n}), "
            f"and model {_name(model)} failed ({type(e).__name__}: {e}); a generator must "
            f"generate data when called as model(None, batch_size=n)") from e
    site = tr.nodes.get(GENERATED_SITE)
    if site is None or site["type"] != "sample":
        sites = sample_sites(tr)
        raise IncompatibleEstimatorError(
            f"estimator {who!r} needs a model with a generated data site {GENERATED_SITE!r}: "
            f"x = G(z) recorded as pyro.deterministic({GENERATED_SITE!r}, G(z), event_dim=1) "
            f"inside pyro.plate('data', n). Model {_name(model)} has sample sites {sites} "
            f"and no {GENERATED_SITE!r}. Use an implicit generator (ppl_dgm.models.Generator, "
            f"--model generator) or name the model's generated data {GENERATED_SITE!r}")
    fn = site["fn"]
    deterministic = bool(site["infer"].get("_deterministic", False))
    if not deterministic and not getattr(fn, "has_rsample", False):
        base = getattr(fn, "base_dist", fn)
        raise IncompatibleEstimatorError(
            f"estimator {who!r} differentiates the generated data x = G(z) with respect to "
            f"the generator, but model {_name(model)} draws {GENERATED_SITE!r} from "
            f"{type(base).__name__}, which has no reparameterised sample (a likelihood model, "
            f"not an implicit generator). Use an implicit generator (--model generator), or "
            f"train this model with a likelihood estimator such as 'elbo' or 'iwae'")
    generated = tuple(site["value"].shape)
    if generated != (n, *x.shape[1:]):
        raise DataError(
            f"model {_name(model)} generates {GENERATED_SITE!r} with shape {generated} for "
            f"{n} points, but the data points have shape {tuple(x.shape[1:])}; build the "
            f"generator for this data (x_dim={x.shape[1] if x.dim() == 2 else '...'})")


def check_discriminator(guide, x: torch.Tensor, who: str) -> None:
    """The guide must be a discriminator: ``guide(x)`` draws ``"y"`` from a Bernoulli
    with one logit per data point."""
    xb = x[: min(2, x.shape[0])]
    try:
        with torch.no_grad():
            tr = poutine.trace(guide).get_trace(xb)
    except Exception as e:
        raise IncompatibleEstimatorError(
            f"estimator {who!r} needs a discriminator q(y|x) as the guide, called as "
            f"guide(x) on real and generated data; guide {_name(guide)} failed on a batch "
            f"of shape {tuple(xb.shape)} ({type(e).__name__}: {e})") from e
    site = tr.nodes.get(INDICATOR_SITE)
    if site is None or site["type"] != "sample":
        sites = sample_sites(tr)
        raise IncompatibleEstimatorError(
            f"estimator {who!r} needs a discriminator as the guide: an inference model "
            f"q(y|x) of the real/generated indicator whose program draws site "
            f"{INDICATOR_SITE!r} ~ Bernoulli(logits=f(x)) inside pyro.plate('data', n). "
            f"Guide {_name(guide)} is not a discriminator: it draws {sites}. Use "
            f"ppl_dgm.guides.Discriminator (--guide discriminator)")
    fn = site["fn"]
    if not isinstance(fn, torch.distributions.Bernoulli):
        raise IncompatibleEstimatorError(
            f"estimator {who!r}: guide {_name(guide)} draws {INDICATOR_SITE!r} from "
            f"{type(fn).__name__}; a discriminator draws the indicator from "
            f"Bernoulli(logits=f(x)) (one logit per data point, no .to_event)")
    if tuple(fn.logits.shape) != (xb.shape[0],):
        raise IncompatibleEstimatorError(
            f"estimator {who!r}: guide {_name(guide)} gives logits of shape "
            f"{tuple(fn.logits.shape)} for {xb.shape[0]} points; a discriminator gives one "
            f"logit per point, shape ({xb.shape[0]},)")


# --------------------------------------------------------------------------- estimators
class AdversarialEstimator(Estimator):
    """Base of the two-player estimators: capability flags and the alternating schedule.

    :param n_critic: ``None`` (default): both players step on every step (simultaneous
        gradient descent on the one routed surrogate).  ``k >= 1``: ``k`` steps that
        update only the adversary (guide and estimator groups) followed by one step that
        updates only the model, as in Goodfellow et al.'s Algorithm 1 (``k = 1``) and
        WGAN-GP (``k = 5``).  Schedules count optimiser steps, so a generator update
        happens every ``k + 1`` steps.
    """

    needs_likelihood: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = False
    handles_discrete_latents: ClassVar[bool] = False
    critic_groups: ClassVar[frozenset[str]] = _CRITIC
    generator_groups: ClassVar[frozenset[str]] = _GENERATOR

    def __init__(self, *, num_particles: int = 1, n_critic: int | None = None,
                 max_plate_nesting: int | None = None):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        if n_critic is not None and (isinstance(n_critic, bool) or not isinstance(n_critic, int)
                                     or n_critic < 1):
            raise ValueError(f"n_critic must be None (simultaneous updates) or an integer "
                             f">= 1 (adversary steps per generator step), got {n_critic!r}")
        self.n_critic = n_critic

    def active_groups(self, step: int) -> frozenset[str] | None:
        if self.n_critic is None:
            return None
        if step % (self.n_critic + 1) < self.n_critic:
            return self.critic_groups
        return self.generator_groups

    def check(self, model, guide, x) -> None:
        check_generator(model, x, self.name)
        check_discriminator(guide, x, self.name)


class GAN(AdversarialEstimator):
    """The GAN of Goodfellow et al. (2014): discriminator ``q_phi(y|x)`` against an
    implicit generator, in one routed surrogate.

    :param loss: ``"minimax"`` (the generator minimises ``E log(1 - D(G(z)))``, the
        original game, whose gradient vanishes when D wins) or ``"nonsaturating"``
        (maximises ``E log D(G(z))``, the unified view's ``log q^r(y|x)``).
    :param n_critic: see :class:`AdversarialEstimator`.
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
                 instance_noise: float = 0.0, max_plate_nesting: int | None = None):
        super().__init__(n_critic=n_critic, max_plate_nesting=max_plate_nesting)
        loss = self.default_loss if loss is None else loss
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r} is unknown; choose one of {LOSSES}")
        self.loss_type = loss
        self._set_noise(instance_noise)

    def _set_noise(self, instance_noise: float) -> None:
        if not instance_noise >= 0:
            raise ValueError(f"instance_noise must be >= 0, got {instance_noise!r}")
        self.instance_noise = float(instance_noise)

    def _generator_term(self, logits_fake: torch.Tensor) -> torch.Tensor:
        return generator_loss(logits_fake, self.loss_type)

    def surrogate(self, model, guide, x) -> LossParts:
        n, k = x.shape[0], self.num_particles
        fake = generate(model, n * k)
        if self.instance_noise > 0:  # the same noisy points feed both players' terms
            x = x + self.instance_noise * torch.randn_like(x)
            fake = fake + self.instance_noise * torch.randn_like(fake)
        logits = discriminator_logits(guide, torch.cat([x, fake.detach()]))
        logits_real, logits_fake = logits[:n], logits[n:].reshape(k, n)
        logits_gen = discriminator_logits(guide, fake, frozen=True).reshape(k, n)
        loss_d = discriminator_loss(logits_real, logits_fake)
        loss_g = self._generator_term(logits_gen)
        metrics = {"objective": -loss_d.detach(), "loss_d": loss_d.detach(),
                   "loss_g": loss_g.detach(),
                   "d_real": torch.sigmoid(logits_real.detach()).mean(),
                   "d_fake": torch.sigmoid(logits_fake.detach()).mean()}
        metrics.update(self._extra_metrics(logits_gen.detach()))
        return LossParts({"discriminator": loss_d, "generator": loss_g}, metrics)

    def _extra_metrics(self, logits_gen: torch.Tensor) -> dict[str, torch.Tensor]:
        return {}


class NSGAN(GAN):
    """:class:`GAN` with the non-saturating generator loss ``-E log D(G(z))`` (the
    unified view's generator objective ``E log q^r_phi(y | x)``)."""

    name: ClassVar[str] = "nsgan"
    default_loss: ClassVar[str] = "nonsaturating"
