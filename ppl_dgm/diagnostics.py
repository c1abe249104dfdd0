"""Posterior diagnostics for amortised guides, with ArviZ.

"Is my inference network any good, and for which data points?"  The tools here answer
it in four ways, each per data point where the model allows:

* **Importance weights** ``log w = log p(x, h) - log q(h | x)`` with the guide as
  proposal (vectorised particles through :func:`~ppl_dgm.estimators.traces.run_traces`):
  the PSIS shape ``k-hat`` (Vehtari et al. 2024, float64, relative efficiency 1 because
  guide draws are independent) and the importance-sampling effective sample size
  ``1 / sum(w_norm^2)``.  A point is flagged when ``k-hat`` exceeds the sample-size-aware
  threshold ``min(1 - 1/log10 S, 0.7)``; ``k-hat`` from 1000 draws is noisy (sd about
  0.1-0.15), so flagged points can be rechecked with more draws.
* **A reference posterior by NUTS** (:func:`nuts_reference`, Pyro MCMC) for chosen
  points of a model with continuous latents, compared with the guide by moments
  (:func:`compare_to_reference`), with ESS and R-hat of the NUTS chains.  Guide draws
  are independent: their own ESS and R-hat say nothing about the guide's quality.
* **Simulation-based calibration** (:func:`sbc`, Talts et al. 2018): the rank of the
  true latent among guide draws, for data simulated from the model, is uniform when
  the guide is the posterior; a chi-square test per dimension (Bonferroni-combined).
* **Model comparison on held-out log p(x)** (:func:`compare_models`) with paired
  per-point differences and their standard errors.  (PSIS-LOO over per-datapoint
  latents is meaningless: leaving a point out removes its latent too.)

:func:`to_inference_data` and :func:`diagnose` collect the results into ArviZ data
(``InferenceData`` with arviz 0.23, ``DataTree`` with arviz >= 1, through
:mod:`ppl_dgm._arviz`), exported to NetCDF by :func:`save_netcdf`.

**Memory.**  Per-point summaries (k-hat, ESS, log p(x), ELBO) are kept for every
point; the draws themselves (latents, log weights, log-likelihoods) only for the few
points in ``points``.  Points are processed in batches of ``batch_size`` (50) and draws
in vectorised chunks of ``chunk_size`` (100), so 1000 points x 1000 draws x 64 latent
dimensions (256 MB as float32) are never held at once: one run holds ``batch_size x
chunk_size`` particles, and the k-hat of a batch needs only its ``(batch_size, S)``
float64 log weights.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine
from scipy import stats as sps

from . import _arviz
from .checks import check_pair
from .errors import DataError, IncompatibleEstimatorError
from .evaluate import exact_log_prob, importance_log_likelihood
from .traces import (
    DATA_PLATE,
    OBS_SITE,
    PARTICLE_PLATE,
    guess_plate_nesting,
    latent_sites,
    run_traces,
)

__all__ = [
    "Diagnosis",
    "GuideVsReference",
    "ImportanceDiagnostics",
    "ModelComparison",
    "NutsConfig",
    "NutsReference",
    "PointDraws",
    "SBCResult",
    "check_points",
    "compare_models",
    "compare_to_reference",
    "diagnose",
    "importance_diagnostics",
    "khat_threshold",
    "load_netcdf",
    "nuts_reference",
    "psis",
    "rank_uniformity",
    "save_netcdf",
    "sbc",
    "select_nuts_points",
    "to_inference_data",
]


# --------------------------------------------------------------------------- helpers

CONSTANT_TOL = 1e-4
"""Log weights whose range is below this are treated as equal (k-hat = -inf)."""


def khat_threshold(num_draws: int) -> float:
    """The k-hat above which ``num_draws`` importance draws are unreliable:
    ``min(1 - 1/log10(S), 0.7)`` (Vehtari et al. 2024): 0.5 at S=100, 0.667 at S=1000,
    0.7 from S=2155 on."""
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2, got {num_draws}")
    if num_draws <= 10:
        return -math.inf if num_draws < 10 else 0.0
    return min(1.0 - 1.0 / math.log10(num_draws), 0.7)


def psis(log_w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k-hat and IS effective sample size for log weights ``(..., S)`` (samples last).

    k-hat is ArviZ's PSIS shape estimate with relative efficiency 1 (guide draws are
    independent), in float64.  Weights equal to within :data:`CONSTANT_TOL` in log space,
    and flat tails (the largest weight repeated across the whole Pareto tail, as with
    discrete latents), give ``-inf``: no tail to fit.  A failed fit gives NaN.  Returns
    ``(khat, ess)`` as float64 arrays of shape ``(...)``.  The ESS is that of the raw
    (unsmoothed) normalised weights,
    ``1 / sum(w_norm^2)``.
    """
    lw = np.asarray(log_w, dtype=np.float64)
    lw = lw - lw.max(-1, keepdims=True)
    # Weights equal to within CONSTANT_TOL in log space (float32 rounding of the log
    # densities when the guide is the exact posterior) have no tail to fit; they are
    # passed on as exactly equal, which reports k-hat = -inf.
    flat = lw.reshape(-1, lw.shape[-1])
    const = flat.min(-1) > -CONSTANT_TOL
    if const.any():
        flat = flat.copy()
        flat[const] = 0.0
    _, khat = _arviz.psislw(flat.reshape(lw.shape), r_eff=1.0)
    w = np.exp(lw)
    w /= w.sum(-1, keepdims=True)
    return khat, 1.0 / (w**2).sum(-1)


def _logmeanexp(lw: np.ndarray) -> np.ndarray:
    m = lw.max(-1, keepdims=True)
    return (m + np.log(np.exp(lw - m).mean(-1, keepdims=True)))[..., 0]


def check_points(points, n: int, *, what: str = "points") -> np.ndarray:
    """Validate point indices into a data set of ``n`` points; return them as an array."""
    idx = np.asarray(points if points is not None else [], dtype=np.int64).reshape(-1)
    bad = idx[(idx < 0) | (idx >= n)]
    if bad.size:
        raise DataError(f"{what} {bad[:5].tolist()} are out of range: the data has {n} points "
                        f"(valid indices 0..{n - 1})")
    if len(np.unique(idx)) != len(idx):
        raise DataError(f"{what} {idx.tolist()} contain duplicates; give each index once")
    return idx


