"""Shared pieces of the score-function (REINFORCE-family) estimators (a kit).

A guide site without ``rsample`` (a Bernoulli layer, a categorical) gets its gradient
from the score function ``grad log q(h | .)`` times a learning signal; a
reparameterisable site gets its gradient along the sampling path; a partially
reparameterised one (its ``score_parts`` carry a score-function correction) gets both.
The estimators in this package (REINFORCE, NVIL, VIMCO) share:

* :func:`score_sites`: which guide sites need scores (from ``score_parts``);
* :func:`pathwise_log_w`: ``log p - log q`` whose gradient is the pathwise and direct
  part (a score site contributes only its entropy term, as in Pyro's ELBOs);
* :func:`dependency_structure`: for each score site, which model and guide log-density
  terms depend on it, found by provenance tracking (the "downstream" terms);
* :func:`slice_signal` and :func:`site_score`: each score site's learning signal holds
  only the costs downstream of it *within its own plate slices*, the
  Rao-Blackwellisation Pyro's ``TraceGraph_ELBO`` performs: a local latent's signal
  carries the costs of its own data point, not those of the other points nor of global
  sites it does not influence;
* :class:`RunningMoments`: running mean and variance as device buffers updated in
  place, never read back to the host.

Signals are laid out as ``(K, P)`` (see :mod:`ppl_dgm.traces`) when that layout is the
site's own plate slices (a site of the data plate in a model with per-point weights, or
a global site); otherwise at the site's own batch shape.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyro
import torch
from pyro import poutine
from pyro.ops.provenance import get_provenance, track_provenance
from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample
from torch import nn

from ..distributed import gather_statistics
from ..particles import PairCache
from ..sites import PARTICLE_PLATE, data_frame, data_plate_name, is_factor, sum_to_frames
from ..traces import Traces, as_call, latent_sites, observed_sites, particle_plate

__all__ = ["DependencyStructure", "RunningMoments", "StructureCache", "dependency_structure",
           "module_key", "nonreparam_sites", "partially_reparameterised", "pathwise_log_w",
           "point_features", "score_sites", "score_sum", "site_score", "slice_signal",
           "slices_are_points", "total"]


def nonreparam_sites(guide_trace) -> tuple[str, ...]:
    """Latent guide sites whose distributions cannot be reparameterised."""
    return tuple(n for n in latent_sites(guide_trace)
                 if not getattr(guide_trace.nodes[n]["fn"], "has_rsample", False))


def score_sites(tr: Traces) -> tuple[str, ...]:
    """Guide sites whose ``score_parts`` have a score-function term, in guide order."""
    return tuple(tr.scores)


def partially_reparameterised(tr: Traces) -> tuple[str, ...]:
    """Score sites that also have ``rsample``: reparameterised with a score-function
    correction in their ``score_parts`` (e.g. a rejection-sampled Gamma)."""
    return tuple(s for s in tr.scores if getattr(tr.guide_trace.nodes[s]["fn"], "has_rsample",
                                                 False))


def score_sum(tr: Traces, sites: Sequence[str]) -> torch.Tensor:
    """The score-function terms of ``sites`` summed per (particle, point), ``(K, P)``."""
    return total([tr.reduce(tr.scores[s], tr.guide_trace.nodes[s]) for s in sites], tr.log_w)


def total(terms: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Sum of ``(K, P)`` terms (zeros shaped like ``like`` when there are none)."""
    out = None
    for t in terms:
        out = t if out is None else out + t
    return torch.zeros_like(like) if out is None else out


def pathwise_log_w(tr: Traces, sites: Sequence[str]) -> torch.Tensor:
    """``log p - log q`` per (particle, point) whose gradient leaves the score sites'
    score-function parts out.

    Its value is ``tr.log_w``.  Its gradient holds ``grad log p`` for the model and the
    pathwise gradient through every reparameterised guide sample; a score site
    contributes its entropy term only (zero for a non-reparameterised site: the direct
    term ``-grad log q(h)``, whose expectation is zero, is left out, as in the textbook
    estimator ``(f - b) grad log q``).
    """
    detached = set(sites)
    terms = []
    for n, t in tr.guide_terms.items():
        if n not in detached:
            terms.append(t)
        elif n in tr.entropies and tr.entropies[n].requires_grad:
            e = tr.entropies[n]
            terms.append(e + (t - e).detach())
        else:
            terms.append(t.detach())
    return tr.log_p - total(terms, tr.log_p)


def slices_are_points(tr: Traces, site: str) -> bool:
    """Whether the ``(K, P)`` layout is exactly ``site``'s plate slices."""
    frames = {f.name for f in tr.guide_trace.nodes[site]["cond_indep_stack"]
              if f.vectorized and f.name != PARTICLE_PLATE}
    return (tr.per_point and frames == {tr.data_plate}) or not frames


