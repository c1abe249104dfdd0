"""The engine: run a model and a guide together and reduce their traces to log-weights.

Every estimator, every evaluation and every diagnostic is a function of the
per-particle, per-data-point log densities of a model and a guide.  This module
produces them once, with the particle and data dimensions kept apart:

* a program is any Pyro program (a function, an ``nn.Module`` registered with
  ``pyro.module``, a ``PyroModule``) called with the arguments of the step,
  ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)``;
* particles are vectorised with an outermost ``pyro.plate`` (Pyro's own name,
  ``num_particles_vectorized``), so an encoder runs once per data point and its
  distribution is broadcast over the particles.  A program that cannot run under that
  plate (a ``torch.cat`` of the data with a sample, say) is run once per particle
  instead, with the same random numbers where torch draws them in order, and the user
  is told once why and how to make it vectorisable (see :mod:`ppl_dgm.particles`);
* the *data plate* is found from the model's trace: the vectorised plate shared by the
  observed sites (the one named ``"data"`` where there is one, else the outermost);
* every site's log density is reduced to shape ``(K, P)``: ``K`` particles by ``P``
  points.  When all latent sites live inside the data plate, ``P`` is the batch size
  and every point has its own importance weights (as the IWAE, VIMCO and RWS papers
  define them).  When a latent lives outside it (a global latent) the weights cannot
  be split by data point and ``P == 1``;
* the data plate's subsample scale is kept apart as ``scale`` so that estimators apply
  it *outside* every logsumexp (Pyro's RenyiELBO applies it inside, which is wrong
  under subsampling); sites scaled differently (``poutine.scale``) keep their ratio;
* masks (``poutine.mask``, ``obs_mask``) and ``pyro.factor`` sites enter as Pyro's own
  ELBOs treat them; the score-function parts of each guide site (``score_parts``, so
  partially reparameterised distributions keep their correction) are kept for the
  estimators that need them.

Nothing here synchronises with the host when Pyro's validation is off, so a training
step built on it can be captured in a CUDA graph.  With validation on, Pyro's own checks
of site shapes and of model/guide site agreement run on every call.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.distributions.util import is_identically_zero
from pyro.poutine.trace_messenger import TraceMessenger
from pyro.poutine.trace_struct import Trace
from pyro.util import check_model_guide_match, check_site_shape

from .sites import (
    DATA_PLATE,
    OBS_SITE,
    PARTICLE_PLATE,
    data_frame,
    data_plate_name,
    detach_distribution,
    is_factor,
    latent_sites,
    observed_sites,
    reduce_site,
    site_log_prob,
    site_mask,
    sum_to_frames,
)

__all__ = [
    "DATA_PLATE",
    "OBS_SITE",
    "PARTICLE_PLATE",
    "Traces",
    "as_call",
    "data_argument",
    "data_frame",
    "data_plate_name",
    "detach_distribution",
    "guess_plate_nesting",
    "is_factor",
    "latent_sites",
    "observed_sites",
    "particle_plate",
    "reduce_site",
    "rescale",
    "run_traces",
    "site_log_prob",
    "site_mask",
    "sum_to_frames",
    "trace_program",
]


def as_call(args, kwargs=None) -> tuple[tuple, dict]:
    """Normalise a program call: ``(args, kwargs)``; a tensor or None alone is the
    one positional argument (the zoo's ``model(x)``)."""
    if args is None or isinstance(args, torch.Tensor):
        args = (args,)
    return tuple(args), dict(kwargs or {})


def data_argument(args, kwargs=None) -> torch.Tensor | None:
    """The data batch of a call in the zoo's convention: the first positional argument,
    else the keyword ``x``."""
    args, kwargs = as_call(args, kwargs)
    if args:
        return args[0]
    return kwargs.get(OBS_SITE)


def guess_plate_nesting(model: Callable, guide: Callable, args=(), kwargs=None) -> int:
    """Run model and guide once and return the deepest plate nesting they use."""
    args, kwargs = as_call(args, kwargs)
    guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*args, **kwargs)
    depth = 0
    for tr in (guide_tr, model_tr):
        for site in tr.nodes.values():
            if site["type"] == "sample":
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        depth = max(depth, -frame.dim)
    return depth


def trace_program(fn, *args, **kwargs) -> Trace:
    """Run ``fn(*args, **kwargs)`` and return its trace.

    Like ``poutine.trace(fn).get_trace(...)`` without the ``_INPUT``/``_RETURN`` nodes
    and the final copy of the trace, which the training step needs neither of."""
    msngr = TraceMessenger()
    with msngr:
        fn(*args, **kwargs)
    return msngr.trace


