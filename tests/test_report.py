"""The HTML reports of ``ppl-dgm compare`` and ``ppl-dgm diagnose``, seen by a browser.

Each report is made by the command line on real digits (tiny models, few steps), then
opened in headless Chromium (``tests/chromium.py``, the DevTools protocol over a pipe):
no console errors, no request leaving the page, every image decoded, the summary table
equal to ``summary.csv`` and the flagged-point table equal to the NetCDF file, and a
full-page screenshot kept as a test artefact (its path is printed; ``pytest -s`` shows
it).  Without ``/usr/bin/chromium`` (Debian's ``chromium`` package, which ``.ci/run``
installs where it can) the browser tests are skipped; the structural checks of the HTML
run everywhere.
"""

from __future__ import annotations

import base64
import csv
import math
import re
import shlex
import sys

import numpy as np
import pytest
import torch
from chromium import CHROMIUM, IMAGES_JS, render, table_js
from test_arviz_diagnose_file import DIAGNOSE_FILE, check_arviz_functions, structure

from ppl_dgm import _arviz, cli
from ppl_dgm.cli.parser import _parser, command_line
from ppl_dgm.compare import ComparisonResult
from ppl_dgm.diagnostics.plots import sbc_bands, sbc_verdict
from ppl_dgm.diagnostics.sbc import SBCResult, rank_uniformity

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="needs headless Chromium: apt-get install -y chromium (Debian); "
                             ".ci/run installs it when it runs as root with apt")