def point_features(tr: Traces) -> torch.Tensor | None:
    """The observed data of each point of the data plate, flattened, ``(B, F)`` (the
    inputs of per-point baselines); None without a data plate.  For the zoo's programs
    this is the data batch ``x`` itself."""
    feats = []
    for name in tr.observed:
        site = tr.model_trace.nodes[name]
        frame = data_frame(site, tr.data_plate)
        if frame is None or is_factor(site):
            continue
        v = site["value"]
        axis = v.dim() - site["fn"].event_dim + frame.dim
        if axis < 0:
            continue
        v = v.movedim(axis, 0)
        feats.append(v if v.dim() == 2 else v.reshape(v.shape[0], -1))
    if not feats:
        return None
    x = feats[0] if len(feats) == 1 else torch.cat(feats, -1)
    return x if x.is_floating_point() else x.float()


def slice_signal(tr: Traces, structure: DependencyStructure | None, site: str, *,
                 local: bool = True) -> torch.Tensor:
    """``site``'s learning signal: the model terms minus the guide terms downstream of it
    (all terms when ``local`` is False or ``site`` was not tracked), each summed within
    the plate slices of ``site``.  ``(K, P)`` or the site's batch shape (see
    :func:`site_score`), with gradients (detach it for a signal)."""
    tracked = local and structure is not None and site in structure.model
    model_names = structure.model[site] if tracked else tuple(tr.model_terms)
    guide_names = structure.guide[site] if tracked else tuple(tr.guide_terms)
    if slices_are_points(tr, site):
        return (total([tr.model_terms[n] for n in model_names], tr.log_p)
                - total([tr.guide_terms[n] for n in guide_names], tr.log_p))
    node = tr.guide_trace.nodes[site]
    p = [sum_to_frames(tr.model_full[n], tr.model_trace.nodes[n], node) for n in model_names]
    q = [sum_to_frames(tr.guide_full[n], tr.guide_trace.nodes[n], node) for n in guide_names]
    out = None
    for t in p:
        out = t if out is None else out + t
    for t in q:
        out = -t if out is None else out - t
    return torch.zeros_like(tr.scores[site]) if out is None else out


def site_score(tr: Traces, site: str) -> tuple[torch.Tensor, bool]:
    """``site``'s score-function term in the layout of its :func:`slice_signal`, and
    whether that layout is ``(K, P)`` (to be averaged over particles with the other
    per-point terms) rather than the site's batch shape (to be summed and divided by
    the number of particles)."""
    score = tr.scores[site]
    if slices_are_points(tr, site):
        return tr.reduce(score, tr.guide_trace.nodes[site]), True
    return score, False


# ---------------------------------------------------------------------------- structure
class _TrackScoreSites(Messenger):
    """Tag each non-reparameterised sample with its site name (provenance tracking)."""

    def _pyro_post_sample(self, msg):
        if (msg["type"] == "sample" and not msg["is_observed"]
                and not getattr(msg["fn"], "has_rsample", False)
                and type(msg["fn"]).__name__ != "_Subsample"):
            msg["value"] = track_provenance(msg["value"], frozenset({msg["name"]}))


@dataclass(frozen=True)
class DependencyStructure:
    """For each score site, the model and guide sites whose log densities depend on it.

    ``model[s]`` and ``guide[s]`` list the terms of ``log p(x, h) - log q(h | x)`` that
    change when the value of site ``s`` changes (``s`` itself included in ``guide``):
    its downstream terms.  All other terms are independent of ``s`` given its parents
    and drop out of its learning signal in expectation.  ``upstream[s]`` lists the
    score sites that ``q(h_s | .)`` depends on (its ancestors, in guide order), and
    ``event_sizes`` the number of values in one draw of each score site.
    """

    sites: tuple[str, ...]
    model: Mapping[str, tuple[str, ...]]
    guide: Mapping[str, tuple[str, ...]]
    per_point: bool
    upstream: Mapping[str, tuple[str, ...]]
    event_sizes: Mapping[str, int]
    data_only: Mapping[str, bool]


def _provenance_of_log_prob(site) -> frozenset:
    return frozenset(get_provenance(site["fn"].log_prob(site["value"])))


