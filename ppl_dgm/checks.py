"""Checks run once before training, so bad input fails before any work is lost.

:func:`check_model_data` compares the data with the model's observed sites (shape,
support): a zoo model (``model(None, batch_size=n)``) by what it generates, any other
program by running it on the data; :func:`check_pair` runs model and guide together and
compares their latent sites; :func:`check_setup` does both and asks the estimator.  They
run with Pyro's validation on and never inside the training step.  A program's own error
during a check is reported with the call that raised it.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from .errors import DataError, SiteMismatchError
from .particles import cuda_devices
from .programs import Columns, ProgramCall, generates_with_batch_size, program_name
from .traces import OBS_SITE, data_frame, data_plate_name, is_factor, latent_sites, observed_sites

__all__ = ["check_model_data", "check_pair", "check_setup"]


_name = program_name


def _bind(call: ProgramCall | None, x):
    return ((x,), {}) if call is None else call.bind(x)


def _shape(x) -> str:
    if isinstance(x, torch.Tensor):
        return str(tuple(x.shape))
    return repr(x) if isinstance(x, Columns) else type(x).__name__


def check_model_data(model, x: torch.Tensor, *, site: str = OBS_SITE,
                     call: ProgramCall | None = None) -> None:
    """The model's observed sites must take data shaped like ``x`` and support it."""
    if call not in (None, ProgramCall()) or not generates_with_batch_size(model):
        return _check_observed(model, x, call)
    n = min(2, x.shape[0])
    try:
        with torch.no_grad():
            tr = poutine.trace(model).get_trace(None, batch_size=n)
    except Exception as e:  # a user's model: report what failed, keep the cause
        raise DataError(f"running model {_name(model)} with x=None, batch_size={n} failed "
                        f"({type(e).__name__}: {e}); a model must generate data when called "
                        f"as model(None, batch_size=n)") from e
    if site not in tr.nodes:
        raise DataError(f"model {_name(model)} has no sample site {site!r}; the observed data "
                        f"must be the site {site!r} inside pyro.plate('data', n)")
    fn = tr.nodes[site]["fn"]
    generated = tuple(tr.nodes[site]["value"].shape[1:])
    if tuple(x.shape[1:]) != generated:
        raise DataError(
            f"data points have shape {tuple(x.shape[1:])} but model {_name(model)} generates "
            f"{site!r} with shape {generated}; build the model for this data (e.g. "
            f"x_dim={x.shape[1]}) or pass matching data")
    _check_support(fn, x, site, None)


def _check_observed(model, x, call) -> None:
    """Any program: run it on the data and compare each observed site's distribution
    shape and support with its value."""
    xb = x
    args, kwargs = _bind(call, xb)
    try:
        with torch.no_grad():
            tr = poutine.trace(model).get_trace(*args, **kwargs)
    except Exception as e:  # the user's program: report what failed, keep the cause
        raise DataError(f"running model {_name(model)} on a data batch of shape "
                        f"{_shape(xb)} raised {type(e).__name__}: {e}; is the model built "
                        f"for this data (its width, dtype, the argument carrying it)?") from e
    observed = [n for n in observed_sites(tr) if not is_factor(tr.nodes[n])]
    for name in observed:
        node = tr.nodes[name]
        fn, value = node["fn"], node["value"]
        expected = tuple(fn.batch_shape) + tuple(fn.event_shape)
        if tuple(value.shape) != expected:
            raise DataError(
                f"model {_name(model)}'s observed site {name!r} has a distribution of shape "
                f"{expected} (batch {tuple(fn.batch_shape)} + event {tuple(fn.event_shape)}) "
                f"but observes a value of shape {tuple(value.shape)}; build the model for "
                f"this data or check its plates and .to_event()")
        _check_support(fn, value, name, node)


def _check_support(fn, value, name, node) -> None:
    ok = fn.support.check(value)
    while ok.dim() > 1:
        ok = ok.all(-1)
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()
        base = getattr(fn, "base_dist", fn)
        hint = (" (a Bernoulli likelihood needs binary 0/1 data: binarise it, e.g. "
                "x = (x > 0.5).float(), or use a Gaussian likelihood)"
                if "Bernoulli" in type(base).__name__ else "")
        raise DataError(f"{len(bad)} data points lie outside the support of the model's "
                        f"{name!r} distribution {type(base).__name__} (support "
                        f"{fn.support}); first rows {bad[:5].tolist()}{hint}")


