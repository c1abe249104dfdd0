"""Simulation-based calibration of an amortised guide (Talts et al. 2018).

The rank of the true latent among guide draws, for data simulated from the model, is
uniform when the guide is the posterior; :func:`sbc` records the ranks and
:func:`rank_uniformity` tests them with a chi-square test per dimension
(Bonferroni-combined).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyro
import torch
import xarray as xr
from pyro import poutine
from scipy import stats as sps

from ..errors import DataError
from ..programs import simulate
from ..traces import PARTICLE_PLATE, data_frame, guess_plate_nesting, latent_sites
from ._common import _frozen, _name, _site_values

__all__ = ["SBCResult", "rank_uniformity", "sbc"]


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
        seed: int | None = 0, template: torch.Tensor | None = None) -> SBCResult:
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

    A model that is not called as ``model(None, batch_size=n)`` (any Pyro program)
    simulates with its observed sites unconditioned on rows of ``template`` data.

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
        sim0 = _simulate(model, 2, template)
        tr0 = sim0.trace
        names = [name for name in latent_sites(tr0) if name not in sim0.observed]
        if not names:
            raise DataError(f"model {_name(model)} has no latent sites to calibrate")
        nesting = guess_plate_nesting(model, guide, sim0.x)
        all_local = all(data_frame(tr0.nodes[n], sim0.plate) is not None for n in names)
        rows: list[np.ndarray] = []
        dim_names: list[str] | None = None
        if all_local:
            done = 0
            while done < num_simulations:
                b = min(batch_size, num_simulations - done)
                r, dn = _sbc_batch(model, guide, b, num_draws, nesting, names, rng, first=None,
                                   template=template)
                rows.append(r)
                dim_names = dn
                done += b
        else:
            for _ in range(num_simulations):
                r, dn = _sbc_batch(model, guide, dataset_size, num_draws, nesting, names, rng,
                                   first=0, template=template)
                rows.append(r)
                dim_names = dn
    ranks = np.concatenate(rows, 0)
    chi2, p = rank_uniformity(ranks, num_draws, num_bins=num_bins)
    return SBCResult(ranks, num_draws, dim_names, num_bins, chi2, p, alpha)


def _simulate(model, n: int, template):
    try:
        return simulate(model, n, template=template)
    except ValueError as e:
        raise DataError(f"sbc simulates data sets from the model: {e}") from e


def _sbc_batch(model, guide, n: int, num_draws: int, nesting: int, names, rng, first,
               template=None):
    sim = _simulate(model, n, template)
    tr, x = sim.trace, sim.x
    with pyro.plate(PARTICLE_PLATE, num_draws, dim=-(nesting + 1)):
        gtr = poutine.trace(guide).get_trace(x)
    cols, dim_names = [], []
    for name in names:
        true, is_local = _site_values(tr.nodes[name], nesting, 1, sim.plate)
        draws, _ = _site_values(gtr.nodes[name], nesting, num_draws, sim.plate)
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


def _bins_for(num_draws: int, num_simulations: int) -> int:
    """The most equal bins (at most 20) that divide ``num_draws + 1`` and leave >= 5
    expected ranks per bin."""
    for b in range(min(20, num_draws + 1), 1, -1):
        if (num_draws + 1) % b == 0 and num_simulations / b >= 5:
            return b
    raise ValueError(f"no binning of {num_draws + 1} rank values leaves 5 expected ranks per "
                     f"bin with {num_simulations} simulations; use more simulations or "
                     f"sbc_draws + 1 with small divisors (e.g. 99 or 199)")
