"""Running a model and guide together and reducing their traces to log-weights.

Every estimator is a function of the per-particle, per-data-point log densities of
the model and the guide.  This module produces them once, with the particle and data
dimensions kept apart:

* particles are vectorised with an outermost ``pyro.plate`` (Pyro's own name,
  ``num_particles_vectorized``), so an encoder runs once per data point and its
  distribution is broadcast over the particles;
* every site's log density is reduced to shape ``(K, P)``: ``K`` particles by ``P``
  "points".  When all latent sites live inside the model's ``"data"`` plate,
  ``P`` is the batch size and every point has its own importance weights (as the
  IWAE, VIMCO and RWS papers define them).  When a latent lives outside the data plate
  (a global latent), the weights cannot be split by data point and ``P == 1``;
* the data plate's subsample scale is kept apart as ``scale`` so that estimators apply
  it *outside* every logsumexp (Pyro's RenyiELBO applies it inside, which is wrong
  under subsampling).

Nothing here synchronises with the host, so a training step built on it can be
captured in a CUDA graph.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.poutine.trace_messenger import TraceMessenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

__all__ = [
    "DATA_PLATE",
    "OBS_SITE",
    "PARTICLE_PLATE",
    "Traces",
    "data_frame",
    "detach_distribution",
    "guess_plate_nesting",
    "latent_sites",
    "reduce_site",
    "observed_sites",
    "run_traces",
    "site_log_prob",
    "trace_program",
]

DATA_PLATE = "data"
OBS_SITE = "x"
PARTICLE_PLATE = "num_particles_vectorized"


def latent_sites(trace: Trace) -> list[str]:
    """Names of the unobserved sample sites of a trace, in execution order."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site)]


def observed_sites(trace: Trace) -> list[str]:
    """Names of the observed sample sites of a trace, in execution order."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]
            and not site_is_subsample(site)]


def data_frame(site: dict, plate: str = DATA_PLATE):
    """The frame of the data plate in a site's plate stack, or None (a global site)."""
    for frame in site["cond_indep_stack"]:
        if frame.name == plate:
            return frame
    return None


def guess_plate_nesting(model: Callable, guide: Callable, x: torch.Tensor | None) -> int:
    """Run model and guide once and return the deepest plate nesting they use."""
    guide_tr = poutine.trace(guide).get_trace(x)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
    depth = 0
    for tr in (guide_tr, model_tr):
        for site in tr.nodes.values():
            if site["type"] == "sample":
                for frame in site["cond_indep_stack"]:
                    if frame.vectorized:
                        depth = max(depth, -frame.dim)
    return depth


def reduce_site(tensor: torch.Tensor, site: dict, nesting: int) -> torch.Tensor:
    """Reduce a batch-shaped per-site tensor (a log density) to ``(K, B)`` or ``(K, 1)``.

    ``nesting`` is the number of plate dimensions right of the particle dimension.  The
    particle dimension is the leftmost of the ``nesting + 1`` batch dimensions; the data
    dimension is the data plate's.  All other dimensions are summed.
    """
    n = nesting + 1
    if tensor.dim() < n:
        tensor = tensor.reshape((1,) * (n - tensor.dim()) + tuple(tensor.shape))
    frame = data_frame(site)
    if frame is None:
        return tensor.reshape(tensor.shape[0], -1).sum(-1, keepdim=True)
    data_axis = n + frame.dim
    if data_axis != 1:
        tensor = tensor.movedim(data_axis, 1)
    return tensor.reshape(tensor.shape[0], tensor.shape[1], -1).sum(-1)


def detach_distribution(fn):
    """A shallow copy of a distribution whose tensor parameters are detached.

    Used for the "sticking the landing" and DReG gradients, which need log q(z) with
    the guide's parameters held fixed but z still reparameterised.
    """
    new = copy.copy(fn)
    for key, value in list(vars(new).items()):
        if isinstance(value, torch.Tensor):
            setattr(new, key, value.detach())
        elif isinstance(value, torch.distributions.Distribution):
            setattr(new, key, detach_distribution(value))
    return new