# --------------------------------------------------------------------------- traces
@dataclass
class Traces:
    """Model and guide traces of one run, reduced to log densities.

    ``log_p`` and ``log_q`` have shape ``(K, P)``; ``model_terms``/``guide_terms``
    hold the same reduction per site.  The per-point objective is computed from these
    and multiplied by ``scale`` (the data plate's subsample scale) after any
    logsumexp over particles.

    ``model_full``/``guide_full`` hold each site's log density at its own batch shape
    (particle dimension included, mask and relative scale applied), for learning
    signals restricted to plate slices; ``scores`` the score-function term of each
    guide site that has one (masked, not scaled) and ``entropies`` its ``(K, P)``
    entropy term (see :meth:`pyro.distributions.TorchDistributionMixin.score_parts`).
    ``runs`` holds ``(model_trace, guide_trace)`` per particle when the particles
    were run one by one (``sequential``), else the one vectorised pair.
    """

    model_trace: Trace
    guide_trace: Trace
    model_terms: dict[str, torch.Tensor]
    guide_terms: dict[str, torch.Tensor]
    latents: tuple[str, ...]
    observed: tuple[str, ...]
    scale: float | torch.Tensor
    nesting: int
    num_particles: int
    per_point: bool
    data_plate: str | None = None
    sequential: bool = False
    runs: list[tuple[Trace, Trace]] = field(default_factory=list, repr=False)
    model_full: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    guide_full: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    scores: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    entropies: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _log_p: torch.Tensor | None = field(default=None, repr=False)
    _log_q: torch.Tensor | None = field(default=None, repr=False)

    @property
    def guide_latents(self) -> tuple[str, ...]:
        return tuple(self.guide_terms)

    @property
    def log_p(self) -> torch.Tensor:
        if self._log_p is None:
            self._log_p = _total(self.model_terms.values(), self._zeros)
        return self._log_p

    @property
    def log_q(self) -> torch.Tensor:
        if self._log_q is None:
            self._log_q = _total(self.guide_terms.values(), self._zeros)
        return self._log_q

    @property
    def log_w(self) -> torch.Tensor:
        """Log importance weights ``log p(x, h_k) - log q(h_k | x)``, shape ``(K, P)``."""
        return self.log_p - self.log_q

    def _zeros(self) -> torch.Tensor:
        like = next(iter([*self.model_terms.values(), *self.guide_terms.values()]), None)
        if like is not None:
            return torch.zeros_like(like)
        return torch.zeros(self.num_particles, 1)

    @property
    def batch_size(self) -> int | None:
        """The number of data points in this call (the data plate's batch), or None."""
        for name in self.observed:
            site = self.model_trace.nodes[name]
            frame = data_frame(site, self.data_plate)
            if frame is not None:
                return _plate_batch(site, frame)
        return None

    def reduce(self, tensor: torch.Tensor, site: dict) -> torch.Tensor:
        """Reduce a tensor shaped like ``site``'s batch to this run's ``(K, P)`` layout."""
        t = reduce_site(tensor, site, self.nesting, self.data_plate)
        if not self.per_point:
            t = t.sum(-1, keepdim=True)
        return t

    def site_values(self, name: str, *, guide: bool = True) -> torch.Tensor:
        """A site's values with the particle dimension (stacked when run one by one)."""
        idx = 1 if guide else 0
        if not self.sequential:
            return self.runs[0][idx].nodes[name]["value"]
        values = []
        for run in self.runs:
            site = run[idx].nodes[name]
            v = site["value"]
            while v.dim() < self.nesting + site["fn"].event_dim:
                v = v.unsqueeze(0)
            values.append(v)
        return torch.stack(values, 0)


def _plate_batch(site: dict, frame) -> int:
    lp_dims = site["value"].dim() - site["fn"].event_dim
    if -frame.dim <= lp_dims:
        return int(site["value"].shape[lp_dims + frame.dim])
    return int(frame.size)


def _total(terms, zeros: Callable[[], torch.Tensor]) -> torch.Tensor:
    out = None
    for t in terms:
        out = t if out is None else out + t
    return zeros() if out is None else out