def _resolve_points(points, n: int) -> np.ndarray:
    if points is None:
        return np.arange(0)
    if isinstance(points, (int, np.integer)):
        if points < 0:
            raise DataError(f"points={points}: give a number of points >= 0 or a list of indices")
        return np.arange(min(int(points), n))
    return check_points(points, n)


def _data_frame(site: dict):
    for frame in site["cond_indep_stack"]:
        if frame.name == DATA_PLATE:
            return frame
    return None


def _site_values(site: dict, nesting: int, num_particles: int) -> tuple[torch.Tensor, bool]:
    """A latent site's value as ``(K, B, F)`` (inside the data plate) or ``(K, F)``."""
    value = site["value"]
    event_dim = len(site["fn"].event_shape)
    n = nesting + 1
    batch_dim = value.dim() - event_dim
    if batch_dim < n:
        value = value.reshape((1,) * (n - batch_dim) + tuple(value.shape))
    value = value.expand(num_particles, *value.shape[1:])
    frame = _data_frame(site)
    if frame is None:
        return value.reshape(num_particles, -1), False
    data_axis = n + frame.dim
    if data_axis != 1:
        value = value.movedim(data_axis, 1)
    return value.reshape(num_particles, value.shape[1], -1), True


def _chunks(total: int, size: int) -> list[int]:
    """Chunk sizes summing to ``total``, none equal to 1 (K=1 runs have no particle dim)."""
    size = max(2, size)
    out = [size] * (total // size)
    rest = total - sum(out)
    if rest:
        out.append(rest)
    if out[-1] == 1:
        if len(out) == 1:
            raise ValueError("num_draws must be >= 2")
        out[-2] -= 1
        out[-1] = 2
    return out


@contextlib.contextmanager
def _frozen(*modules):
    """Parameters with ``requires_grad=False`` for the duration (NUTS, sampling)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def _threads(num_threads: int | None):
    if num_threads is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _name(obj) -> str:
    return type(obj).__name__


# ------------------------------------------------------------- importance weights

@dataclass(frozen=True)
class PointDraws:
    """Guide draws kept for a few points.

    ``latents[site]`` has shape ``(S, P, F)`` for a site inside the data plate and
    ``(S, F)`` for a global one; ``log_weight`` and ``log_lik`` have shape ``(S, P)``,
    or ``(S, 1)`` when the weights are joint over the whole data set (``joint``).
    """

    points: np.ndarray
    latents: dict[str, np.ndarray]
    local: dict[str, bool]
    log_weight: np.ndarray
    log_lik: np.ndarray
    joint: bool = False

    def select(self, points: Sequence[int]) -> PointDraws:
        """The draws of a subset of the kept points (dataset indices)."""
        where = {int(p): i for i, p in enumerate(self.points)}
        missing = [int(p) for p in points if int(p) not in where]
        if missing:
            raise DataError(f"points {missing} have no kept guide draws (kept: "
                            f"{self.points.tolist()})")
        pos = np.array([where[int(p)] for p in points], dtype=np.int64)
        lat = {k: (v[:, pos] if self.local[k] else v) for k, v in self.latents.items()}
        lw = self.log_weight if self.joint else self.log_weight[:, pos]
        ll = self.log_lik if self.joint else self.log_lik[:, pos]
        return PointDraws(np.asarray(points, dtype=np.int64), lat, dict(self.local), lw, ll,
                          self.joint)


@dataclass(frozen=True)
class ImportanceDiagnostics:
    """Per-point k-hat, IS effective sample size, log p(x) and ELBO, plus kept draws.

    Arrays have one entry per data point (``per_point``), or a single entry for the
    whole data set when the model has latents outside its ``"data"`` plate (then the
    importance weights cannot be split by point).
    """

    points: np.ndarray
    khat: np.ndarray
    ess: np.ndarray
    log_px: np.ndarray
    elbo: np.ndarray
    num_draws: int
    per_point: bool
    draws: PointDraws | None = field(default=None, repr=False)
    khat_recheck: np.ndarray | None = None
    ess_recheck: np.ndarray | None = None
    recheck_draws: int | None = None

    @property
    def threshold(self) -> float:
        return khat_threshold(self.num_draws)

    @property
    def recheck_threshold(self) -> float | None:
        return None if self.recheck_draws is None else khat_threshold(self.recheck_draws)

    @property
    def flagged(self) -> np.ndarray:
        """Points whose k-hat exceeds the threshold for ``num_draws`` (or could not be
        estimated: NaN)."""
        return ~(self.khat <= self.threshold)

    @property
    def confirmed(self) -> np.ndarray:
        """Flagged points still above the threshold after the recheck (= ``flagged``
        when there was none)."""
        if self.khat_recheck is None:
            return self.flagged
        return self.flagged & ~(self.khat_recheck <= self.recheck_threshold)

    def summary(self) -> dict:
        """Numbers for a report: k-hat quantiles, flagged points, ESS."""
        q = np.nanquantile(self.khat, [0.0, 0.5, 0.9, 1.0], method="nearest")
        out = {
            "num_points": int(len(self.points)), "num_draws": self.num_draws,
            "per_point": self.per_point, "threshold": round(self.threshold, 4),
            "khat_min": float(q[0]), "khat_median": float(q[1]), "khat_q90": float(q[2]),
            "khat_max": float(q[3]),
            "frac_khat_above_0.5": float((self.khat > 0.5).mean()),
            "frac_khat_above_0.7": float((self.khat > 0.7).mean()),
            "num_flagged": int(self.flagged.sum()),
            "flagged_points": self.points[self.flagged].tolist(),
            "ess_median": float(np.median(self.ess)), "ess_min": float(self.ess.min()),
            "log_px_mean": float(self.log_px.mean()), "elbo_mean": float(self.elbo.mean()),
        }
        if self.recheck_draws is not None:
            out.update({"recheck_draws": self.recheck_draws,
                        "recheck_threshold": round(self.recheck_threshold, 4),
                        "num_confirmed": int(self.confirmed.sum()),
                        "confirmed_points": self.points[self.confirmed].tolist()})
        return out

    def dataset(self) -> xr.Dataset:
        """The per-point summaries as an ``xr.Dataset`` over dimension ``point``."""
        data = {"khat": ("point", self.khat), "ess": ("point", self.ess),
                "log_px": ("point", self.log_px), "elbo": ("point", self.elbo),
                "flagged": ("point", self.flagged.astype(np.int8))}
        attrs = {"num_draws": self.num_draws, "khat_threshold": self.threshold,
                 "per_point": int(self.per_point), "r_eff": 1.0,
                 "ess_definition": "1 / sum of squared normalised raw importance weights",
                 "note": "point = -1 stands for the whole data set (weights joint over "
                         "points)" if not self.per_point else ""}
        if self.khat_recheck is not None:
            data["khat_recheck"] = ("point", self.khat_recheck)
            data["ess_recheck"] = ("point", self.ess_recheck)
            data["confirmed"] = ("point", self.confirmed.astype(np.int8))
            attrs.update(recheck_draws=self.recheck_draws,
                         recheck_threshold=self.recheck_threshold)
        return xr.Dataset(data, coords={"point": self.points}, attrs=attrs)


@torch.no_grad()
def _collect(model, guide, x: torch.Tensor, num_draws: int, *, keep: np.ndarray,
             batch_size: int, chunk_size: int, nesting: int | None = None):
    """Per-point statistics for every point of ``x`` and the draws of the points ``keep``.

    Returns ``(stats, per_point, draws)``; ``draws`` is None when ``keep`` is empty.
    """
    if num_draws < 2:
        raise ValueError(f"num_draws must be >= 2, got {num_draws}")
    if batch_size < 1 or chunk_size < 2:
        raise ValueError(f"batch_size must be >= 1 and chunk_size >= 2, got {batch_size} and "
                         f"{chunk_size}")
    nesting = guess_plate_nesting(model, guide, x[:2]) if nesting is None else nesting
    n = x.shape[0]
    keep = np.sort(np.asarray(keep, dtype=np.int64))
    probe = run_traces(model, guide, x[:2], num_particles=2, nesting=nesting)
    per_point = probe.per_point
    # Without per-point weights the whole data set is one importance-sampling problem.
    batches = ([(i, min(i + batch_size, n)) for i in range(0, n, batch_size)] if per_point
               else [(0, n)])
    stats: dict[str, list[np.ndarray]] = {"khat": [], "ess": [], "log_px": [], "elbo": []}
    kept: list[tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]] = []
    local: dict[str, bool] = {}
    for lo, hi in batches:
        xb = x[lo:hi]
        in_batch = keep[(keep >= lo) & (keep < hi)] - lo
        pos = torch.as_tensor(in_batch, device=x.device) if len(in_batch) else None
        lw_chunks, klw, kll = [], [], []
        klat: dict[str, list[np.ndarray]] = {}
        for k in _chunks(num_draws, chunk_size):
            tr = run_traces(model, guide, xb, num_particles=k, nesting=nesting)
            lw = tr.log_w.double()
            lw_chunks.append(lw.cpu().numpy())
            if pos is None:
                continue
            ll = sum(tr.model_terms[name] for name in tr.observed).double()
            if per_point:
                lw, ll = lw.index_select(1, pos), ll.index_select(1, pos)
            klw.append(lw.cpu().numpy())
            kll.append(ll.cpu().numpy())
            for name in tr.latents:
                vals, is_local = _site_values(tr.guide_trace.nodes[name], nesting, k)
                local[name] = is_local
                if is_local:
                    vals = vals.index_select(1, pos)
                klat.setdefault(name, []).append(vals.detach().float().cpu().numpy())
        lw_b = np.concatenate(lw_chunks, 0).T                      # (B, S), float64
        khat, ess = psis(lw_b)
        stats["khat"].append(khat)
        stats["ess"].append(ess)
        stats["log_px"].append(_logmeanexp(lw_b))
        stats["elbo"].append(lw_b.mean(-1))
        if pos is not None:
            kept.append((np.concatenate(klw, 0), np.concatenate(kll, 0),
                         {name: np.concatenate(v, 0) for name, v in klat.items()}))
    out = {key: np.concatenate(v) for key, v in stats.items()}
    draws = None
    if kept:
        latents = {name: (np.concatenate([b[2][name] for b in kept], 1) if local[name]
                          else kept[0][2][name]) for name in kept[0][2]}
        draws = PointDraws(keep, latents, local, np.concatenate([b[0] for b in kept], 1),
                           np.concatenate([b[1] for b in kept], 1), joint=not per_point)
    return out, per_point, draws


def importance_diagnostics(model, guide, x: torch.Tensor, *, num_draws: int = 1000,
                           points: int | Sequence[int] | None = 20, recheck: bool = True,
                           recheck_draws: int | None = None, batch_size: int = 50,
                           chunk_size: int = 100, seed: int | None = 0
                           ) -> ImportanceDiagnostics:
    """PSIS k-hat, IS effective sample size, log p(x) and ELBO for every point of ``x``.

    :param num_draws: S, guide draws per point.
    :param points: points whose draws are kept (a count: the first ones; or indices).
        Only these points' draws are stored; every point gets its summaries.
    :param recheck: redraw the flagged points with ``recheck_draws`` (default ``10 S``)
        draws and report their k-hat again (k-hat from S=1000 has sd about 0.1-0.15).
    :param batch_size, chunk_size: points per batch and draws per vectorised run; the
        memory of one run grows with ``batch_size * chunk_size`` (the particles it holds).

    Example::

        diag = importance_diagnostics(model, guide, data.test, num_draws=1000)
        diag.summary()["flagged_points"]
    """
    x = _check_x(x)
    n = x.shape[0]
    keep = _resolve_points(points, n)
    check_pair(model, guide, x)  # the guide must sample every latent of the model
    if seed is not None:
        torch.manual_seed(seed)
    nesting = guess_plate_nesting(model, guide, x[:2])
    with _frozen(model, guide):
        stats, per_point, draws = _collect(model, guide, x, num_draws, keep=keep,
                                           batch_size=batch_size, chunk_size=chunk_size,
                                           nesting=nesting)
    idx = np.arange(n) if per_point else np.array([-1])
    diag = ImportanceDiagnostics(idx, stats["khat"], stats["ess"], stats["log_px"],
                                 stats["elbo"], num_draws, per_point, draws)
    if not recheck or not diag.flagged.any():
        return diag
    s2 = int(recheck_draws or 10 * num_draws)
    flagged = np.flatnonzero(diag.flagged)
    xf = x[torch.as_tensor(flagged, device=x.device)] if per_point else x
    with _frozen(model, guide):
        stats2, _, _ = _collect(model, guide, xf, s2, keep=np.arange(0), batch_size=batch_size,
                                chunk_size=chunk_size, nesting=nesting)
    k2 = np.full(len(idx), np.nan)
    e2 = np.full(len(idx), np.nan)
    k2[flagged], e2[flagged] = stats2["khat"], stats2["ess"]
    return ImportanceDiagnostics(idx, diag.khat, diag.ess, diag.log_px, diag.elbo, num_draws,
                                 per_point, draws, k2, e2, s2)


def _check_x(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"data must be a torch.Tensor of shape (num_points, ...), got "
                        f"{type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise DataError(f"data must hold at least one point, got shape {tuple(x.shape)}")
    return x


# ------------------------------------------------------------------ NUTS reference

@dataclass(frozen=True)
class NutsConfig:
    """Settings of the NUTS reference (Pyro's ``NUTS`` kernel in ``MCMC``).

    Chains run one after another, each from its own random start (``init_to_uniform``
    with ``init_radius`` in the unconstrained space), so that R-hat compares
    independent chains.  ``num_threads`` limits torch's intra-op threads while
    sampling (1 is fastest for the tiny tensors of one point; None leaves it alone).
    """

    num_chains: int = 4
    num_samples: int = 200
    warmup: int = 200
    max_tree_depth: int = 8
    target_accept: float = 0.8
    init_radius: float = 2.0
    num_threads: int | None = 1
    jit_compile: bool = False

    def __post_init__(self):
        if self.num_chains < 1 or self.num_samples < 4 or self.warmup < 0:
            raise ValueError(f"NUTS needs num_chains >= 1, num_samples >= 4 and warmup >= 0; "
                             f"got {self.num_chains}, {self.num_samples}, {self.warmup}")


@dataclass(frozen=True)
class NutsReference:
    """NUTS draws of the latents for chosen points, with ESS and R-hat of the chains.

    ``draws[site]`` has shape ``(chain, draw, P, F)`` for sites inside the data plate
    (P = ``len(points)``) and ``(chain, draw, F)`` for global sites; ``ess`` and
    ``rhat`` have the same shapes without ``(chain, draw)``.  ``conditioned_on_all``
    is True when the model has global latents, so NUTS conditioned on every point.
    """

    points: np.ndarray
    draws: dict[str, np.ndarray]
    local: dict[str, bool]
    ess: dict[str, np.ndarray]
    rhat: dict[str, np.ndarray]
    divergences: list[int]
    seconds: float
    config: NutsConfig
    conditioned_on_all: bool

    def summary(self) -> dict:
        return {"points": self.points.tolist(), "num_chains": self.config.num_chains,
                "num_samples": self.config.num_samples, "warmup": self.config.warmup,
                "min_ess": float(min(v.min() for v in self.ess.values())),
                "max_rhat": float(max(v.max() for v in self.rhat.values())),
                "divergences": int(sum(self.divergences)), "seconds": round(self.seconds, 1)}

    def dataset(self) -> xr.Dataset:
        data = {}
        for name, v in self.draws.items():
            dims = _dims(name, self.local[name], v.shape[-1])
            data[name] = (("chain", "draw", *dims), _squeeze_feature(v))
            data[f"{name}_ess"] = (dims, _squeeze_feature(self.ess[name]))
            data[f"{name}_rhat"] = (dims, _squeeze_feature(self.rhat[name]))
        attrs = {"method": "NUTS (pyro.infer.MCMC)", "num_chains": self.config.num_chains,
                 "num_samples": self.config.num_samples, "warmup": self.config.warmup,
                 "divergences": int(sum(self.divergences)),
                 "conditioned_on_all_points": int(self.conditioned_on_all),
                 "seconds": float(self.seconds)}
        return xr.Dataset(data, coords=_coords(self.draws, self.local, self.points), attrs=attrs)


def _dims(name: str, local: bool, num_features: int) -> tuple[str, ...]:
    feat = () if num_features == 1 else (f"{name}_dim",)
    return (("point",) if local else ()) + feat


def _squeeze_feature(v: np.ndarray) -> np.ndarray:
    return v[..., 0] if v.shape[-1] == 1 else v


def _coords(arrays: Mapping[str, np.ndarray], local: Mapping[str, bool], points) -> dict:
    coords = {"point": np.asarray(points)}
    for name, v in arrays.items():
        if v.shape[-1] > 1:
            coords[f"{name}_dim"] = np.arange(v.shape[-1])
    return coords


def _model_sites(model, x: torch.Tensor) -> dict[str, dict]:
    with torch.no_grad():
        tr = poutine.trace(model).get_trace(x)
    return {name: tr.nodes[name] for name in latent_sites(tr)}


def _check_continuous(model, sites: Mapping[str, dict]) -> None:
    for name, site in sites.items():
        fn = site["fn"]
        if fn.support.is_discrete and site["infer"].get("enumerate") is None:
            base = getattr(fn, "base_dist", fn)
            raise IncompatibleEstimatorError(
                f"NUTS needs continuous latents, but site {name!r} of model {_name(model)} "
                f"is discrete ({type(base).__name__}, support {fn.support}). Use the "
                f"importance-sampling diagnostics (importance_diagnostics: PSIS k-hat and "
                f"ESS per point) and sbc(), or sum the site out by enumeration: mark it "
                f"with infer={{'enumerate': 'parallel'}} (Pyro's NUTS then enumerates it), "
                f"or compute log p(x) exactly if the model can enumerate its latents")


def nuts_reference(model, x: torch.Tensor, points: Sequence[int], *,
                   config: NutsConfig | None = None, seed: int = 0) -> NutsReference:
    """Reference posterior draws by NUTS for the data points ``points`` of ``x``.

    When every latent lives inside the model's ``"data"`` plate, the posterior factorises
    over points and NUTS conditions on ``x[points]`` only (one joint run per chain).
    Otherwise (global latents, e.g. :class:`~ppl_dgm.models.Hierarchical`) it conditions
    on all of ``x`` and reports the global sites and the chosen points' local sites.

    Raises :class:`~ppl_dgm.errors.IncompatibleEstimatorError` for a discrete latent
    (NUTS needs gradients) and :class:`~ppl_dgm.errors.DataError` for bad indices.

    Example::

        ref = nuts_reference(model, data.test, [0, 5, 9], config=NutsConfig(num_chains=4))
        ref.summary()["max_rhat"]
    """
    from pyro.infer import MCMC, NUTS
    from pyro.infer.autoguide.initialization import init_to_uniform

    config = config or NutsConfig()
    x = _check_x(x)
    pts = check_points(points, x.shape[0])
    if pts.size == 0:
        raise DataError("nuts_reference needs at least one point index")
    sites = _model_sites(model, x[:min(2, x.shape[0])])
    _check_continuous(model, sites)
    local = {name: _data_frame(site) is not None for name, site in sites.items()}
    conditioned_on_all = not all(local.values())
    xc = x if conditioned_on_all else x[torch.as_tensor(pts, device=x.device)]
    sel = torch.as_tensor(pts if conditioned_on_all else np.arange(len(pts)), device=x.device)
    chains: dict[str, list[np.ndarray]] = {name: [] for name in sites}
    divergences = []
    t0 = time.perf_counter()
    with _frozen(model), _threads(config.num_threads), pyro.validation_enabled(False):
        for c in range(config.num_chains):
            pyro.set_rng_seed(seed * 1000 + c)
            kernel = NUTS(model, init_strategy=init_to_uniform(radius=config.init_radius),
                          max_tree_depth=config.max_tree_depth,
                          target_accept_prob=config.target_accept,
                          jit_compile=config.jit_compile, ignore_jit_warnings=True)
            mcmc = MCMC(kernel, num_samples=config.num_samples, warmup_steps=config.warmup,
                        num_chains=1, disable_progbar=True)
            mcmc.run(xc)
            samples = mcmc.get_samples()
            for name, site in sites.items():
                v = samples[name].detach()
                # (draw, *batch, *event): one more leading dim than the site had
                site_like = dict(site, value=v)
                vals, is_local = _site_values(site_like, _plate_depth(site), v.shape[0])
                if is_local:
                    vals = vals.index_select(1, sel.to(vals.device))
                chains[name].append(vals.float().cpu().numpy())
            div = mcmc.diagnostics().get("divergences", {})
            divergences.append(int(sum(len(v) for v in div.values())))
    seconds = time.perf_counter() - t0
    draws = {name: np.stack(v, 0) for name, v in chains.items()}
    ess = {name: _arviz.ess(v) for name, v in draws.items()}
    rhat = ({name: _arviz.rhat(v) for name, v in draws.items()} if config.num_chains > 1
            else {name: np.full(v.shape[2:], np.nan) for name, v in draws.items()})
    return NutsReference(pts, draws, local, ess, rhat, divergences, seconds, config,
                         conditioned_on_all)


def _plate_depth(site: dict) -> int:
    """The number of batch dims of a site as the unvectorised model traced it."""
    return len(site["fn"].batch_shape)


@dataclass(frozen=True)
class GuideVsReference:
    """Moments of guide draws against reference (NUTS) draws, per site, point, feature.

    ``mean_diff_sd`` is ``(guide mean - NUTS mean) / NUTS sd`` and ``sd_ratio`` is
    ``guide sd / NUTS sd``; ``mcse`` is the Monte Carlo error of the NUTS mean,
    ``sd / sqrt(ESS)``.  A good guide has ``|mean_diff_sd|`` small and ``sd_ratio``
    near 1; a mean-field guide typically has ``sd_ratio < 1``.
    """

    points: np.ndarray
    guide: PointDraws = field(repr=False)
    reference: NutsReference = field(repr=False)
    moments: xr.Dataset = field(repr=False)

    def rows(self) -> list[dict]:
        """One row per (site, point, feature), for printing."""
        out = []
        for name in self.reference.draws:
            g = self.moments[f"{name}_guide_mean"]
            for idx in np.ndindex(g.shape):
                row = {"site": name}
                for dim, i in zip(g.dims, idx):
                    row[dim] = int(g[dim].values[i]) if dim in g.coords else i
                for stat in ("guide_mean", "nuts_mean", "nuts_mcse", "guide_sd", "nuts_sd",
                             "mean_diff_sd", "sd_ratio", "nuts_rhat", "nuts_ess"):
                    row[stat] = float(self.moments[f"{name}_{stat}"].values[idx])
                out.append(row)
        return out


def compare_to_reference(guide_draws: PointDraws, reference: NutsReference) -> GuideVsReference:
    """Compare guide draws with NUTS draws for the reference's points (moments)."""
    g = guide_draws.select(reference.points) if len(reference.points) else guide_draws
    data = {}
    for name, ref in reference.draws.items():
        if name not in g.latents:
            raise DataError(f"the guide draws have no site {name!r} (they have "
                            f"{sorted(g.latents)})")
        q = g.latents[name].astype(np.float64)                 # (S, [P], F)
        r = ref.reshape(-1, *ref.shape[2:]).astype(np.float64)  # (C*D, [P], F)
        dims = _dims(name, reference.local[name], ref.shape[-1])
        stats = {
            "guide_mean": q.mean(0), "guide_sd": q.std(0, ddof=1),
            "nuts_mean": r.mean(0), "nuts_sd": r.std(0, ddof=1),
        }
        stats["nuts_mcse"] = stats["nuts_sd"] / np.sqrt(reference.ess[name])
        stats["mean_diff_sd"] = (stats["guide_mean"] - stats["nuts_mean"]) / stats["nuts_sd"]
        stats["sd_ratio"] = stats["guide_sd"] / stats["nuts_sd"]
        stats["nuts_rhat"] = reference.rhat[name]
        stats["nuts_ess"] = reference.ess[name]
        for key, value in stats.items():
            data[f"{name}_{key}"] = (dims, _squeeze_feature(np.asarray(value)))
    ds = xr.Dataset(data, coords=_coords(reference.draws, reference.local, reference.points))
    return GuideVsReference(reference.points, g, reference, ds)


# ------------------------------------------------------ simulation-based calibration

@dataclass(frozen=True)
class SBCResult:
    """Ranks of true latents among guide draws, with a uniformity test.

    ``ranks`` has shape ``(num_simulations, num_dims)`` with values in ``0..num_draws``;
    for the exact posterior they are uniform.  ``chi2`` and ``p_values`` are per
    dimension (ranks in ``num_bins`` equal bins); ``p_value`` is their Bonferroni
    combination ``min(1, d * min p)``; ``uniform`` is ``p_value >= alpha``.
    """

    ranks: np.ndarray
    num_draws: int
    dim_names: list[str]
    num_bins: int
    chi2: np.ndarray
    p_values: np.ndarray
    alpha: float

    @property
    def p_value(self) -> float:
        return float(min(1.0, len(self.p_values) * self.p_values.min()))

    @property
    def uniform(self) -> bool:
        return self.p_value >= self.alpha

    def summary(self) -> dict:
        return {"num_simulations": int(self.ranks.shape[0]), "num_draws": self.num_draws,
                "num_dims": len(self.dim_names), "num_bins": self.num_bins,
                "p_value": self.p_value, "min_dim_p": float(self.p_values.min()),
                "alpha": self.alpha, "uniform": self.uniform}

    def dataset(self) -> xr.Dataset:
        return xr.Dataset(
            {"rank": (("simulation", "sbc_dim"), self.ranks),
             "chi2": ("sbc_dim", self.chi2), "p_value": ("sbc_dim", self.p_values)},
            coords={"sbc_dim": self.dim_names},
            attrs={"num_draws": self.num_draws, "num_bins": self.num_bins,
                   "combined_p_value": self.p_value, "alpha": self.alpha,
                   "uniform": int(self.uniform),
                   "test": "chi-square on binned ranks per dimension, Bonferroni-combined"})


def rank_uniformity(ranks: np.ndarray, num_draws: int, *, num_bins: int = 20
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Chi-square statistics and p-values of ranks ``(n, d)`` in ``0..num_draws``
    against the discrete uniform, with ranks pooled into ``num_bins`` equal bins."""
    levels = num_draws + 1
    if levels % num_bins:
        raise ValueError(f"num_bins={num_bins} must divide num_draws + 1 = {levels} so that "
                         f"every bin holds the same number of rank values; e.g. num_draws="
                         f"{num_bins * max(1, round(levels / num_bins)) - 1}")
    n = ranks.shape[0]
    bins = ranks // (levels // num_bins)
    counts = np.stack([np.bincount(bins[:, j], minlength=num_bins) for j in
                       range(ranks.shape[1])], 1)
    expected = n / num_bins
    chi2 = ((counts - expected) ** 2 / expected).sum(0)
    return chi2, sps.chi2.sf(chi2, num_bins - 1)


def _ranks(true: np.ndarray, draws: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rank of ``true (..., F)`` among ``draws (L, ..., F)``; ties broken at random."""
    below = (draws < true).sum(0)
    ties = (draws == true).sum(0)
    return below + (rng.integers(0, ties + 1) if ties.any() else 0)


@torch.no_grad()
def sbc(model, guide, *, num_simulations: int = 1000, num_draws: int = 99, num_bins: int = 20,
        dataset_size: int = 8, batch_size: int = 250, alpha: float = 0.01,
        seed: int | None = 0) -> SBCResult:
    """Simulation-based calibration of an amortised guide (Talts et al. 2018).

    Draw ``(h*, x)`` from the model, ``num_draws`` draws ``h_l ~ q(h | x)``, and record
    the rank of ``h*`` among them per latent dimension.  When every latent lies inside
    the ``"data"`` plate, one batched simulation of ``num_simulations`` points gives
    ``num_simulations`` independent replicates.  With global latents, each replicate is
    a data set of ``dataset_size`` points; its global latents and the local latents of
    its first point are ranked.

    With ``num_simulations / num_bins >= 5`` the chi-square approximation holds; under
    uniform ranks each per-dimension test rejects with probability ``alpha / d``.

    SBC checks amortisation: the guide must map every simulated ``x`` to its posterior.
    A guide whose global factors are free parameters fitted to one data set (such as
    :class:`~ppl_dgm.guides.HierarchicalGuide`) is not amortised over data sets, and SBC
    rejects it whatever its quality on that data set; compare it with NUTS instead.

    Example::

        res = sbc(model, guide, num_simulations=1000, num_draws=99)
        res.uniform, res.p_value
    """
    if num_simulations < num_bins * 5:
        raise ValueError(f"num_simulations={num_simulations} is too few for {num_bins} bins; "
                         f"use at least {num_bins * 5} (5 expected per bin)")
    rank_uniformity(np.zeros((1, 1), dtype=np.int64), num_draws, num_bins=num_bins)
    if seed is not None:
        torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    with _frozen(model, guide), pyro.validation_enabled(False):
        tr0 = poutine.trace(model).get_trace(None, batch_size=2)
        names = [name for name in latent_sites(tr0) if name != OBS_SITE]
        if not names:
            raise DataError(f"model {_name(model)} has no latent sites to calibrate")
        nesting = guess_plate_nesting(model, guide, tr0.nodes[OBS_SITE]["value"])
        all_local = all(_data_frame(tr0.nodes[n]) is not None for n in names)
        rows: list[np.ndarray] = []
        dim_names: list[str] | None = None
        if all_local:
            done = 0
            while done < num_simulations:
                b = min(batch_size, num_simulations - done)
                r, dn = _sbc_batch(model, guide, b, num_draws, nesting, names, rng, first=None)
                rows.append(r)
                dim_names = dn
                done += b
        else:
            for _ in range(num_simulations):
                r, dn = _sbc_batch(model, guide, dataset_size, num_draws, nesting, names, rng,
                                   first=0)
                rows.append(r)
                dim_names = dn
    ranks = np.concatenate(rows, 0)
    chi2, p = rank_uniformity(ranks, num_draws, num_bins=num_bins)
    return SBCResult(ranks, num_draws, dim_names, num_bins, chi2, p, alpha)


def _sbc_batch(model, guide, n: int, num_draws: int, nesting: int, names, rng, first):
    tr = poutine.trace(model).get_trace(None, batch_size=n)
    x = tr.nodes[OBS_SITE]["value"]
    with pyro.plate(PARTICLE_PLATE, num_draws, dim=-(nesting + 1)):
        gtr = poutine.trace(guide).get_trace(x)
    cols, dim_names = [], []
    for name in names:
        true, is_local = _site_values(tr.nodes[name], nesting, 1)
        draws, _ = _site_values(gtr.nodes[name], nesting, num_draws)
        true = true[0].cpu().numpy()
        draws = draws.cpu().numpy()
        if is_local and first is not None:
            true, draws = true[first:first + 1], draws[:, first:first + 1]
        r = _ranks(true, draws, rng)
        if not is_local:
            r = r[None]
        cols.append(r.reshape(r.shape[0], -1))
        width = r.reshape(r.shape[0], -1).shape[1]
        dim_names += [name] if width == 1 else [f"{name}[{i}]" for i in range(width)]
    return np.concatenate(cols, 1), dim_names


# ------------------------------------------------------------- model comparison

@dataclass(frozen=True)
class ModelComparison:
    """Held-out log p(x) per point for several models, with paired differences.

    ``rows`` are sorted best first; each has the mean log p(x) (nats per point), its
    standard error ``sd / sqrt(N)``, and the mean and standard error of the per-point
    difference to the best model (paired: the same points, so the between-point spread
    cancels).  ``method[name]`` is ``"exact"`` or ``"is-K"`` (an importance-sampling
    estimate with K draws: a stochastic lower bound).
    """

    log_px: dict[str, np.ndarray] = field(repr=False)
    method: dict[str, str]
    rows: list[dict]

    def dataset(self) -> xr.Dataset:
        names = [r["name"] for r in self.rows]
        return xr.Dataset({"log_px": (("model", "point"), np.stack([self.log_px[n]
                                                                     for n in names]))},
                          coords={"model": names},
                          attrs={"method": ", ".join(f"{n}: {self.method[n]}" for n in names)})


@torch.no_grad()
def compare_models(candidates: Mapping[str, tuple], x: torch.Tensor, *, num_samples: int = 1000,
                   exact: bool = True, seed: int | None = 0) -> ModelComparison:
    """Compare ``{name: (model, guide)}`` on held-out points ``x`` by per-point log p(x).

    Uses the model's exact ``log_prob`` where it has one (and ``exact``), else
    importance sampling with the guide and ``num_samples`` draws.

    Example::

        cmp = compare_models({"z=8": (m8, g8), "z=2": (m2, g2)}, data.test)
        for row in cmp.rows: print(row)
    """
    x = _check_x(x)
    if len(candidates) < 1:
        raise ValueError("compare_models needs at least one (model, guide) pair")
    log_px, method = {}, {}
    for name, (model, guide) in candidates.items():
        if seed is not None:
            torch.manual_seed(seed)
        value = exact_log_prob(model, x) if exact else None
        if value is not None:
            method[name] = "exact"
        else:
            value = importance_log_likelihood(model, guide, x, num_samples=num_samples)
            method[name] = f"is-{num_samples}"
        log_px[name] = value.double().cpu().numpy()
    n = x.shape[0]
    means = {k: float(v.mean()) for k, v in log_px.items()}
    order = sorted(means, key=means.get, reverse=True)
    best = log_px[order[0]]
    rows = []
    for name in order:
        v = log_px[name]
        d = v - best
        se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        d_se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        rows.append({"name": name, "method": method[name], "mean": means[name], "se": se,
                     "diff": float(d.mean()), "diff_se": d_se,
                     "z": float(d.mean() / d_se) if d_se and d_se > 0 else 0.0})
    return ModelComparison(log_px, method, rows)


# ------------------------------------------------------------- ArviZ data and export

def _draw_groups(draws: PointDraws, x: torch.Tensor | None) -> dict[str, xr.Dataset]:
    coords = _coords(draws.latents, draws.local, draws.points)
    post = {}
    for name, v in draws.latents.items():
        dims = _dims(name, draws.local[name], v.shape[-1])
        post[name] = (("chain", "draw", *dims), _squeeze_feature(v)[None])
    joint = draws.joint
    wdims = ("chain", "draw") if joint else ("chain", "draw", "point")
    lw = draws.log_weight[None] if not joint else draws.log_weight[None, :, 0]
    ll = draws.log_lik[None] if not joint else draws.log_lik[None, :, 0]
    groups = {
        "posterior": xr.Dataset(post, coords=coords, attrs={
            "source": "guide q(h | x): independent draws, so their ESS and R-hat say nothing "
                      "about the guide's quality"}),
        "log_likelihood": xr.Dataset({OBS_SITE: (wdims, ll)}, coords={"point": draws.points}
                                     if not joint else None),
        "sample_stats": xr.Dataset({"log_weight": (wdims, lw)},
                                   coords={"point": draws.points} if not joint else None,
                                   attrs={"log_weight": "log p(x, h) - log q(h | x)"}),
    }
    if x is not None:
        xs = x[torch.as_tensor(draws.points, device=x.device)].reshape(len(draws.points), -1)
        groups["observed_data"] = xr.Dataset(
            {OBS_SITE: (("point", f"{OBS_SITE}_dim"), xs.detach().cpu().numpy())},
            coords={"point": draws.points})
    return groups


def _inference_data(x, importance: ImportanceDiagnostics | None = None,
                    reference: NutsReference | None = None,
                    comparison: GuideVsReference | None = None, sbc_result: SBCResult | None = None,
                    models: ModelComparison | None = None, attrs: dict | None = None):
    groups: dict[str, xr.Dataset] = {}
    if importance is not None:
        if importance.draws is not None:
            groups.update(_draw_groups(importance.draws, x))
        groups["point_diagnostics"] = importance.dataset()
    if reference is not None:
        groups["reference_posterior"] = reference.dataset()
    if comparison is not None:
        groups["guide_vs_reference"] = comparison.moments
    if sbc_result is not None:
        groups["sbc"] = sbc_result.dataset()
    if models is not None:
        groups["model_comparison"] = models.dataset()
    base = {"created_by": "ppl_dgm.diagnostics", "arviz_version": _arviz.ARVIZ_VERSION}
    base.update(attrs or {})
    return _arviz.inference_data(groups, attrs=base)


def to_inference_data(model, guide, data: torch.Tensor, *, points: int | Sequence[int] = 20,
                      num_draws: int = 1000, recheck: bool = False,
                      recheck_draws: int | None = None, batch_size: int = 50,
                      chunk_size: int = 100, seed: int | None = 0):
    """ArviZ data for a model and guide on ``data``.

    Groups (named dims ``chain``, ``draw``, ``point`` whose coordinate is the index in
    ``data``, and ``<site>_dim`` for vector latents):

    * ``posterior``: guide draws of every latent for the chosen ``points``
      (``chain`` has length 1: guide draws are independent);
    * ``log_likelihood`` (``x``: log p(x_i | h)) and ``sample_stats``
      (``log_weight``: log p(x_i, h) - log q(h | x_i)) for those points;
    * ``observed_data``: the chosen points;
    * ``point_diagnostics``: k-hat, ESS, log p(x), ELBO and the flag for *every* point.

    Draws are stored only for ``points`` (see the module docstring on memory).  Returns
    ``az.InferenceData`` with arviz 0.23 and ``xr.DataTree`` with arviz >= 1.

    Example::

        idata = to_inference_data(model, guide, data.test, points=[0, 1, 2])
        save_netcdf(idata, "diag.nc")
    """
    diag = importance_diagnostics(model, guide, data, num_draws=num_draws, points=points,
                                  recheck=recheck, recheck_draws=recheck_draws,
                                  batch_size=batch_size, chunk_size=chunk_size, seed=seed)
    return _inference_data(data, diag, attrs={"num_draws": num_draws})


def save_netcdf(idata, path: str | Path) -> Path:
    """Write ArviZ data (either version) to a NetCDF file."""
    return _arviz.to_netcdf(idata, path)


def load_netcdf(path: str | Path):
    """Read a NetCDF file written by :func:`save_netcdf`."""
    if not Path(path).is_file():
        raise DataError(f"no NetCDF file at {str(path)!r}")
    return _arviz.from_netcdf(path)


# ------------------------------------------------------------------- one call

@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`diagnose` computed, and the ArviZ data holding it."""

    importance: ImportanceDiagnostics
    reference: NutsReference | None
    comparison: GuideVsReference | None
    sbc: SBCResult | None
    models: ModelComparison | None
    idata: object = field(repr=False)

    def summary(self) -> dict:
        out = {"importance": self.importance.summary()}
        if self.reference is not None:
            out["nuts"] = self.reference.summary()
        if self.comparison is not None:
            rows = self.comparison.rows()
            out["guide_vs_nuts"] = {
                "max_abs_mean_diff_sd": max(abs(r["mean_diff_sd"]) for r in rows),
                "median_sd_ratio": float(np.median([r["sd_ratio"] for r in rows]))}
        if self.sbc is not None:
            out["sbc"] = self.sbc.summary()
        if self.models is not None:
            out["models"] = self.models.rows
        return out

    def save(self, out_dir: str | Path, *, plots: bool = True) -> dict[str, Path]:
        """Write ``diagnostics.nc`` and the PNG plots into ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"netcdf": save_netcdf(self.idata, out / "diagnostics.nc")}
        if plots:
            from .diagnostics_plots import save_plots
            paths.update(save_plots(self, out))
        return paths


def select_nuts_points(diag: ImportanceDiagnostics, count: int) -> np.ndarray:
    """``count`` of the kept points, spread over their k-hat ranking (worst first, then
    evenly down to the best), so that NUTS sees both suspicious and healthy points."""
    if diag.draws is None or count <= 0:
        return np.arange(0)
    kept = diag.draws.points
    if not diag.per_point:
        return kept[:count]
    order = kept[np.argsort(-diag.khat[kept], kind="stable")]
    if count >= len(order):
        return order
    return order[np.unique(np.round(np.linspace(0, len(order) - 1, count)).astype(int))]


def diagnose(model, guide, x: torch.Tensor, *, points: int | Sequence[int] = 20,
             num_draws: int = 1000, recheck: bool = True, recheck_draws: int | None = None,
             nuts_points: int | Sequence[int] = 0, nuts: NutsConfig | None = None,
             sbc_simulations: int = 0, sbc_draws: int = 99,
             compare_with: Mapping[str, tuple] | None = None, batch_size: int = 50,
             chunk_size: int = 100, seed: int | None = 0) -> Diagnosis:
    """Run the diagnostics on held-out ``x`` and collect them in ArviZ data.

    :param points: points whose guide draws are kept (count or indices).
    :param nuts_points: a count (chosen among ``points`` by :func:`select_nuts_points`)
        or indices (added to ``points``) for the NUTS reference; 0 for none.
    :param sbc_simulations: SBC replicates (0: skip).
    :param compare_with: other ``{name: (model, guide)}`` to compare with this one on
        held-out log p(x) (this one is named ``"this"``).

    Example::

        d = diagnose(model, guide, data.test, points=20, nuts_points=4)
        d.save("runs/vae/diagnostics")
    """
    x = _check_x(x)
    n = x.shape[0]
    keep = _resolve_points(points, n)
    explicit_nuts = None
    if not isinstance(nuts_points, (int, np.integer)):
        explicit_nuts = check_points(nuts_points, n, what="NUTS points")
        keep = np.union1d(keep, explicit_nuts)
    want_nuts = (len(explicit_nuts) > 0 if explicit_nuts is not None
                 else int(nuts_points or 0) > 0)
    if want_nuts:  # fail before any work for a model NUTS cannot handle
        _check_continuous(model, _model_sites(model, x[:min(2, n)]))
    imp = importance_diagnostics(model, guide, x, num_draws=num_draws, points=keep,
                                 recheck=recheck, recheck_draws=recheck_draws,
                                 batch_size=batch_size, chunk_size=chunk_size, seed=seed)
    reference = comparison = None
    chosen = explicit_nuts if explicit_nuts is not None else select_nuts_points(
        imp, int(nuts_points or 0))
    if len(chosen):
        reference = nuts_reference(model, x, chosen, config=nuts, seed=seed or 0)
        comparison = compare_to_reference(imp.draws, reference)
    sbc_result = None
    if sbc_simulations:
        sbc_result = sbc(model, guide, num_simulations=sbc_simulations, num_draws=sbc_draws,
                         num_bins=_bins_for(sbc_draws, sbc_simulations), seed=seed)
    models = None
    if compare_with:
        models = compare_models({"this": (model, guide), **dict(compare_with)}, x,
                                num_samples=num_draws, seed=seed)
    idata = _inference_data(x, imp, reference, comparison, sbc_result, models,
                            attrs={"num_draws": num_draws})
    return Diagnosis(imp, reference, comparison, sbc_result, models, idata)


def _bins_for(num_draws: int, num_simulations: int) -> int:
    """The most equal bins (at most 20) that divide ``num_draws + 1`` and leave >= 5
    expected ranks per bin."""
    for b in range(min(20, num_draws + 1), 1, -1):
        if (num_draws + 1) % b == 0 and num_simulations / b >= 5:
            return b
    raise ValueError(f"no binning of {num_draws + 1} rank values leaves 5 expected ranks per "
                     f"bin with {num_simulations} simulations; use more simulations or "
                     f"sbc_draws + 1 with small divisors (e.g. 99 or 199)")