@dataclass
class Traces:
    """Model and guide traces of one (vectorised) run, reduced to log densities.

    ``log_p`` and ``log_q`` have shape ``(K, P)``; ``model_terms``/``guide_terms``
    hold the same reduction per site.  The per-point objective is computed from these
    and multiplied by ``scale`` (the data plate's subsample scale) after any
    logsumexp over particles.
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
    _log_p: torch.Tensor | None = field(default=None, repr=False)
    _log_q: torch.Tensor | None = field(default=None, repr=False)

    @property
    def log_p(self) -> torch.Tensor:
        if self._log_p is None:
            self._log_p = _total(self.model_terms.values())
        return self._log_p

    @property
    def log_q(self) -> torch.Tensor:
        if self._log_q is None:
            self._log_q = _total(self.guide_terms.values())
        return self._log_q

    @property
    def log_w(self) -> torch.Tensor:
        """Log importance weights ``log p(x, h_k) - log q(h_k | x)``, shape ``(K, P)``."""
        return self.log_p - self.log_q

    def reduce(self, tensor: torch.Tensor, site: dict) -> torch.Tensor:
        """Reduce a tensor shaped like ``site``'s batch to this run's ``(K, P)`` layout."""
        t = reduce_site(tensor, site, self.nesting)
        if not self.per_point:
            t = t.sum(-1, keepdim=True)
        return t


def _total(terms) -> torch.Tensor:
    terms = list(terms)
    out = terms[0]
    for t in terms[1:]:
        out = out + t
    return out


def site_log_prob(site: dict, value: torch.Tensor | None = None, fn=None) -> torch.Tensor:
    """A site's log density at its value (or ``value``) under its distribution (or
    ``fn``), with the site's mask applied and its scale not applied."""
    fn = site["fn"] if fn is None else fn
    lp = fn.log_prob(site["value"] if value is None else value)
    mask = site["mask"]
    if mask is not None and mask is not False and mask is not True:
        lp = lp.masked_fill(~mask, 0.0) if mask.dtype == torch.bool else lp * mask
    elif mask is False:
        lp = torch.zeros_like(lp)
    return lp


def run_traces(model: Callable, guide: Callable, x: torch.Tensor | None, *,
               num_particles: int = 1, nesting: int,
               detach_guide_params: bool = False,
               guide_value_hook: Callable[[str, dict], torch.Tensor] | None = None,
               model_kwargs: dict | None = None) -> Traces:
    """Run ``guide(x)`` then ``model(x)`` replayed on the guide's samples.

    ``num_particles`` particles are drawn in one vectorised run when ``K > 1``.
    ``detach_guide_params`` evaluates log q with the guide's distribution parameters
    detached (STL / DReG).  ``guide_value_hook(name, site)`` may return a replacement
    for a guide sample (an identity with a gradient hook, for DReG); the model and
    ``log q`` then see the replacement.
    """
    kwargs = model_kwargs or {}
    if num_particles > 1:
        particles = _particle_plate(num_particles, nesting)
        guide_fn, model_fn = particles(guide), particles(model)
    else:
        guide_fn, model_fn = guide, model
    guide_tr = trace_program(guide_fn, x, **kwargs)
    guide_latents = latent_sites(guide_tr)
    replay_tr = guide_tr
    values: dict[str, torch.Tensor] = {}
    if guide_value_hook is not None:
        replay_tr = guide_tr.copy()
        for name in guide_latents:
            site = guide_tr.nodes[name]
            new_value = guide_value_hook(name, site)
            if new_value is not None:
                values[name] = new_value
                replay_tr.nodes[name] = dict(site, value=new_value)
    model_tr = trace_program(poutine.replay(model_fn, trace=replay_tr), x, **kwargs)

    latents = tuple(latent_sites(model_tr))
    observed = tuple(observed_sites(model_tr))
    per_point = all(data_frame(model_tr.nodes[n]) is not None for n in latents) and all(
        data_frame(guide_tr.nodes[n]) is not None for n in guide_latents)
    obs_site = model_tr.nodes.get(OBS_SITE) or (model_tr.nodes[observed[0]] if observed else None)
    scale = obs_site["scale"] if (obs_site is not None and per_point) else 1.0

    traces = Traces(model_tr, guide_tr, {}, {}, latents, observed, scale, nesting,
                    num_particles, per_point)
    for name in (*latents, *observed):
        site = model_tr.nodes[name]
        lp = traces.reduce(site_log_prob(site), site)
        traces.model_terms[name] = _rescale(lp, site, scale, per_point)
    for name in guide_latents:
        site = guide_tr.nodes[name]
        fn = detach_distribution(site["fn"]) if detach_guide_params else None
        lp = traces.reduce(site_log_prob(site, values.get(name), fn), site)
        traces.guide_terms[name] = _rescale(lp, site, scale, per_point)
    return traces


def trace_program(fn, *args, **kwargs) -> Trace:
    """Run ``fn(*args, **kwargs)`` and return its trace.

    Like ``poutine.trace(fn).get_trace(...)`` without the ``_INPUT``/``_RETURN`` nodes
    and the final copy of the trace, which the training step needs neither of."""
    msngr = TraceMessenger()
    with msngr:
        fn(*args, **kwargs)
    return msngr.trace


def _rescale(lp: torch.Tensor, site: dict, scale, per_point: bool) -> torch.Tensor:
    # Per-point weights: divide out the common data scale (applied after logsumexp).
    # Without per-point weights the whole batch is one point and each site keeps its
    # own scale, as in Pyro's Trace_ELBO.
    s = site["scale"]
    if per_point:
        if isinstance(s, float) and isinstance(scale, float):
            return lp if s == scale else lp * (s / scale)
        return lp * (s / scale)
    if isinstance(s, float) and s == 1.0:
        return lp
    return lp * s


def _particle_plate(num_particles: int, nesting: int):
    def wrap(fn):
        def wrapped(*args, **kwargs):
            with pyro.plate(PARTICLE_PLATE, num_particles, dim=-(nesting + 1)):
                return fn(*args, **kwargs)
        return wrapped
    return wrap
