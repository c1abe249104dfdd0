"""Dreaming: run a model unconditioned and score a guide on what it generates (a kit).

The sleep phase of wake-sleep (Hinton, Dayan, Frey and Neal 1995) trains the guide
on "dreams": latents and data drawn together from the model, ``(h, x) ~ p(h) p(x|h)``.
It maximises ``E_p(h, x)[log q(h | x)]``, the expected log density of the dreamed
latents under the guide run on the dreamed data.

Nothing here needs to know the model or the guide.  A dream is one run of
``model(None, batch_size=n)`` under :func:`pyro.poutine.trace`: its unobserved sample
sites are the latents ``h`` and its site ``"x"`` is the data.  The guide is then
run as ``guide(x)`` with every latent site conditioned on its dreamed value
(:func:`pyro.poutine.condition`), so ``log q(h | x)`` is the sum of the guide's site
log densities at those values.  A Helmholtz recognition network that computes
``q(h2 | h1)`` from its own sample of ``h1`` therefore sees the dreamed ``h1``.

Dreams are drawn without gradient: they are constants for the guide update, so the
sleep term never reaches the model's parameters.  :func:`sleep_term` is the sleep phase
of wake-sleep and reweighted wake-sleep; :func:`detached_sample` the guide-value hook
of their wake phases.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from pyro import poutine
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from ..errors import IncompatibleEstimatorError
from ..programs import generates_with_batch_size, program_name
from ..traces import (
    DATA_PLATE,
    OBS_SITE,
    data_frame,
    data_plate_name,
    is_factor,
    latent_sites,
    observed_sites,
    reduce_site,
    site_log_prob,
    trace_program,
)

__all__ = ["Dream", "DreamScore", "check_detachable", "check_dream_batch_size",
           "detached_sample", "dream", "score_dream", "sleep_objective", "sleep_term"]


@dataclass(frozen=True)
class Dream:
    """One unconditioned run of a model: dreamed data ``x`` and latents, detached.

    ``guide_args``/``guide_kwargs`` call the guide on the dreamed data (``(x,)`` for the
    zoo's programs); ``plate`` is the data plate's name."""

    x: torch.Tensor
    latents: Mapping[str, torch.Tensor]
    trace: Trace
    batch_size: int
    guide_args: tuple = ()
    guide_kwargs: Mapping = field(default_factory=dict)
    plate: str | None = DATA_PLATE

    def __post_init__(self):
        if not self.guide_args and not self.guide_kwargs:
            object.__setattr__(self, "guide_args", (self.x,))


@dataclass(frozen=True)
class DreamScore:
    """``log q(h | x)`` of a guide on a dream.

    ``log_q`` has shape ``(P,)``: one value per dreamed point when every guide latent
    lives in the ``"data"`` plate (``per_point``), else ``P == 1`` (the whole dream is
    one sample, as with a global latent).  ``terms`` holds the same per site.
    """

    log_q: torch.Tensor
    terms: Mapping[str, torch.Tensor]
    per_point: bool
    guide_trace: Trace


_name = program_name


def _must_accept(dream_: Dream | None, latents) -> str:
    shape = tuple(dream_.x.shape) if dream_ is not None else "(n, ...)"
    return (f"The sleep phase calls guide(x) on data dreamed by the model (x of shape "
            f"{shape}), with the guide's sites {sorted(latents)} fixed to the dreamed latents "
            f"by poutine.condition. So the guide must accept any batch x that the model "
            f"generates, of any batch size (not only training points), as its first "
            f"argument with no other required argument, and must sample each of the "
            f"model's latent sites under the same name inside pyro.plate('data', n), with "
            f"the shape the model gives it. Change the guide so, or train with an estimator "
            f"that never dreams (e.g. 'rws' with guide_update='wake').")


def dream(model: Callable, batch_size: int, *, obs_site: str = OBS_SITE,
          call: tuple[tuple, dict] | None = None, wake=None) -> Dream:
    """Dream ``batch_size`` points from ``model`` without gradient: latents and data.

    A model with a ``batch_size`` parameter is run as ``model(None,
    batch_size=batch_size)`` and its site ``obs_site`` is the data.  Any other program is
    run with the step's arguments ``call`` under :func:`pyro.poutine.uncondition`, so
    that its observed sites are sampled; ``wake`` (the step's model trace) says which
    sites are observed and which arguments carry their data, so that the guide can be
    given the dreamed data in their place."""
    if call is not None and wake is not None and not generates_with_batch_size(model):
        return _dream_unconditioned(model, batch_size, call, wake)
    try:
        with torch.no_grad():
            tr = trace_program(model, None, batch_size=batch_size)
    except Exception as e:  # a user's model: say what failed, keep the cause
        raise IncompatibleEstimatorError(
            f"dreaming failed: running model {_name(model)} as model(None, "
            f"batch_size={batch_size}) raised {type(e).__name__}: {e}. Wake-sleep dreams "
            f"from the model, so the model must generate data when called without x") from e
    site = tr.nodes.get(obs_site)
    if site is None or site["type"] != "sample":
        raise IncompatibleEstimatorError(
            f"dreaming failed: model {_name(model)} run as model(None, batch_size="
            f"{batch_size}) has no sample site {obs_site!r}; the data must be the site "
            f"{obs_site!r} inside pyro.plate('data', n), sampled when x is None")
    if site["is_observed"]:
        raise IncompatibleEstimatorError(
            f"dreaming failed: model {_name(model)} observes site {obs_site!r} even when "
            f"called as model(None, batch_size={batch_size}); pass obs=x (which is None "
            f"when dreaming) so the model generates it")
    latents = {name: tr.nodes[name]["value"] for name in latent_sites(tr) if name != obs_site}
    return Dream(site["value"], latents, tr, int(batch_size))


def _dream_unconditioned(model, batch_size: int, call, wake) -> Dream:
    args, kwargs = call
    observed = [n for n in observed_sites(wake) if not is_factor(wake.nodes[n])]
    if not observed:
        factors = [n for n in observed_sites(wake) if is_factor(wake.nodes[n])]
        raise IncompatibleEstimatorError(
            f"dreaming failed: model {_name(model)} observes no data (its only observed "
            f"sites are pyro.factor sites {factors}), so there is nothing to dream; train "
            f"it with an estimator that does not dream")
    slots = {}
    for name in observed:
        slot = _argument_slot(wake.nodes[name]["value"], args, kwargs)
        if slot is None:
            raise IncompatibleEstimatorError(
                f"dreaming failed: the sleep phase gives the guide dreamed data in place of "
                f"the data arguments, but model {_name(model)}'s observed site {name!r} "
                f"takes its value from no argument of the call (pass the argument itself as "
                f"obs=...), or train with an estimator that never dreams (e.g. 'rws' with "
                f"guide_update='wake')")
        slots[name] = slot
    plate = data_plate_name(wake)
    try:
        with torch.no_grad():
            tr = trace_program(poutine.uncondition(model), *args, **kwargs)
    except Exception as e:
        raise IncompatibleEstimatorError(
            f"dreaming failed: running model {_name(model)} unconditioned (pyro.poutine."
            f"uncondition) raised {type(e).__name__}: {e}") from e
    dreamed = {name: tr.nodes[name]["value"] for name in observed}
    batch = next(iter(dreamed.values()))
    frame = data_frame(tr.nodes[observed[0]], plate)
    n = int(batch.shape[batch.dim() - tr.nodes[observed[0]]["fn"].event_dim + frame.dim]) \
        if frame is not None else 1
    if batch_size != n:
        raise IncompatibleEstimatorError(
            f"dream_batch_size={batch_size} needs a model that generates any number of "
            f"points, model(None, batch_size=n); model {_name(model)} is run with the "
            f"step's arguments and dreams as many points as the batch ({n}). Leave "
            f"dream_batch_size=None")
    new_args, new_kwargs = list(args), dict(kwargs)
    for name, slot in slots.items():
        if isinstance(slot, int):
            new_args[slot] = dreamed[name]
        else:
            new_kwargs[slot] = dreamed[name]
    factors = {n for n in observed_sites(wake) if is_factor(wake.nodes[n])}
    latents = {name: tr.nodes[name]["value"] for name in latent_sites(tr)
               if name not in dreamed and name not in factors}
    return Dream(batch, latents, tr, n, tuple(new_args), new_kwargs, plate)


def _argument_slot(value, args, kwargs):
    for i, a in enumerate(args):
        if a is value:
            return i
    for k, a in kwargs.items():
        if a is value:
            return k
    return None


def score_dream(guide: Callable, dream_: Dream, *, nesting: int) -> DreamScore:
    """``log q(h | x)`` of ``guide`` at a dream's latents ``h`` given its data ``x``.

    ``nesting`` is the number of plate dimensions the guide uses (as for
    :func:`~ppl_dgm.estimators.traces.run_traces`); no particle plate is added: the
    dreamed points are the samples.  Gradients reach only the guide's parameters.
    """
    conditioned = poutine.condition(guide, data=dict(dream_.latents))
    try:
        tr = trace_program(conditioned, *dream_.guide_args, **dream_.guide_kwargs)
    except Exception as e:
        raise IncompatibleEstimatorError(
            f"guide {_name(guide)} cannot be run on dreamed data: calling it raised "
            f"{type(e).__name__}: {e}. {_must_accept(dream_, dream_.latents)}") from e

    sampled = [name for name, site in tr.nodes.items()
               if site["type"] == "sample" and not site_is_subsample(site)]
    missing = [n for n in dream_.latents if n not in sampled]
    extra = [n for n in latent_sites(tr) if n not in dream_.latents]
    if missing:
        raise IncompatibleEstimatorError(
            f"guide {_name(guide)} does not sample the model's latent site(s) {missing} "
            f"when run on dreamed data (it samples {sampled}). "
            f"{_must_accept(dream_, dream_.latents)}")
    if extra:
        raise IncompatibleEstimatorError(
            f"guide {_name(guide)} samples site(s) {extra} that the model's dream does not "
            f"contain (model latents: {sorted(dream_.latents)}); log q(h | x) of a dream "
            f"cannot be scored with extra (auxiliary) guide variables. "
            f"{_must_accept(dream_, dream_.latents)}")

    terms: dict[str, torch.Tensor] = {}
    per_point = True
    for name in dream_.latents:
        site = tr.nodes[name]
        fn, value = site["fn"], site["value"]
        expected = tuple(fn.batch_shape) + tuple(fn.event_shape)
        if tuple(value.shape) != expected:
            raise IncompatibleEstimatorError(
                f"guide {_name(guide)}'s site {name!r} has a distribution of shape "
                f"{expected} on dreamed data, but the model dreamed a value of shape "
                f"{tuple(value.shape)}. {_must_accept(dream_, dream_.latents)}")
        lp = site_log_prob(site)
        scale = site["scale"]
        if not (isinstance(scale, float) and scale == 1.0):
            lp = lp * scale
        if data_frame(site, dream_.plate) is None:
            per_point = False
        terms[name] = reduce_site(lp, site, nesting, dream_.plate)[0]
    if not per_point:
        terms = {k: v.sum(-1, keepdim=True) for k, v in terms.items()}
    total = None
    for v in terms.values():
        total = v if total is None else total + v
    if total is None:  # a model without latents: nothing to learn in the sleep phase
        total = dream_.x.new_zeros(1)
    return DreamScore(total, terms, per_point, tr)


# --------------------------------------------------------------------------- sleep phase
def sleep_objective(dream_log_q: torch.Tensor, num_points: float | torch.Tensor,
                    per_point: bool = True) -> torch.Tensor:
    """Sleep phase for the guide: ``E_p(h, x)[log q(h | x)]`` from dreams.

    ``dream_log_q`` holds ``log q(h_j | x_j)`` of each dreamed point ``(P,)``.  Its mean
    is multiplied by ``num_points``, the number of data points the wake batch stands
    for, so the sleep term weighs as much as a wake term over the same batch whatever
    the dream batch size.  Without per-point values (a global latent) the whole dream
    is one sample and its log q is used as it is.
    """
    if not per_point:
        return dream_log_q.sum()
    return num_points * dream_log_q.mean()


def sleep_term(model, guide, batch_size: int, *, nesting: int,
               num_points: float | torch.Tensor, call=None,
               wake=None) -> tuple[torch.Tensor, DreamScore]:
    """Dream ``batch_size`` points from ``model`` and return the sleep objective (see
    :func:`sleep_objective`) with the guide's score on the dream (``call`` and ``wake``
    as for :func:`dream`)."""
    score = score_dream(guide, dream(model, batch_size, call=call, wake=wake), nesting=nesting)
    return sleep_objective(score.log_q, num_points, score.per_point), score


def detached_sample(name: str, site: dict, particle: int | None = None) -> torch.Tensor:
    """Guide-value hook of the wake phases: guide samples are data for the model update,
    so no gradient flows through them (also not the pathwise one a reparameterised
    guide would otherwise give)."""
    return site["value"].detach()


def check_detachable(tr, who: str) -> None:
    """The wake phase detaches the guide's samples; a partially reparameterised site
    (a rejection sampler with a score-function correction in its ``score_parts``) keeps
    state tied to its sample and cannot be scored at a detached copy."""
    for name in tr.scores:
        fn = tr.guide_trace.nodes[name]["fn"]
        if getattr(fn, "has_rsample", False):
            raise IncompatibleEstimatorError(
                f"estimator {who!r} scores the guide at detached samples, but the guide's "
                f"site {name!r} ({type(fn).__name__}) is partially reparameterised (its "
                f"score_parts carry a score-function correction tied to the sample). Use "
                f"'elbo', 'iwae', 'reinforce' or 'nvil' for this guide")


def check_dream_batch_size(n):
    """``dream_batch_size``: a positive integer, or None for the data batch size."""
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
        raise ValueError(f"dream_batch_size must be a positive integer (dreamed points per "
                         f"step) or None for the data batch size, got {n!r}")
    return n
