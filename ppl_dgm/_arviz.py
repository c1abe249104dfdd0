"""The one place that knows which ArviZ is installed.

ArviZ split in two: on Python 3.11 pip resolves arviz 0.23 (``InferenceData``,
``az.psislw`` taking log importance weights), while every arviz >= 1.0 needs Python >=
3.12, returns an xarray ``DataTree``, has no ``from_pyro``, and its array ``psislw``
(``arviz_stats``) takes the *negated* log weights (it is written for PSIS-LOO, whose log
ratios are ``-log p(y_i | theta)``) and flips the sign itself.  Everything else in
ppl_dgm builds plain :class:`xarray.Dataset` groups and goes through the functions here,
so both versions work.  This module imports neither torch nor Pyro.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import xarray as xr

__all__ = ["ARVIZ_VERSION", "IS_ARVIZ_1", "ess", "from_netcdf", "get_group", "group_names",
           "inference_data", "plot_posterior", "psislw", "rhat", "summary", "to_netcdf"]


def _import_arviz():
    with warnings.catch_warnings():
        # arviz 0.23 warns about its own refactor on import
        warnings.simplefilter("ignore", FutureWarning)
        import arviz
    return arviz


_az = _import_arviz()
ARVIZ_VERSION: str = _az.__version__
IS_ARVIZ_1: bool = int(ARVIZ_VERSION.split(".")[0]) >= 1


def inference_data(groups: dict[str, xr.Dataset], *, attrs: dict | None = None):
    """ArviZ data from named groups: ``az.InferenceData`` (0.23) or ``xr.DataTree`` (1.x).

    Group names outside ArviZ's schema (ppl_dgm adds ``point_diagnostics`` and
    ``reference_posterior``) are allowed in both versions.
    """
    groups = {name: ds for name, ds in groups.items() if ds is not None}
    if attrs:
        for ds in groups.values():
            ds.attrs.update({k: v for k, v in attrs.items() if k not in ds.attrs})
    if IS_ARVIZ_1:
        tree = xr.DataTree.from_dict(groups)
        if attrs:
            tree.attrs.update(attrs)
        return tree
    with warnings.catch_warnings():
        # 0.23 warns once per group it does not know; ours are deliberate
        warnings.simplefilter("ignore", UserWarning)
        return _az.InferenceData(**groups)


def group_names(idata) -> list[str]:
    """The names of the groups of an ``InferenceData`` or ``DataTree``."""
    if IS_ARVIZ_1 or isinstance(idata, xr.DataTree):
        return [str(name) for name in idata.children]
    return list(idata.groups())


def get_group(idata, name: str) -> xr.Dataset:
    """One group as an ``xr.Dataset``."""
    if name not in group_names(idata):
        raise KeyError(f"no group {name!r}; groups are {group_names(idata)}")
    if IS_ARVIZ_1 or isinstance(idata, xr.DataTree):
        return idata[name].to_dataset()
    return getattr(idata, name)


def to_netcdf(idata, path: str | Path) -> Path:
    """Write ArviZ data to a NetCDF4 file (one HDF5 group per ArviZ group)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if IS_ARVIZ_1 or isinstance(idata, xr.DataTree):
            idata.to_netcdf(path)
        else:
            idata.to_netcdf(str(path))
    except (ImportError, ValueError) as e:
        if "h5py" in str(e) or "engine" in str(e) or "netCDF4" in str(e):
            raise ImportError(f"writing {str(path)!r} needs a NetCDF4 backend: pip install "
                              f"h5netcdf h5py (or netCDF4); {e}") from e
        raise
    return path


def from_netcdf(path: str | Path):
    """Read what :func:`to_netcdf` wrote (fully loaded; the file is closed afterwards)."""
    if IS_ARVIZ_1:
        with xr.open_datatree(path) as tree:
            return tree.load()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        idata = _az.from_netcdf(str(path))
    for name in idata.groups():
        ds = getattr(idata, name)
        ds.load()
        ds.close()  # release the file so it can be overwritten
    return idata


def summary(idata, *, group: str = "posterior", var_names=None):
    """ArviZ's own ``az.summary`` of one group over ``chain`` and ``draw`` (a pandas
    DataFrame: mean, sd, interval, ESS, R-hat, MCSE per variable and coordinate).  Both
    versions take ``group=``; 0.23's warnings about a single chain are silenced (guide
    draws come as one chain of independent draws)."""
    import logging

    log = logging.getLogger("arviz")
    level = log.level
    log.setLevel(logging.ERROR)  # 0.23 logs "Shape validation failed" for one chain
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("ignore", RuntimeWarning)
            return _az.summary(idata, group=group, var_names=var_names)
    finally:
        log.setLevel(level)