@torch.no_grad()
def dependency_structure(model, guide, args=(), kwargs=None, *, subsamples=None,
                         particles: tuple[int, int] | None = None) -> DependencyStructure:
    """Run model and guide once with provenance tracking and read the dependencies.

    Tracking wraps tensors in :class:`pyro.ops.provenance.ProvenanceTensor` (slow), so
    this runs once per model/guide pair and set of site names (see
    :class:`StructureCache`), and the training step reuses the result.  ``subsamples``
    (a trace) replays the plates' subsample indices of a step, so that the tracked run
    has the step's site names; ``particles = (K, nesting)`` runs it under the particle
    plate, for programs that are only run vectorised.
    """
    args, kwargs = as_call(args, kwargs)
    if subsamples is not None:
        guide = poutine.replay(guide, trace=subsamples)
    extra = 0
    if particles is not None:
        k, nesting = particles
        plate = particle_plate(k, nesting)
        model, guide, extra = plate(model), plate(guide), 1
    with pyro.validation_enabled(False), _TrackScoreSites():
        guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(
            *args, **kwargs)
    sites = nonreparam_sites(guide_tr)
    model_dep: dict[str, list[str]] = {s: [] for s in sites}
    guide_dep: dict[str, list[str]] = {s: [] for s in sites}
    for name in (*latent_sites(model_tr), *observed_sites(model_tr)):
        for s in _provenance_of_log_prob(model_tr.nodes[name]) & set(sites):
            model_dep[s].append(name)
    for name in latent_sites(guide_tr):
        for s in _provenance_of_log_prob(guide_tr.nodes[name]) & set(sites):
            guide_dep[s].append(name)
    for s in sites:  # a site's own log q always depends on its value
        if s not in guide_dep[s]:
            guide_dep[s].append(s)
    upstream = {s: tuple(a for a in sites if a != s and s in guide_dep[a]) for s in sites}
    plate = data_plate_name(model_tr)
    event_sizes, data_only = {}, {}
    for s in sites:
        site = guide_tr.nodes[s]
        event_shape = tuple(site["fn"].event_shape)
        event_sizes[s] = int(torch.Size(event_shape).numel())
        # the value is batched by the data plate alone: (B, *event_shape)
        data_only[s] = (site["value"].dim() - len(event_shape) == 1 + extra
                        and data_frame(site, plate) is not None)
    per_point = plate is not None and all(data_frame(tr.nodes[n], plate) is not None
                                          for tr in (guide_tr, model_tr)
                                          for n in latent_sites(tr))
    return DependencyStructure(sites, {s: tuple(v) for s, v in model_dep.items()},
                               {s: tuple(v) for s, v in guide_dep.items()}, per_point,
                               upstream, event_sizes, data_only)


class StructureCache:
    """Dependency structures per model, guide and set of site names.

    Programs whose site names change between calls (``for i in pyro.plate("seq", n,
    subsample_size=m): pyro.sample(f"z_{i}", ...)``) get one structure per set of
    names seen (at most ``limit`` kept); a new set is tracked once, replaying the
    step's subsample indices."""

    def __init__(self, limit: int = 64):
        self._pairs = PairCache()
        self.limit = limit

    def get(self, model, guide, tr: Traces, args, kwargs) -> DependencyStructure:
        table = self._pairs.get(model, guide)
        if table is None:
            table = {}
            self._pairs.set(model, guide, table)
        key = (tuple(tr.model_terms), tuple(tr.guide_terms))
        if key not in table:
            if len(table) >= self.limit:
                table.pop(next(iter(table)))
            subsamples = Trace()
            for name, site in tr.guide_trace.nodes.items():
                if site_is_subsample(site):
                    subsamples.add_node(name, **site)
            vectorised = tr.num_particles > 1 and not tr.sequential
            table[key] = dependency_structure(
                model, guide, args, kwargs, subsamples=subsamples,
                particles=(tr.num_particles, tr.nesting) if vectorised else None)
        return table[key]


# ---------------------------------------------------------------------------- running stats
class RunningMoments(nn.Module):
    """Exponential moving mean and variance of a learning signal, as device buffers.

    ``update_(values)`` folds the batch mean and variance of ``values`` into the buffers
    in place, ``m <- a m + (1 - a) mean``, ``v <- a v + (1 - a) var``; the first update
    sets them to the batch values.  Nothing is read back to the host, so a step that
    uses it stays capture-ready.  Buffers are saved with the estimator's state.
    """

    def __init__(self, decay: float):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the running-average decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.register_buffer("mean", torch.zeros(()))
        self.register_buffer("var", torch.ones(()))
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update_(self, values: torch.Tensor) -> None:
        values = gather_statistics(values.detach().to(self.mean.dtype))
        batch_mean = values.mean()
        batch_var = (values - batch_mean).square().mean()
        first = self.count == 0
        a = self.decay
        self.mean.copy_(torch.where(first, batch_mean, a * self.mean + (1 - a) * batch_mean))
        self.var.copy_(torch.where(first, batch_var, a * self.var + (1 - a) * batch_var))
        self.count.add_(1)


def module_key(name: str, taken: set[str]) -> str:
    """A ModuleDict-safe key for a site name (no dots), unique among ``taken``."""
    key = re.sub(r"\W", "_", name) or "site"
    base, i = key, 1
    while key in taken:
        i += 1
        key = f"{base}_{i}"
    return key
