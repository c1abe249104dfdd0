"""Sites and plates of Pyro traces: the engine's vocabulary (see :mod:`ppl_dgm.traces`).

Which sites are latent or observed, which plate is the data plate, where a site's data
dimension is, a site's masked log density, and the reductions of per-site tensors to
``(particles, points)`` or to the plate slices of another site.  Pure functions of
trace sites; nothing here runs a program.
"""

from __future__ import annotations

import copy

import torch
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

__all__ = [
    "DATA_PLATE",
    "OBS_SITE",
    "PARTICLE_PLATE",
    "data_frame",
    "data_plate_name",
    "detach_distribution",
    "is_factor",
    "latent_sites",
    "observed_sites",
    "reduce_site",
    "site_log_prob",
    "site_mask",
    "sum_to_frames",
]

DATA_PLATE = "data"
"""The data plate's name in the zoo's programs (the default, not a requirement)."""
OBS_SITE = "x"
"""The observed site's name in the zoo's programs (the default, not a requirement)."""
PARTICLE_PLATE = "num_particles_vectorized"
"""Pyro's name for the plate of vectorised particles."""


def latent_sites(trace: Trace) -> list[str]:
    """Names of the unobserved sample sites of a trace, in execution order."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site["is_observed"]
            and not site_is_subsample(site)]


def observed_sites(trace: Trace) -> list[str]:
    """Names of the observed sample sites of a trace (``pyro.factor`` sites included),
    in execution order."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and site["is_observed"]
            and not site_is_subsample(site)]


def is_factor(site: dict) -> bool:
    """Whether a site is a ``pyro.factor`` (an observed ``Unit`` distribution)."""
    fn = site["fn"]
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__ == "Unit"


def data_plate_name(model_trace: Trace) -> str | None:
    """The data plate of a model's trace: a vectorised plate that every observed
    (non-factor) site lies in.  Among several, the one named ``"data"``; else one that
    also holds every latent (so that each point has its own importance weights); else
    the outermost.  None when the observed sites share no plate (or there are none)."""
    common = None
    for name in observed_sites(model_trace):
        site = model_trace.nodes[name]
        if is_factor(site):
            continue
        common = _plates(site) if common is None else common & _plates(site)
    if not common:
        return None
    names = {n for n, _ in common}
    if DATA_PLATE in names:
        return DATA_PLATE
    latent = [_plates(model_trace.nodes[n]) for n in latent_sites(model_trace)]
    holding = [f for f in common if all(f in plates for plates in latent)]
    return min(holding or common, key=lambda f: f[1])[0]


def _plates(site: dict) -> set[tuple[str, int]]:
    return {(f.name, f.dim) for f in site["cond_indep_stack"]
            if f.vectorized and f.name != PARTICLE_PLATE}


def data_frame(site: dict, plate: str | None = DATA_PLATE):
    """The frame of the data plate in a site's plate stack, or None (a global site)."""
    if plate is None:
        return None
    for frame in site["cond_indep_stack"]:
        if frame.name == plate and frame.vectorized:
            return frame
    return None


def reduce_site(tensor: torch.Tensor, site: dict, nesting: int,
                plate: str | None = DATA_PLATE) -> torch.Tensor:
    """Reduce a batch-shaped per-site tensor (a log density) to ``(K, B)`` or ``(K, 1)``.

    ``nesting`` is the number of plate dimensions right of the particle dimension.  The
    particle dimension is the leftmost of the ``nesting + 1`` batch dimensions; the data
    dimension is the data plate's.  All other dimensions are summed.
    """
    n = nesting + 1
    if tensor.dim() < n:
        tensor = tensor.reshape((1,) * (n - tensor.dim()) + tuple(tensor.shape))
    frame = data_frame(site, plate)
    if frame is None:
        return tensor.reshape(tensor.shape[0], -1).sum(-1, keepdim=True)
    data_axis = n + frame.dim
    if data_axis != 1:
        tensor = tensor.movedim(data_axis, 1)
    return tensor.reshape(tensor.shape[0], tensor.shape[1], -1).sum(-1)


def sum_to_frames(tensor: torch.Tensor, source: dict, target: dict) -> torch.Tensor:
    """Sum a per-site tensor of site ``source`` over the dimensions of the vectorised
    plates that site ``target`` is not in (Pyro's ``MultiFrameTensor.sum_to``): the
    part of ``source``'s term that lies in each plate slice of ``target``.  The result
    broadcasts against ``target``'s batch shape."""
    keep = {(f.name, f.dim) for f in target["cond_indep_stack"] if f.vectorized}
    for f in source["cond_indep_stack"]:
        if f.vectorized and (f.name, f.dim) not in keep and -tensor.dim() <= f.dim \
                and tensor.shape[f.dim] != 1:
            tensor = tensor.sum(f.dim, keepdim=True)
    return tensor


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


def site_mask(lp: torch.Tensor, mask) -> torch.Tensor:
    """``lp`` with a site's mask applied (None/True: unchanged, False: zeros)."""
    if mask is None or mask is True:
        return lp
    if mask is False:
        return torch.zeros_like(lp)
    return lp.masked_fill(~mask, 0.0) if mask.dtype == torch.bool else lp * mask


def site_log_prob(site: dict, value: torch.Tensor | None = None, fn=None) -> torch.Tensor:
    """A site's log density at its value (or ``value``) under its distribution (or
    ``fn``), with the site's mask applied and its scale not applied."""
    fn = site["fn"] if fn is None else fn
    return site_mask(fn.log_prob(site["value"] if value is None else value), site["mask"])


