"""Shared pieces of the score-function (REINFORCE-family) estimators (a kit).

A guide site without ``rsample`` (a Bernoulli layer, a categorical) gets its gradient
from the score function ``grad log q(h | .)`` times a learning signal; a
reparameterisable site gets its gradient along the sampling path.  The estimators in
this package (REINFORCE, NVIL, VIMCO) share:

* :func:`nonreparam_sites` and :func:`score_terms`: which guide sites need scores;
* :func:`pathwise_log_w`: ``log p - log q`` whose gradient is the pathwise and direct
  part (the score sites' own ``log q`` detached, as in the textbook estimator
  ``(f - b) grad log q``);
* :func:`dependency_structure`: for each score site, which model and guide log-density
  terms depend on it, found once by provenance tracking (the "downstream" terms that
  NVIL's local learning signals keep);
* :class:`RunningMoments`: running mean and variance as device buffers updated in
  place, never read back to the host.

All signals are per data point (shape ``(K, P)``, see :mod:`.traces`): each data point's
score is multiplied by its own learning signal only, which is the Rao-Blackwellisation
over the data plate (other points' terms are independent of its latents).
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
from torch import nn

from ..traces import Traces, data_frame, latent_sites, observed_sites

__all__ = ["DependencyStructure", "RunningMoments", "dependency_structure", "module_key",
           "nonreparam_sites", "pathwise_log_w", "score_terms", "total"]


def nonreparam_sites(guide_trace) -> tuple[str, ...]:
    """Latent guide sites whose distributions cannot be reparameterised."""
    return tuple(n for n in latent_sites(guide_trace)
                 if not getattr(guide_trace.nodes[n]["fn"], "has_rsample", False))


def total(terms: Sequence[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """Sum of ``(K, P)`` terms (zeros shaped like ``like`` when there are none)."""
    out = None
    for t in terms:
        out = t if out is None else out + t
    return torch.zeros_like(like) if out is None else out


def score_terms(tr: Traces, sites: Sequence[str]) -> dict[str, torch.Tensor]:
    """Per-point ``log q`` of each score site, ``(K, P)``, differentiable."""
    return {s: tr.guide_terms[s] for s in sites}


def pathwise_log_w(tr: Traces, sites: Sequence[str]) -> torch.Tensor:
    """``log p - log q`` per (particle, point) with the score sites' ``log q`` detached.

    Its value is ``tr.log_w``.  Its gradient holds ``grad log p`` for the model and the
    pathwise gradient through every reparameterised guide sample; the direct term
    ``-grad log q(h)`` of a score site, whose expectation is zero, is left out.
    """
    detached = set(sites)
    log_q = total([t.detach() if n in detached else t for n, t in tr.guide_terms.items()],
                  tr.log_p)
    return tr.log_p - log_q


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
def dependency_structure(model, guide, x) -> DependencyStructure:
    """Run model and guide once with provenance tracking and read the dependencies.

    Tracking wraps tensors in :class:`pyro.ops.provenance.ProvenanceTensor` (slow), so
    this runs once per model/guide pair and the training step reuses the result.
    """
    with pyro.validation_enabled(False), _TrackScoreSites():
        guide_tr = poutine.trace(guide).get_trace(x)
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(x)
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
    event_sizes, data_only = {}, {}
    for s in sites:
        site = guide_tr.nodes[s]
        event_shape = tuple(site["fn"].event_shape)
        event_sizes[s] = int(torch.Size(event_shape).numel())
        # the value is batched by the data plate alone: (B, *event_shape)
        data_only[s] = (site["value"].dim() - len(event_shape) == 1
                        and data_frame(site) is not None)
    per_point = all(data_frame(tr.nodes[n]) is not None
                    for tr in (guide_tr, model_tr) for n in latent_sites(tr))
    return DependencyStructure(sites, {s: tuple(v) for s, v in model_dep.items()},
                               {s: tuple(v) for s, v in guide_dep.items()}, per_point,
                               upstream, event_sizes, data_only)


def local_signal(tr: Traces, structure: DependencyStructure, site: str) -> torch.Tensor:
    """``sum`` of the model terms minus the guide terms downstream of ``site``, ``(K, P)``."""
    p = total([tr.model_terms[n] for n in structure.model[site]], tr.log_p)
    q = total([tr.guide_terms[n] for n in structure.guide[site]], tr.log_p)
    return p - q


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
        values = values.detach().to(self.mean.dtype)
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