def plot_posterior(idata, path: str | Path, *, group: str = "posterior", var_names=None
                   ) -> Path:
    """ArviZ's own marginal plot of one group, written to ``path``:
    ``az.plot_posterior`` (0.23) or its successor ``az.plot_dist`` (>= 1, matplotlib
    backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        if IS_ARVIZ_1:
            pc = _az.plot_dist(idata, group=group, var_names=var_names, backend="matplotlib")
            pc.savefig(path)
        else:
            axes = _az.plot_posterior(idata, group=group, var_names=var_names, show=False)
            fig = np.ravel(axes)[0].figure
            fig.savefig(path)
    plt.close("all")
    return path


def psislw(log_w, r_eff: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Pareto-smoothed importance sampling on log weights, samples on the last axis.

    :param log_w: log importance weights ``log p(x, h) - log q(h | x)`` (NOT their
        negation), shape ``(..., S)``; cast to float64 here.
    :param r_eff: relative efficiency of the draws; 1 for independent draws from a guide.
    :returns: ``(smoothed log weights normalised to sum to one, k-hat)`` with shapes
        ``(..., S)`` and ``(...)``, float64.
    """
    lw = np.asarray(log_w, dtype=np.float64)
    if lw.ndim == 0 or lw.shape[-1] < 2:
        raise ValueError(f"psislw needs at least 2 draws on the last axis, got shape {lw.shape}")
    lw = lw - lw.max(-1, keepdims=True)
    # A flat tail (the largest weights all equal: an exact posterior as proposal, or a
    # discrete latent whose most likely values repeat) has nothing to fit: 0.23 returns
    # k = inf and 1.x raises.  The largest weight is then common, not rare, so the
    # weights are bounded: report k = -inf ("no tail") and leave the weights as they are.
    flat = lw.reshape(-1, lw.shape[-1])
    tail = np.sort(flat, -1)[:, -_tail_length(flat.shape[-1], r_eff):]
    flat_tail = tail[:, 0] == tail[:, -1]
    if flat_tail.any():
        khat = np.full(flat.shape[0], -np.inf)
        smoothed = flat - _logsumexp(flat)
        if not flat_tail.all():
            smoothed[~flat_tail], khat[~flat_tail] = psislw(flat[~flat_tail], r_eff)
        return smoothed.reshape(lw.shape), khat.reshape(lw.shape[:-1])
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        if IS_ARVIZ_1:
            from arviz_stats.base import array_stats
            smoothed, khat = array_stats.psislw(-lw, r_eff=r_eff, axis=-1)
        else:
            smoothed, khat = _az.psislw(lw, reff=r_eff)
    smoothed = np.asarray(smoothed, dtype=np.float64)
    smoothed = smoothed - _logsumexp(smoothed)
    return smoothed, np.asarray(khat, dtype=np.float64)


def _tail_length(n: int, r_eff: float) -> int:
    """Draws in the Pareto tail, as the installed ArviZ counts them (at least 1)."""
    if IS_ARVIZ_1:
        m = np.floor(3 * (n / r_eff) ** 0.5) if n * r_eff > 225 else np.floor(n / 5)
    else:
        m = np.ceil(min(n / 5.0, 3 * (n / r_eff) ** 0.5))
    return int(max(1, min(m, n)))


def _logsumexp(a: np.ndarray) -> np.ndarray:
    m = a.max(-1, keepdims=True)
    return m + np.log(np.exp(a - m).sum(-1, keepdims=True))


def _chain_stat(name: str, draws, **kwargs) -> np.ndarray:
    ary = np.asarray(draws, dtype=np.float64)
    if ary.ndim < 2:
        raise ValueError(f"{name} needs draws shaped (chain, draw, ...), got shape {ary.shape}")
    if IS_ARVIZ_1:
        from arviz_stats.base import array_stats
        return np.asarray(getattr(array_stats, name)(ary, chain_axis=0, draw_axis=1, **kwargs))
    fn = getattr(_az, name)
    flat = ary.reshape(ary.shape[0], ary.shape[1], -1)
    out = np.empty(flat.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i in range(flat.shape[-1]):
            out[i] = float(fn(flat[:, :, i], **kwargs))
    return out.reshape(ary.shape[2:])


def ess(draws, *, method: str = "bulk") -> np.ndarray:
    """Effective sample size of MCMC draws shaped ``(chain, draw, ...)`` per trailing entry."""
    return _chain_stat("ess", draws, method=method)


def rhat(draws) -> np.ndarray:
    """Rank-normalised split R-hat of draws shaped ``(chain, draw, ...)``."""
    return _chain_stat("rhat", draws)
