"""All the diagnostics in one call: :func:`diagnose` runs those asked for on held-out
data and returns a :class:`Diagnosis` with their results and the ArviZ data holding
them; :func:`select_nuts_points` picks the points that NUTS rechecks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ._common import _check_x
from .export import _inference_data, save_netcdf
from .importance import (
    ImportanceDiagnostics,
    _resolve_points,
    check_points,
    importance_diagnostics,
)
from .model_comparison import ModelComparison, compare_models
from .nuts import (
    GuideVsReference,
    NutsConfig,
    NutsReference,
    _check_continuous,
    _model_sites,
    compare_to_reference,
    nuts_reference,
)
from .sbc import SBCResult, _bins_for, sbc

__all__ = ["Diagnosis", "diagnose", "select_nuts_points"]


@dataclass(frozen=True)
class Diagnosis:
    """Everything :func:`diagnose` computed, and the ArviZ data holding it."""

    importance: ImportanceDiagnostics
    reference: NutsReference | None
    comparison: GuideVsReference | None
    sbc: SBCResult | None
    models: ModelComparison | None
    idata: object = field(repr=False)
    data: object = field(default=None, repr=False)  # the diagnosed points, for the report

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

    def save(self, out_dir: str | Path, *, plots: bool = True, report: bool = True,
             **report_options) -> dict[str, Path]:
        """Write ``diagnostics.nc``, the PNG plots and ``report.html`` into ``out_dir``
        (``report_options``: ``command``, ``title``, ``settings``, ``image_shape`` of
        :func:`ppl_dgm.report.diagnosis_report_html`)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        paths = {"netcdf": save_netcdf(self.idata, out / "diagnostics.nc")}
        if plots:
            from .plots import save_plots
            paths.update(save_plots(self, out))
        if report:
            from ..report import write_diagnosis_report
            paths["report"] = write_diagnosis_report(self, out, **report_options)
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
        _check_continuous(model, _model_sites(model, x[:min(2, n)])[0])
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
                         num_bins=_bins_for(sbc_draws, sbc_simulations), seed=seed,
                         template=x)
    models = None
    if compare_with:
        models = compare_models({"this": (model, guide), **dict(compare_with)}, x,
                                num_samples=num_draws, seed=seed)
    idata = _inference_data(x, imp, reference, comparison, sbc_result, models,
                            attrs={"num_draws": num_draws})
    return Diagnosis(imp, reference, comparison, sbc_result, models, idata, x.detach().cpu())