ESTIMATORS = "nvil,vimco:num_particles=3,elbo"  # elbo cannot train an SBN: "Not compared"
COMPARE = ["compare", "--model", "sbn", "--model-opt", "layers=4", "--estimators", ESTIMATORS,
           "--data", "digits", "--steps", "20", "--seeds", "2", "--eval-every", "10",
           "--curve-particles", "4", "--iwae-k", "4", "--eval-samples", "20", "--grad-draws",
           "3", "--batch-size", "50", "--device", "cpu", "--no-progress"]


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "cmp"
    assert cli.main([*COMPARE, "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def diagnose_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    run = root / "vae"
    assert cli.main(["train", "--model", "vae", "--model-opt", "z_dim=2", "--model-opt",
                     "hidden=16", "--steps", "60", "--run-dir", str(run), "--eval-every", "0",
                     "--eval-samples", "10", "--no-progress", "--log-every", "20"]) == 0
    assert cli.main(["diagnose", str(run), "--max-points", "40", "--points", "3", "--nuts", "1",
                     "--nuts-chains", "2", "--nuts-samples", "30", "--nuts-warmup", "30",
                     "--draws", "100", "--sbc", "100", "--sbc-draws", "19"]) == 0
    return run / "diagnostics"


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _same(shown: str, stored: str) -> bool:
    a = float(shown) if shown not in ("", "nan") else math.nan
    b = float(stored) if stored not in ("", "nan") else math.nan
    return (math.isnan(a) and math.isnan(b)) or a == b


# ------------------------------------------------------------------- structure of the HTML

@pytest.mark.parametrize("which", ["compare_dir", "diagnose_dir"])
def test_reports_are_self_contained(which, request):
    html = (request.getfixturevalue(which) / "report.html").read_text()
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:)""", html)   # nothing to load
    assert "default-src 'none'" in html                                # and the CSP forbids it
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', html)
    assert images and len(images) == html.count("<img")
    for b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    assert "ppl-dgm " + which.split("_")[0] in html                    # the command
    assert "torch" in html and "pyro-ppl" in html and "arviz" in html   # the versions


def test_compare_report_explains_columns_target_and_skipped(compare_dir):
    html = (compare_dir / "report.html").read_text()
    result = ComparisonResult.load(compare_dir)
    for header in ("log p(x) IS-20", "IWAE-4", "ELBO", "log p(x) exact", "guide grad var",
                   "model SNR", "ms/step", "s to target", "peak MB"):
        assert f"<dt>{header}</dt>" in html, header
    assert f"<b>{result.target:.3f}</b>" in html and "(k of n)</i>: only k of the n seeds" in html
    assert "Not compared" in html and "needs reparameterised latents" in html
    assert "95% t-interval" in html and "band spans the seeds" in html
    assert set(result.samples) == {"nvil", "vimco:num_particles=3"}
    assert result.samples["nvil"].shape == (64, 64)


def test_report_flags_and_command_line_round_trip(compare_dir, tmp_path):
    args = _parser().parse_args([*COMPARE, "--out", "x y", "--no-report"])
    assert args.report is False and _parser().parse_args(COMPARE).report is True
    line = command_line(args)
    assert line.startswith("ppl-dgm compare ") and "--no-report" in line and "'x y'" in line
    assert _parser().parse_args(shlex.split(line)[1:]) == args
    diag = _parser().parse_args(["diagnose", "runs/a", "--compare", "runs/b", "--compare",
                                 "runs/c", "--sbc", "0"])
    assert _parser().parse_args(shlex.split(command_line(diag))[1:]) == diag
    # without a report, none is written
    paths = ComparisonResult.load(compare_dir).save(tmp_path, plots=False, report=False)
    assert not (tmp_path / "report.html").exists() and tmp_path / "samples.npz" in paths


# ------------------------------------------------------------------------- in the browser

@needs_chromium
def test_compare_report_in_chromium(compare_dir, tmp_path_factory):
    shot = tmp_path_factory.mktemp("screenshots") / "compare-report.png"
    seen = render(compare_dir / "report.html", screenshot=shot,
                  evaluate={"images": IMAGES_JS, "rows": table_js("#summary"),
                            "fits": "(e => e.scrollWidth <= e.clientWidth)"
                                    "(document.querySelector('#summary').parentElement)"})
    print(f"\ncompare report screenshot: {shot}", file=sys.stderr)
    assert seen.errors == [] and seen.requests == []
    assert seen.values["fits"]                        # the table needs no sideways scrolling
    images = seen.values["images"]
    assert len(images) == 5 + 2                       # five figures, two sample grids
    assert all(w > 0 and h > 0 for _, w, h in images), images
    summary = [r for r in _csv(compare_dir / "summary.csv") if int(r["seeds"]) > 0]
    rows = seen.values["rows"]
    assert [r["key"] for r in rows] == [s["estimator"] for s in summary]
    for row, stored in zip(rows, summary):
        cells = [c for c in row["cells"] if "col" in c]
        assert {c["col"] for c in cells} >= {"is_logpx", "iwae", "elbo", "exact_logpx",
                                             "grad_var_guide", "time_to_target_s"}
        for c in cells:
            if c["col"] == "seeds":
                assert c["text"] == stored["seeds"]
                continue
            assert _same(c["mean"], stored[f"{c['col']}_mean"]), (c, stored)
            assert _same(c["ci"], stored[f"{c['col']}_ci"]), (c, stored)
            mean = float(c["mean"])
            if c["col"] in ("is_logpx", "iwae", "elbo", "exact_logpx") and math.isfinite(mean):
                assert c["text"].startswith(f"{mean:.2f}")
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 50_000


@needs_chromium
def test_diagnosis_report_in_chromium(diagnose_dir, tmp_path_factory):
    shot = tmp_path_factory.mktemp("screenshots") / "diagnosis-report.png"
    seen = render(diagnose_dir / "report.html", screenshot=shot,
                  evaluate={"images": IMAGES_JS, "points": table_js("#points"),
                            "verdict": "document.getElementById('sbc-verdict').textContent"})
    print(f"\ndiagnosis report screenshot: {shot}", file=sys.stderr)
    assert seen.errors == [] and seen.requests == []
    names = [alt for alt, _, _ in seen.values["images"]]
    assert {"khat.png", "ess.png", "guide_vs_nuts.png", "sbc.png"} <= set(names)
    assert "images of the points in the table" in names
    assert all(w > 0 and h > 0 for _, w, h in seen.values["images"])
    idata = _arviz.from_netcdf(diagnose_dir / "diagnostics.nc")
    pd = _arviz.get_group(idata, "point_diagnostics")
    for row in seen.values["points"]:
        p = int(row["key"])
        khat = next(c for c in row["cells"] if "khat" in c)["khat"]
        assert float(khat) == pytest.approx(float(pd["khat"].sel(point=p)), rel=1e-12)
    sbc = _arviz.get_group(idata, "sbc").attrs
    verdict = "not rejected" if sbc["combined_p_value"] >= sbc["alpha"] else "rejected"
    assert f"uniform ranks {verdict} at α = 0.01" in seen.values["verdict"]
    assert shot.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- ArviZ

def test_arviz_own_functions_accept_what_diagnose_writes(diagnose_dir, tmp_path):
    """The checks of tests/test_arviz_diagnose_file.py on a fresh file, and the shipped
    file (which that module also checks on arviz >= 1) is still what diagnose writes."""
    import arviz as az

    path = diagnose_dir / "diagnostics.nc"
    check_arviz_functions(path, tmp_path)
    fresh = _arviz.from_netcdf(path)
    assert structure(fresh) == structure(_arviz.from_netcdf(DIAGNOSE_FILE))
    ref = _arviz.get_group(fresh, "reference_posterior")
    # the stored R-hat is ArviZ's own R-hat of the stored draws
    np.testing.assert_allclose(_arviz.get_group(fresh, "reference_diagnostics")["z_rhat"],
                               _arviz.rhat(ref["z"].values), rtol=1e-6)
    if not _arviz.IS_ARVIZ_1:  # the call of the issue, as a 0.23 user writes it
        assert len(az.summary(az.from_netcdf(str(path)).reference_posterior)) == \
            ref["z"][0, 0].size


# ------------------------------------------------------------------------ SBC bands

def test_sbc_bands_hold_the_tests_level_under_uniform_ranks():
    """Under uniform ranks each band is left with probability at most alpha (family-wise
    over every bin / dimension), like the chi-square test the verdict states."""
    rng = np.random.default_rng(0)
    n, d, draws, bins, alpha, reps = 200, 8, 19, 20, 0.01, 2000
    template = SBCResult(np.zeros((n, d), dtype=np.int64), draws, [f"z[{j}]" for j in range(d)],
                         bins, np.zeros(d), np.ones(d), alpha)
    (lo, hi), band = sbc_bands(template)
    u = np.arange(1, draws + 2) / (draws + 1)
    out_bins = out_ks = rejected = 0
    for _ in range(reps):
        ranks = rng.integers(0, draws + 1, size=(n, d))
        counts = np.stack([np.bincount(ranks[:, j], minlength=bins) for j in range(d)])
        out_bins += bool(((counts < lo) | (counts > hi)).any())
        ecdf = np.stack([np.searchsorted(np.sort(ranks[:, j]), np.arange(draws + 1),
                                         side="right") / n for j in range(d)])
        out_ks += bool((np.abs(ecdf - u) > band).any())
        _, p = rank_uniformity(ranks, draws, num_bins=bins)
        rejected += bool(min(1.0, d * p.min()) < alpha)
    limit = alpha + 3 * math.sqrt(alpha * (1 - alpha) / reps)   # 3 Monte Carlo sd above
    assert out_bins / reps < limit and out_ks / reps < limit and rejected / reps < limit
    # the 95% pointwise band of the old figure was left far more often than alpha
    old = 1 - np.mean([(np.abs(np.stack([np.searchsorted(np.sort(r[:, j]), np.arange(draws + 1),
                                                         side="right") / n for j in range(d)])
                                - u) <= 1.358 / math.sqrt(n)).all()
                       for r in (rng.integers(0, draws + 1, size=(n, d)) for _ in range(300))])
    assert old > 5 * alpha


def test_sbc_verdict_is_worded_as_a_test_result():
    ranks = np.zeros((100, 2), dtype=np.int64)
    kept = SBCResult(ranks, 19, ["a", "b"], 20, np.zeros(2), np.array([0.2, 0.5]), 0.01)
    assert sbc_verdict(kept).startswith("uniform ranks not rejected at α = 0.01")
    assert "Bonferroni over 2 dimensions: p = 0.4" in sbc_verdict(kept)
    gone = SBCResult(ranks, 19, ["a", "b"], 20, np.zeros(2), np.array([1e-4, 0.5]), 0.01)
    assert sbc_verdict(gone).startswith("uniform ranks rejected at α = 0.01")


# --------------------------------------------------------------------------- progress

def test_fit_progress_shows_the_loss_per_point(capsys, monkeypatch):
    from ppl_dgm.guides import GaussianEncoder
    from ppl_dgm.models import VAE

    from ppl_dgm.estimators import ELBO
    from ppl_dgm.train import fit

    x = torch.bernoulli(torch.full((40, 6), 0.3))
    model = VAE(x_dim=6, z_dim=2, hidden=(8,))
    guide = GaussianEncoder.from_model(model)
    res = fit(model, guide, ELBO(), x, steps=4, batch_size=20, log_every=4, progress=True,
              device="cpu")
    err = capsys.readouterr().err
    assert f"loss_per_point={res.history[-1]['loss'] / 20:.4g}" in err
    fit(model, guide, ELBO(), x, steps=4, batch_size=20, log_every=4, device="cpu")
    assert "loss_per_point" not in capsys.readouterr().err       # no terminal: no bar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    fit(model, guide, ELBO(), x, steps=4, batch_size=20, log_every=4, device="cpu")
    assert "loss_per_point" in capsys.readouterr().err           # a terminal: a bar
