"""Adversarial plumbing shared by GAN, IWGAN, WGAN-GP, GMMN, PM and AAVAE (a kit).

In the unified view (Hu, Yang, Salakhutdinov and Xing 2017) a GAN's generator is a
model whose program generates ``x = G_theta(z)`` (the site ``"x"``) and its
discriminator is a guide, an inference model ``q_phi(y | x)`` of the real/generated
indicator (the site ``"y"``, ``D(x) = q_phi(y = 1 | x)``).  This module holds what the
adversarial estimators share and no estimator itself:

* the game's pure math from logits (:func:`discriminator_loss`, :func:`gan_value`,
  :func:`generator_loss`);
* generated data from a model's trace (:func:`generate`), discriminator logits from a
  guide's trace (:func:`discriminator_logits`), and :func:`frozen_call`, which routes a
  player's gradient through the other player's network without updating it;
* :func:`gan_game`: one minibatch of the game (real and generated logits, the
  generator's logits through a frozen discriminator), with optional instance noise;
* contract checks (:func:`check_generator`, :func:`check_discriminator`) that name
  what is wrong and what to use instead;
* alternating schedules (:func:`check_n_critic`, :func:`alternating_groups`): ``k``
  adversary-only steps, then one player-only step;
* :class:`TwoPlayers`, a mixin (not an estimator) with the capability flags, the
  schedule and the contract checks of a generator played against a discriminator guide.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample
from torch.func import functional_call
from torch.nn import functional as F

from ..errors import DataError, IncompatibleEstimatorError
from ..traces import data_argument

__all__ = [
    "CRITIC_GROUPS",
    "GENERATED_SITE",
    "GENERATOR_GROUPS",
    "INDICATOR_SITE",
    "LOSSES",
    "GanGame",
    "TwoPlayers",
    "alternating_groups",
    "check_discriminator",
    "check_generator",
    "check_instance_noise",
    "check_n_critic",
    "check_real_data",
    "discriminator_logits",
    "discriminator_loss",
    "frozen_call",
    "gan_game",
    "gan_value",
    "generate",
    "generator_loss",
    "sample_sites",
]

GENERATED_SITE = "x"
INDICATOR_SITE = "y"
LOSSES = ("minimax", "nonsaturating")

CRITIC_GROUPS = frozenset({"guide", "estimator"})
GENERATOR_GROUPS = frozenset({"model", "estimator"})


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


def check_real_data(x, who: str) -> None:
    """The call must carry a batch of real data (the zoo's ``model(x)``)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1:
        raise IncompatibleEstimatorError(
            f"estimator {who!r} compares generated data with real data, called as "
            f"model(x) with a data batch x; this call carries {type(x).__name__}. Pass the "
            f"data as the first argument (the data site 'x')")


def check_generator(model, x: torch.Tensor, who: str) -> None:
    """The model must generate the data site ``"x"``, differentiably, shaped like ``x``."""
    check_real_data(x, who)
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


# --------------------------------------------------------------------------- the game
@dataclass(frozen=True)
class GanGame:
    """Logits of one minibatch of the game: ``real (n,)`` and ``fake (K, n)`` from the
    discriminator on real data and on generated data detached (they train the
    discriminator), and ``generator (K, n)`` from the discriminator with its parameters
    frozen on the same generated data (it trains the generator)."""

    real: torch.Tensor
    fake: torch.Tensor
    generator: torch.Tensor

    def metrics(self, loss_d: torch.Tensor, loss_g: torch.Tensor) -> dict[str, torch.Tensor]:
        """The GAN value as the objective, both losses and the mean D on each side."""
        return {"objective": -loss_d.detach(), "loss_d": loss_d.detach(),
                "loss_g": loss_g.detach(),
                "d_real": torch.sigmoid(self.real.detach()).mean(),
                "d_fake": torch.sigmoid(self.fake.detach()).mean()}


def gan_game(model, guide, x: torch.Tensor, *, num_particles: int = 1,
             instance_noise: float = 0.0) -> GanGame:
    """Play one minibatch: ``num_particles`` generated points per real point, the same
    (noisy, when ``instance_noise > 0``) points feeding both players' terms."""
    n, k = x.shape[0], num_particles
    fake = generate(model, n * k)
    if instance_noise > 0:
        x = x + instance_noise * torch.randn_like(x)
        fake = fake + instance_noise * torch.randn_like(fake)
    logits = discriminator_logits(guide, torch.cat([x, fake.detach()]))
    logits_gen = discriminator_logits(guide, fake, frozen=True).reshape(k, n)
    return GanGame(logits[:n], logits[n:].reshape(k, n), logits_gen)


def check_instance_noise(instance_noise) -> float:
    if not instance_noise >= 0:
        raise ValueError(f"instance_noise must be >= 0, got {instance_noise!r}")
    return float(instance_noise)


# --------------------------------------------------------------------------- schedules
def check_n_critic(n_critic) -> int | None:
    """``None`` (both players step on every step) or an integer ``k >= 1``."""
    if n_critic is not None and (isinstance(n_critic, bool) or not isinstance(n_critic, int)
                                 or n_critic < 1):
        raise ValueError(f"n_critic must be None (simultaneous updates) or an integer "
                         f">= 1 (adversary steps per generator step), got {n_critic!r}")
    return n_critic


def alternating_groups(step: int, n_critic: int | None, adversary: frozenset[str],
                       player: frozenset[str]) -> frozenset[str] | None:
    """Parameter groups updated at ``step``: ``None`` (all) without a schedule, else
    ``adversary`` for ``n_critic`` steps and then ``player`` for one (as in Goodfellow
    et al.'s Algorithm 1 with ``k = 1`` and WGAN-GP with ``k = 5``).  Schedules count
    optimiser steps, so a player update happens every ``n_critic + 1`` steps."""
    if n_critic is None:
        return None
    return adversary if step % (n_critic + 1) < n_critic else player


class TwoPlayers:
    """Mixin of the estimators that play a generator (the model) against a
    discriminator (the guide): their capability flags, the alternating schedule over
    ``self.n_critic`` and the contract checks.  Put it before ``Estimator`` in the
    bases."""

    handles_discrete_latents: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = False
    needs_likelihood: ClassVar[bool] = False
    n_critic: int | None = None

    def active_groups(self, step: int) -> frozenset[str] | None:
        return alternating_groups(step, self.n_critic, CRITIC_GROUPS, GENERATOR_GROUPS)

    def check(self, model, guide, *args, **kwargs) -> None:
        x = data_argument(args, kwargs)
        check_generator(model, x, self.name)
        check_discriminator(guide, x, self.name)