def rescale(lp: torch.Tensor, site: dict, scale, per_point: bool) -> torch.Tensor:
    """A site's log density with its scale as the ``(K, P)`` terms carry it.

    Per-point weights: the common data scale is divided out (estimators apply it after
    any logsumexp).  Without per-point weights the whole batch is one point and each
    site keeps its own scale, as in Pyro's Trace_ELBO."""
    s = site["scale"]
    if per_point:
        if isinstance(s, float) and isinstance(scale, float):
            return lp if s == scale else lp * (s / scale)
        return lp * (s / scale)
    if isinstance(s, float) and s == 1.0:
        return lp
    return lp * s


def particle_plate(num_particles: int, nesting: int):
    """A wrapper running a program inside the particle plate (outermost, at dim
    ``-(nesting + 1)``)."""
    def wrap(fn):
        def wrapped(*args, **kwargs):
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(nesting + 1)):
                return fn(*args, **kwargs)
        return wrapped
    return wrap


GuideValueHook = Callable[[str, dict, "int | None"], "torch.Tensor | None"]


@dataclass
class _Run:
    model_trace: Trace
    guide_trace: Trace
    values: dict[str, torch.Tensor]


def _run_once(model, guide, args, kwargs, hook: GuideValueHook | None,
              particle: int | None) -> _Run:
    guide_tr = trace_program(guide, *args, **kwargs)
    replay_tr = guide_tr
    values: dict[str, torch.Tensor] = {}
    if hook is not None:
        replay_tr = guide_tr.copy()
        for name in latent_sites(guide_tr):
            site = guide_tr.nodes[name]
            new_value = hook(name, site, particle)
            if new_value is not None:
                values[name] = new_value
                replay_tr.nodes[name] = dict(site, value=new_value)
    model_tr = trace_program(poutine.replay(model, trace=replay_tr), *args, **kwargs)
    return _Run(model_tr, guide_tr, values)


def run_traces(model: Callable, guide: Callable, args=(), kwargs: Mapping | None = None, *,
               num_particles: int = 1, nesting: int, vectorize: bool = True,
               detach_guide_params: bool = False,
               guide_value_hook: GuideValueHook | None = None,
               model_kwargs: Mapping | None = None) -> Traces:
    """Run the guide, then the model replayed on the guide's samples, and reduce.

    ``args``/``kwargs`` are the program's arguments (a tensor alone is the one
    positional argument).  ``num_particles`` particles are drawn in one vectorised run
    when ``K > 1`` and ``vectorize``, else one run per particle (the weights are the
    same; see :mod:`ppl_dgm.particles` for choosing).  ``nesting`` is the number of
    plate dimensions the programs use (the particle plate goes left of them).
    ``detach_guide_params`` evaluates log q with the guide's distribution parameters
    detached (STL / DReG).  ``guide_value_hook(name, site, particle)`` may return a
    replacement for a guide sample (an identity with a gradient hook, for DReG; a
    detached value, for wake-sleep); the model and log q then see the replacement.
    ``particle`` is None in a vectorised run, else the particle's index.
    """
    args, kwargs = as_call(args, {**dict(kwargs or {}), **dict(model_kwargs or {})})
    k = int(num_particles)
    if k > 1 and vectorize:
        plate = particle_plate(k, nesting)
        runs = [_run_once(plate(model), plate(guide), args, kwargs, guide_value_hook, None)]
    else:
        runs = [_run_once(model, guide, args, kwargs, guide_value_hook,
                          i if k > 1 else None) for i in range(k)]
    return _reduce_runs(runs, nesting=nesting, num_particles=k,
                        sequential=k > 1 and not vectorize, detach=detach_guide_params)


