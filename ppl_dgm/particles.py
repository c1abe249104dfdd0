"""Vectorised or one-by-one particles: decided once per model and guide by a trial run.

Drawing K particles in one vectorised run (an outer ``pyro.plate`` of size K) needs
programs that broadcast over an extra batch dimension on the left.  Most do; a guide
written as ``torch.cat([x, h], -1)`` with ``h`` sampled does not.  :func:`vectorizable`
runs the pair once with 2 particles, under a forked random-number state (so the trial
changes no later draw), and checks that it runs and that every latent carries the
particle dimension.  If not, the pair's particles are run one by one: the same
weights, stacked, and -- for samplers that draw their random numbers in order, such as
Bernoulli's -- the same random numbers as a vectorised run.  The user is told once,
with the reason and how to make the program vectorisable.

:class:`PairCache` remembers such per-(model, guide) facts without keeping either
program alive.
"""

from __future__ import annotations

import inspect
import warnings
import weakref
from collections.abc import Callable

import torch

from .errors import ParticleWarning
from .programs import program_name
from .sites import latent_sites
from .traces import as_call, run_traces

__all__ = ["PairCache", "cuda_devices", "run_particles", "vectorizable"]


def _ref(obj):
    if inspect.ismethod(obj):
        return weakref.WeakMethod(obj)
    try:
        return weakref.ref(obj)
    except TypeError:
        return None


def _key(obj) -> tuple:
    if inspect.ismethod(obj):
        return (id(obj.__self__), id(obj.__func__))
    return (id(obj),)


class PairCache:
    """A small memo keyed by a (model, guide) pair, holding only weak references.

    Functions, bound methods and modules are all accepted; an entry whose programs have
    been garbage collected (or whose ids were reused) is ignored."""

    def __init__(self):
        self._entries: dict[tuple, tuple] = {}

    def get(self, model, guide, default=None):
        entry = self._entries.get((_key(model), _key(guide)))
        if entry is None:
            return default
        refs, value = entry
        if any(r is None or r() is None or r() != obj for r, obj in zip(refs, (model, guide))):
            return default
        return value

    def set(self, model, guide, value) -> None:
        refs = (_ref(model), _ref(guide))
        if any(r is None for r in refs):
            return                                 # not weakly referencable: not cached
        if len(self._entries) > 256:               # drop entries of dead programs
            self._entries = {k: v for k, v in self._entries.items()
                             if all(r() is not None for r in v[0])}
        self._entries[(_key(model), _key(guide))] = (refs, value)


_DECISIONS = PairCache()


def cuda_devices(args, kwargs) -> list[int]:
    """The CUDA devices of a call's tensor arguments (for forking their RNGs)."""
    found = set()
    for a in [*args, *kwargs.values()]:
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            found.add(a.device.index or 0)
    return sorted(found)


def vectorizable(model: Callable, guide: Callable, args: tuple, kwargs: dict, *,
                 nesting: int, num_particles: int) -> bool:
    """Whether ``model`` and ``guide`` can draw particles in one vectorised run.

    Decided once per pair by a trial with 2 particles (forked RNG, no gradient); when
    the answer is no, one :class:`~ppl_dgm.errors.ParticleWarning` says why and how to
    change the program."""
    known = _DECISIONS.get(model, guide)
    if known is not None:
        return known
    reason = None
    with torch.random.fork_rng(devices=cuda_devices(args, kwargs)), torch.no_grad():
        try:
            tr = run_traces(model, guide, args, kwargs, num_particles=2, nesting=nesting)
        except Exception as e:  # the program's own error: fall back, and say which
            reason = f"{type(e).__name__}: {e}"
        else:
            reason = _missing_particle_dim(tr, nesting)
    ok = reason is None
    _DECISIONS.set(model, guide, ok)
    if not ok and not _runs_one_by_one(model, guide, args, kwargs, nesting):
        return False        # the programs fail either way: their own error will say why
    if not ok:
        warnings.warn(
            f"model {program_name(model)!r} and guide {program_name(guide)!r} cannot draw "
            f"particles in one vectorised run ({reason}); their {num_particles} particles "
            f"are run one by one instead (the same weights, more time). To vectorise them, "
            f"let every tensor carry extra batch dimensions on the left: e.g. "
            f"torch.cat([x.expand(h.shape[:-1] + x.shape[-1:]), h], -1) instead of "
            f"torch.cat([x, h], -1), and plates with dim=... counted from the right. "
            f"Pass vectorize_particles=False to the estimator to choose this and silence "
            f"the warning.", ParticleWarning, stacklevel=3)
    return ok


def _runs_one_by_one(model, guide, args, kwargs, nesting: int) -> bool:
    with torch.random.fork_rng(devices=cuda_devices(args, kwargs)), torch.no_grad():
        try:
            run_traces(model, guide, args, kwargs, num_particles=1, nesting=nesting)
        except Exception:
            return False
    return True


def _missing_particle_dim(tr, nesting: int) -> str | None:
    for label, trace in (("guide", tr.guide_trace), ("model", tr.model_trace)):
        for name in latent_sites(trace):
            site = trace.nodes[name]
            batch = site["value"].dim() - site["fn"].event_dim
            axis = batch - (nesting + 1)
            if axis < 0 or site["value"].shape[axis] != 2:
                return (f"the {label}'s site {name!r} has shape {tuple(site['value'].shape)} "
                        f"without the particle dimension of size 2 at dim "
                        f"{-(nesting + 1)} of its batch shape")
    for label, full in (("model", tr.model_full), ("guide", tr.guide_full)):
        for name, lp in full.items():
            # more batch dimensions than plates: a tensor broadcast against the particle
            # dimension (a global sample of shape (K, 1, ...) times a local one)
            if lp.dim() > nesting + 1:
                return (f"the {label}'s site {name!r} has a log density of shape "
                        f"{tuple(lp.shape)}, more batch dimensions than the "
                        f"{nesting + 1} of its plates and the particles")
    for name, term in {**tr.model_terms, **tr.guide_terms}.items():
        if term.shape[0] not in (1, 2):
            return f"the log density of site {name!r} reduces to shape {tuple(term.shape)}"
    return None


def run_particles(model: Callable, guide: Callable, args=(), kwargs=None, *,
                  num_particles: int, nesting: int, vectorize: bool | None = None,
                  **options):
    """:func:`~ppl_dgm.traces.run_traces` with the particles vectorised when the pair
    allows it (``vectorize=None``: decided by :func:`vectorizable`)."""
    args, kwargs = as_call(args, kwargs)
    if num_particles > 1 and vectorize is None:
        vectorize = vectorizable(model, guide, args, kwargs, nesting=nesting,
                                 num_particles=num_particles)
    return run_traces(model, guide, args, kwargs, num_particles=num_particles,
                      nesting=nesting, vectorize=vectorize is not False, **options)
