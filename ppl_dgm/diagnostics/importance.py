"""PSIS k-hat and importance-sampling ESS per data point, with the guide as proposal.

The importance weights ``log w = log p(x, h) - log q(h | x)`` come from vectorised
particles through :func:`~ppl_dgm.particles.run_particles` (one by one for programs
that cannot be vectorised).  Per point they give the PSIS
shape ``k-hat`` (Vehtari et al. 2024, float64, relative efficiency 1 because guide
draws are independent) and the importance-sampling effective sample size
``1 / sum(w_norm^2)``.  A point is flagged when ``k-hat`` exceeds the
sample-size-aware threshold ``min(1 - 1/log10 S, 0.7)``; ``k-hat`` from 1000 draws is
noisy (sd about 0.1-0.15), so flagged points can be rechecked with more draws.

**Memory.**  Per-point summaries (k-hat, ESS, log p(x), ELBO) are kept for every
point; the draws themselves (latents, log weights, log-likelihoods) only for the few
points in ``points``.  Points are processed in batches of ``batch_size`` (50) and draws
in vectorised chunks of ``chunk_size`` (100), so 1000 points x 1000 draws x 64 latent
dimensions (256 MB as float32) are never held at once: one run holds ``batch_size x
chunk_size`` particles, and the k-hat of a batch needs only its ``(batch_size, S)``
float64 log weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from .. import _arviz
from ..checks import check_pair
from ..errors import DataError
from ..particles import run_particles
from ..traces import guess_plate_nesting
from ._common import _check_x, _frozen, _site_values

__all__ = [
    "CONSTANT_TOL",
    "ImportanceDiagnostics",
    "PointDraws",
    "check_points",
    "importance_diagnostics",
    "khat_threshold",
    "psis",
]


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
    probe = run_particles(model, guide, x[:2], num_particles=2, nesting=nesting)
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
            tr = run_particles(model, guide, xb, num_particles=k, nesting=nesting)
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
                site = dict(tr.guide_trace.nodes[name], value=tr.site_values(name))
                vals, is_local = _site_values(site, nesting, k, tr.data_plate)
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