def _reduce_runs(runs: list[_Run], *, nesting: int, num_particles: int, sequential: bool,
                 detach: bool) -> Traces:
    first = runs[0]
    model_tr, guide_tr = first.model_trace, first.guide_trace
    plate = data_plate_name(model_tr)
    latents = tuple(latent_sites(model_tr))
    observed = tuple(observed_sites(model_tr))
    guide_latents = latent_sites(guide_tr)
    per_point = plate is not None and all(
        data_frame(model_tr.nodes[n], plate) is not None for n in latents) and all(
        data_frame(guide_tr.nodes[n], plate) is not None for n in guide_latents)
    scale = 1.0
    if per_point:
        obs = next((model_tr.nodes[n] for n in observed
                    if data_frame(model_tr.nodes[n], plate) is not None), None)
        scale = obs["scale"] if obs is not None else 1.0
        if isinstance(scale, torch.Tensor) and scale.numel() != 1:
            # per-point weights (poutine.scale with a tensor) are part of each point's
            # log density, not a common factor: every site keeps its own scale
            scale = 1.0
    validate = poutine.util.is_validation_enabled()
    tr = Traces(model_tr, guide_tr, {}, {}, latents, observed, scale, nesting,
                num_particles, per_point, plate, sequential, [(r.model_trace, r.guide_trace)
                                                              for r in runs])
    # Pyro's checks with its default max_plate_nesting=inf: every batch dimension of a
    # site must be one of its plates (the particle plate included)
    per_run = [_site_terms(tr, r, detach, validate, float("inf")) for r in runs]
    for table in _REDUCED + _FULL:
        parts = [getattr(t, table) for t in per_run]
        if not sequential:
            merged = parts[0]
        elif table in _REDUCED:
            merged = {n: torch.cat([p[n] for p in parts], 0) for n in parts[0]}
        else:
            merged = {n: _stack_particles([p[n] for p in parts], nesting) for n in parts[0]}
        setattr(tr, table, merged)
    return tr


_REDUCED = ("model_terms", "guide_terms", "entropies")   # (K, P): concatenated
_FULL = ("model_full", "guide_full", "scores")            # batch-shaped: stacked


@dataclass
class _Terms:
    model_terms: dict = field(default_factory=dict)
    guide_terms: dict = field(default_factory=dict)
    entropies: dict = field(default_factory=dict)
    model_full: dict = field(default_factory=dict)
    guide_full: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)


def _stack_particles(tensors: list[torch.Tensor], nesting: int) -> torch.Tensor:
    """Per-particle batch-shaped tensors -> one tensor with the particle dimension at
    ``-(nesting + 1)``, as a vectorised run lays it out."""
    padded = []
    for t in tensors:
        while t.dim() < nesting:
            t = t.unsqueeze(0)
        padded.append(t)
    return torch.stack(padded, 0)


def _site_terms(tr: Traces, run: _Run, detach: bool, validate: bool,
                max_nesting: int) -> _Terms:
    model_tr, guide_tr = run.model_trace, run.guide_trace
    if validate:
        check_model_guide_match(model_tr, guide_tr, max_nesting)
    out = _Terms()
    for name in (*latent_sites(model_tr), *observed_sites(model_tr)):
        site = model_tr.nodes[name]
        lp = _log_density(site_log_prob, site, "model")
        if validate:
            site["log_prob"] = lp
            check_site_shape(site, max_nesting)
        out.model_full[name] = full = rescale(lp, site, tr.scale, tr.per_point)
        out.model_terms[name] = tr.reduce(full, site)
    for name in latent_sites(guide_tr):
        site = guide_tr.nodes[name]
        value = run.values.get(name, site["value"])
        if detach:
            lp = _log_density(site_log_prob, site, "guide", value,
                              detach_distribution(site["fn"]))
        else:
            parts = _log_density(_score_parts, site, "guide", value)
            lp = parts.log_prob
            if not is_identically_zero(parts.score_function):
                out.scores[name] = parts.score_function
                entropy = rescale(_as_tensor(parts.entropy_term, lp), site, tr.scale,
                                   tr.per_point)
                out.entropies[name] = tr.reduce(entropy, site)
        if validate:
            site["log_prob"] = lp
            check_site_shape(site, max_nesting)
        out.guide_full[name] = full = rescale(lp, site, tr.scale, tr.per_point)
        out.guide_terms[name] = tr.reduce(full, site)
    return out


def _score_parts(site: dict, value: torch.Tensor):
    return site["fn"].score_parts(value).scale_and_mask(1.0, site["mask"])


def _log_density(fn, site: dict, label: str, *args):
    """``fn(site, *args)``, an error naming the site and its shapes (as Pyro does)."""
    try:
        return fn(site, *args)
    except (ValueError, RuntimeError, IndexError) as e:
        value = site["value"]
        raise ValueError(f"Error while computing log_prob at the {label}'s site "
                         f"{site['name']!r}: {e}; its distribution has batch shape "
                         f"{tuple(site['fn'].batch_shape)} and event shape "
                         f"{tuple(site['fn'].event_shape)}, its value shape "
                         f"{tuple(value.shape) if hasattr(value, 'shape') else '()'}") from e


def _as_tensor(value, like: torch.Tensor) -> torch.Tensor:
    return value if isinstance(value, torch.Tensor) else torch.full_like(like, float(value))
