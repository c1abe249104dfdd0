"""ArviZ's own functions on a file that ``ppl-dgm diagnose`` wrote, on every ArviZ version
the adapter supports.

``tests/data/diagnose_vae.nc`` is the ``diagnostics.nc`` of the ``diagnose_dir`` fixture
of ``tests/test_report.py`` (a VAE with 2 latent dimensions trained 60 steps on digits)::

    ppl-dgm train --model vae --model-opt z_dim=2 --model-opt hidden=16 --steps 60 \\
        --run-dir RUN --eval-every 0 --eval-samples 10 --no-progress --log-every 20
    ppl-dgm diagnose RUN --max-points 40 --points 3 --nuts 1 --nuts-chains 2 \\
        --nuts-samples 30 --nuts-warmup 30 --draws 100 --sbc 100 --sbc-draws 19 \\
        --no-plots --no-report          # RUN/diagnostics/diagnostics.nc

``test_report.py`` checks that what ``diagnose`` writes today has the groups, variables
and dimensions of this file, and runs :func:`check_arviz_functions` on the fresh file.
This module imports only numpy, xarray, arviz and ``ppl_dgm._arviz`` (no torch), so it
also runs on Python >= 3.12 with arviz >= 1::

    pip install "arviz>=1" h5netcdf h5py matplotlib pytest
    PYTHONPATH=. python -m pytest -q --noconftest tests/test_arviz_diagnose_file.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ppl_dgm import _arviz

DIAGNOSE_FILE = Path(__file__).parent / "data" / "diagnose_vae.nc"

# Groups whose every variable runs over chain and draw: ArviZ treats them as draws.
DRAW_GROUPS = ("posterior", "log_likelihood", "sample_stats", "reference_posterior")


def structure(idata) -> dict:
    """``{group: {variable: dims}}`` of ArviZ data."""
    return {g: {v: tuple(_arviz.get_group(idata, g)[v].dims)
                for v in _arviz.get_group(idata, g).data_vars}
            for g in _arviz.group_names(idata)}


def check_arviz_functions(path: Path, tmp_path: Path) -> None:
    """``az.from_netcdf``, ``az.summary`` on every group of draws and ArviZ's marginal
    plot (``az.plot_posterior``; ``az.plot_dist`` in arviz >= 1, which has no
    ``plot_posterior``) to a file, each called the way a user calls it."""
    import arviz as az
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    idata = az.from_netcdf(str(path))
    groups = _arviz.group_names(idata)
    assert {"posterior", "reference_posterior", "reference_diagnostics"} <= set(groups)
    for group in groups:
        ds = _arviz.get_group(idata, group)
        over_draws = [v for v in ds.data_vars if {"chain", "draw"} <= set(ds[v].dims)]
        if not over_draws:
            continue
        assert group in DRAW_GROUPS, group
        assert over_draws == list(ds.data_vars), (group, list(ds.data_vars))  # only draws
        table = az.summary(idata, group=group)
        cells = sum(ds[v][0, 0].size for v in ds.data_vars)
        assert len(table) == cells, (group, len(table), cells)
        assert np.isfinite(table["mean"].to_numpy(dtype=float)).all(), group
    for group in ("posterior", "reference_posterior"):
        png = tmp_path / f"{group}.png"
        if _arviz.IS_ARVIZ_1:
            az.plot_dist(idata, group=group, backend="matplotlib").savefig(png)
        else:
            axes = az.plot_posterior(idata, group=group, show=False)
            np.ravel(axes)[0].figure.savefig(png)
        plt.close("all")
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 5000
        # the adapter's wrappers pick the same function on either version
        assert _arviz.plot_posterior(idata, tmp_path / f"{group}-adapter.png",
                                     group=group).stat().st_size > 5000
        assert len(_arviz.summary(idata, group=group)) == len(az.summary(idata, group=group))


def test_arviz_functions_accept_the_diagnose_file(tmp_path):
    check_arviz_functions(DIAGNOSE_FILE, tmp_path)


def test_reference_diagnostics_are_arviz_own_of_the_reference_draws():
    idata = _arviz.from_netcdf(DIAGNOSE_FILE)
    ref = _arviz.get_group(idata, "reference_posterior")
    diags = _arviz.get_group(idata, "reference_diagnostics")
    assert set(diags.data_vars) == {"z_ess", "z_rhat"}
    assert diags["z_rhat"].dims == ("point", "z_dim")
    # recomputed with the ArviZ installed now (0.23 wrote the file; >= 1 agrees)
    np.testing.assert_allclose(diags["z_rhat"].values, _arviz.rhat(ref["z"].values),
                               rtol=1e-6)
    np.testing.assert_allclose(diags["z_ess"].values, _arviz.ess(ref["z"].values), rtol=1e-6)