def check_pair(model, guide, x: torch.Tensor, *, call: ProgramCall | None = None) -> None:
    """The guide must sample exactly the model's latent sites, with matching shapes, in
    the model's data plate where the model's site is."""
    xb = x
    args, kwargs = _bind(call, xb)
    try:
        with torch.no_grad():
            guide_tr = poutine.trace(guide).get_trace(*args, **kwargs)
    except Exception as e:
        raise SiteMismatchError(f"running guide {_name(guide)} on a batch of shape "
                                f"{_shape(xb)} failed ({type(e).__name__}: {e}); a guide "
                                f"is called with the model's arguments") from e
    try:
        with torch.no_grad():
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(
                *args, **kwargs)
    except Exception as e:
        raise SiteMismatchError(f"running model {_name(model)} on the guide's samples failed "
                                f"({type(e).__name__}: {e}); check that the guide samples "
                                f"each latent with the shape the model expects") from e
    m_lat, g_lat = latent_sites(model_tr), latent_sites(guide_tr)
    missing = [s for s in m_lat if s not in g_lat]
    extra = [s for s in g_lat if s not in m_lat
             and not guide_tr.nodes[s]["infer"].get("is_auxiliary")]
    if missing:
        raise SiteMismatchError(
            f"guide {_name(guide)} does not sample the model's latent site(s) {missing}; "
            f"the guide samples {g_lat}. Every latent of the model needs a guide site of "
            f"the same name")
    if extra:
        raise SiteMismatchError(
            f"guide {_name(guide)} samples site(s) {extra} that model {_name(model)} does "
            f"not have (model latents: {m_lat}); rename or remove them, or mark an "
            f"auxiliary variable with infer={{'is_auxiliary': True}}")
    for s in m_lat:
        g, m = guide_tr.nodes[s], model_tr.nodes[s]
        g_shape = tuple(g["value"].shape)
        m_shape = tuple(m["fn"].shape())
        if g_shape != m_shape:
            raise SiteMismatchError(
                f"site {s!r}: the guide samples shape {g_shape} but the model's distribution "
                f"has shape {m_shape} (batch {tuple(m['fn'].batch_shape)} + event "
                f"{tuple(m['fn'].event_shape)}); check plates and .to_event()")
    plate = data_plate_name(model_tr)
    for s in m_lat:
        if data_frame(model_tr.nodes[s], plate) is not None and \
                data_frame(guide_tr.nodes[s], plate) is None:
            raise SiteMismatchError(
                f"site {s!r} lies in the model's data plate {plate!r} but the guide samples "
                f"it outside that plate; sample it inside pyro.plate({plate!r}, ...) in the "
                f"guide too, so that each data point has its own weights")
    if OBS_SITE in model_tr.nodes and not model_tr.nodes[OBS_SITE]["is_observed"] \
            and call in (None, ProgramCall()):
        raise SiteMismatchError(f"model {_name(model)} did not observe site {OBS_SITE!r} when "
                                f"given data; pass obs=x to pyro.sample({OBS_SITE!r}, ...)")


def check_setup(model, guide, estimator, x: torch.Tensor, *,
                call: ProgramCall | None = None) -> None:
    """All checks before training: data against model, guide against model, estimator.

    The checks run the programs under a forked random state (they change no later draw);
    the estimator's :meth:`prepare`, which may initialise networks, runs after them on
    the caller's stream."""
    args, kwargs = _bind(call, x)
    with pyro.validation_enabled(True):
        with torch.random.fork_rng(devices=cuda_devices(args, kwargs)):
            if getattr(estimator, "needs_likelihood", True):
                if call is None or call.data_arg is not None:
                    check_model_data(model, x, call=call)
                check_pair(model, guide, x, call=call)
            estimator.check(model, guide, *args, **kwargs)
        estimator.prepare(model, guide, *args, **kwargs)
