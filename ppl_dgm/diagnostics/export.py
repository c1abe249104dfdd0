"""ArviZ data built from the diagnostics, and its NetCDF export.

The groups are xarray datasets built from dicts: guide draws and log weights of a few
points (``posterior``, ``log_likelihood``, ``sample_stats``, ``observed_data``), the
per-point summaries of every point (``point_diagnostics``), and the results of the other
diagnostics where they were run: NUTS draws (``reference_posterior``) apart from their
ESS and R-hat (``reference_diagnostics``), so that ArviZ's own functions
(``az.summary``, ``az.plot_posterior``) take every group over ``chain`` and ``draw``.
They become ``InferenceData`` with arviz 0.23 and
``DataTree`` with arviz >= 1, through :mod:`ppl_dgm._arviz`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import xarray as xr

from .. import _arviz
from ..errors import DataError
from ..traces import OBS_SITE
from ._common import _coords, _dims, _squeeze_feature
from .importance import ImportanceDiagnostics, PointDraws, importance_diagnostics

if TYPE_CHECKING:
    from .model_comparison import ModelComparison
    from .nuts import GuideVsReference, NutsReference
    from .sbc import SBCResult

__all__ = ["load_netcdf", "save_netcdf", "to_inference_data"]


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


def _reference_groups(ref: xr.Dataset) -> dict[str, xr.Dataset]:
    """The NUTS reference as two groups: its draws (``reference_posterior``, every
    variable over ``chain`` and ``draw``, so that ``az.summary`` and the plots take it
    like a posterior) and their convergence diagnostics (``reference_diagnostics``:
    ``<site>_ess`` and ``<site>_rhat`` per point and dimension)."""
    draws = [v for v in ref.data_vars if {"chain", "draw"} <= set(ref[v].dims)]
    diagnostics = ref.drop_vars(draws)
    unused = [c for c in ("chain", "draw") if c in diagnostics.coords]
    return {"reference_posterior": ref[draws],
            "reference_diagnostics": diagnostics.drop_vars(unused)}


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
        groups.update(_reference_groups(reference.dataset()))
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

    Draws are stored only for ``points`` (see :mod:`ppl_dgm.diagnostics.importance` on
    memory).  Returns ``az.InferenceData`` with arviz 0.23 and ``xr.DataTree`` with
    arviz >= 1.

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
