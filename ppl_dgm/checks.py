"""Checks run once before training, so bad input fails before any work is lost.

:func:`check_model_data` runs the model unconditioned and compares the data with what
the model generates (width, support); :func:`check_pair` runs model and guide together
and compares their latent sites; :func:`check_setup` does both and asks the estimator.
They run with Pyro's validation on and never inside the training step.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from .errors import DataError, SiteMismatchError
from .traces import OBS_SITE, latent_sites

__all__ = ["check_model_data", "check_pair", "check_setup"]


def _name(obj) -> str:
    return type(obj).__name__


def check_model_data(model, x: torch.Tensor, *, site: str = OBS_SITE) -> None:
    """The model's observed site must generate data shaped like ``x`` and support it."""
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
    ok = fn.support.check(x)
    while ok.dim() > 1:
        ok = ok.all(-1)
    if not bool(ok.all()):
        bad = torch.nonzero(~ok).flatten()
        base = getattr(fn, "base_dist", fn)
        hint = (" (a Bernoulli likelihood needs binary 0/1 data: binarise it, e.g. "
                "x = (x > 0.5).float(), or use a Gaussian likelihood)"
                if "Bernoulli" in type(base).__name__ else "")
        raise DataError(f"{len(bad)} data points lie outside the support of the model's "
                        f"{site!r} distribution {type(base).__name__} (support "
                        f"{fn.support}); first rows {bad[:5].tolist()}{hint}")


def check_pair(model, guide, x: torch.Tensor) -> None:
    """The guide must sample exactly the model's latent sites, with matching shapes."""
    xb = x[: min(2, x.shape[0])]
    try:
        with torch.no_grad():
            guide_tr = poutine.trace(guide).get_trace(xb)
    except Exception as e:
        raise SiteMismatchError(f"running guide {_name(guide)} on a batch of shape "
                                f"{tuple(xb.shape)} failed ({type(e).__name__}: {e}); a guide "
                                f"is called as guide(x) with the model's data") from e
    with torch.no_grad():
        model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(xb)
    m_lat, g_lat = latent_sites(model_tr), latent_sites(guide_tr)
    missing = [s for s in m_lat if s not in g_lat]
    extra = [s for s in g_lat if s not in m_lat]
    if missing:
        raise SiteMismatchError(
            f"guide {_name(guide)} does not sample the model's latent site(s) {missing}; "
            f"the guide samples {g_lat}. Every latent of the model needs a guide site of "
            f"the same name")
    if extra:
        raise SiteMismatchError(
            f"guide {_name(guide)} samples site(s) {extra} that model {_name(model)} does "
            f"not have (model latents: {m_lat}); rename or remove them")
    for s in m_lat:
        g, m = guide_tr.nodes[s], model_tr.nodes[s]
        g_shape = tuple(g["value"].shape)
        m_shape = tuple(m["fn"].shape())
        if g_shape != m_shape:
            raise SiteMismatchError(
                f"site {s!r}: the guide samples shape {g_shape} but the model's distribution "
                f"has shape {m_shape} (batch {tuple(m['fn'].batch_shape)} + event "
                f"{tuple(m['fn'].event_shape)}); check plates and .to_event()")
    if OBS_SITE in model_tr.nodes and not model_tr.nodes[OBS_SITE]["is_observed"]:
        raise SiteMismatchError(f"model {_name(model)} did not observe site {OBS_SITE!r} when "
                                f"given data; pass obs=x to pyro.sample({OBS_SITE!r}, ...)")


def check_setup(model, guide, estimator, x: torch.Tensor) -> None:
    """All checks before training: data against model, guide against model, estimator."""
    with pyro.validation_enabled(True):
        if getattr(estimator, "needs_likelihood", True):
            check_model_data(model, x)
            check_pair(model, guide, x)
        xb = x[: min(2, x.shape[0])]
        estimator.check(model, guide, xb)
        estimator.prepare(model, guide, xb)
