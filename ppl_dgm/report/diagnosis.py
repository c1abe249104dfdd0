"""``report.html`` of a diagnosis: one page with the k-hat and ESS figures, the flagged
points and their images, guide against NUTS, SBC with its test result, and how to open
the ArviZ data.

Example::

    d = diagnose(model, guide, data.test, points=20, nuts_points=4, sbc_simulations=1000)
    d.save("runs/vae/diagnostics")          # report.html among the other files
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from .html import REPORT_FILE, Cell, definitions, esc, figure, page, run_info, section, table, write
from .images import as_images, grid_png

__all__ = ["diagnosis_report_html", "write_diagnosis_report"]

MAX_POINTS_SHOWN = 48


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–" if v is None or math.isnan(v) else ("-inf" if v < 0 else "inf")
    return f"{v:.{digits}f}"


def _overview(d) -> str:
    s = d.importance.summary()
    per = "per point" if s["per_point"] else "for the whole data set (global latents)"
    rows = [("points diagnosed", s["num_points"], "every point of the split gets k-hat and "
                                                  "ESS"),
            ("guide draws per point (S)", s["num_draws"], "independent draws from the guide, "
                                                          "the importance proposal"),
            ("k-hat median / 90% / max", f"{_f(s['khat_median'])} / {_f(s['khat_q90'])} / "
                                         f"{_f(s['khat_max'])}",
             f"PSIS Pareto shape of the importance weights p(x, h) / q(h | x), {per}: below "
             f"0.5 importance sampling is reliable, above 0.7 it is not at any S"),
            ("points with k-hat > 0.5 / > 0.7", f"{100 * s['frac_khat_above_0.5']:.1f}% / "
                                                f"{100 * s['frac_khat_above_0.7']:.1f}%", ""),
            ("flagged", f"{s['num_flagged']} (k-hat > {s['threshold']:.3f})",
             "the threshold min(1 - 1/log10 S, 0.7) depends on S (Vehtari et al. 2024)")]
    if "recheck_draws" in s:
        rows.append(("still flagged after the recheck", f"{s['num_confirmed']} of "
                                                        f"{s['num_flagged']}",
                     f"flagged points redrawn with S = {s['recheck_draws']} (threshold "
                     f"{s['recheck_threshold']:.3f}): k-hat from {s['num_draws']} draws is "
                     f"noisy (sd about 0.1)"))
    rows += [("IS effective sample size, median / min", f"{s['ess_median']:.1f} / "
                                                        f"{s['ess_min']:.1f} of {s['num_draws']}",
              "1 / sum of squared normalised weights"),
             ("log p(x) (IS) / ELBO", f"{s['log_px_mean']:.3f} / {s['elbo_mean']:.3f}",
              "nats per point, means over the points (IS with the same S draws)")]
    if d.comparison is not None:
        g = d.summary()["guide_vs_nuts"]
        rows.append(("guide vs NUTS", f"max |mean diff| / sd {g['max_abs_mean_diff_sd']:.3f}; "
                                      f"median sd ratio {g['median_sd_ratio']:.3f}",
                     "per point and latent dimension: (guide mean - NUTS mean) / NUTS sd, "
                     "and guide sd / NUTS sd (1 is perfect)"))
    if d.sbc is not None:
        rows.append(("SBC", _sbc_sentence(d.sbc), "simulation-based calibration of the "
                                                   "amortised guide"))
    return table(["quantity", "value", "meaning"], rows, cls="kv", table_id="overview")


def _sbc_sentence(res) -> str:
    from ..diagnostics.plots import sbc_verdict

    return sbc_verdict(res)


def _points_section(d, x, image_shape) -> str:
    imp = d.importance
    if not imp.per_point:
        return section("Flagged points", "<p>The latents are global, so the importance "
                                         "weights are joint over the data set: there is one "
                                         "k-hat, shown above, and no per-point flag.</p>",
                       sid="flagged")
    k = imp.khat
    order = np.argsort(-np.where(np.isnan(k), -np.inf, k), kind="stable")
    flagged = [i for i in order if imp.flagged[i]]
    if flagged:
        chosen = flagged[:MAX_POINTS_SHOWN]
        intro = (f"<p>{len(flagged)} point{'s are' if len(flagged) > 1 else ' is'} flagged "
                 f"(k-hat above {imp.threshold:.3f}), shown worst first"
                 + (f" (the first {len(chosen)})" if len(chosen) < len(flagged) else "")
                 + ". A flagged point is one where the guide misses part of the posterior, "
                   "so its importance-sampled log p(x) and any expectation under the guide "
                   "are unreliable.</p>")
        title = "Flagged points"
    else:
        chosen = list(order[:8])
        intro = (f"<p>No point is flagged (every k-hat is at most {imp.threshold:.3f}). "
                 f"For reference, the {len(chosen)} points with the largest k-hat:</p>")
        title = "Points with the largest k-hat"
    header = ["point", "k-hat", "ESS", "log p(x) (IS)", "ELBO"]
    recheck = imp.khat_recheck is not None
    if recheck:
        header[2:2] = [f"k-hat, S={imp.recheck_draws}", "still flagged"]
    rows, keys = [], []
    for i in chosen:
        p = int(imp.points[i])
        row = [Cell(p), Cell(_f(float(k[i])), data={"khat": float(k[i])})]
        if recheck:
            rk = float(imp.khat_recheck[i])
            row += [Cell(_f(rk), data={"khat-recheck": rk}),
                    Cell("yes" if imp.confirmed[i] else ("no" if imp.flagged[i] else "–"))]
        row += [Cell(f"{imp.ess[i]:.1f}", data={"ess": float(imp.ess[i])}),
                Cell(_f(float(imp.log_px[i])), data={"log-px": float(imp.log_px[i])}),
                Cell(_f(float(imp.elbo[i])), data={"elbo": float(imp.elbo[i])})]
        rows.append(row)
        keys.append(str(p))
    body = intro
    shown = None if x is None else as_images(x[[int(imp.points[i]) for i in chosen]],
                                             image_shape)
    if shown is not None:
        titles = [f"#{int(imp.points[i])} k {_f(float(k[i]), 2)}" for i in chosen]
        body += figure(grid_png(shown[0], titles=titles, cols=min(12, len(chosen)), size=0.9),
                       alt="images of the points in the table", name="flagged-points",
                       caption="Each point's data with its index and k-hat.")
    elif x is None:
        body += ('<p class="note">Images of the points are shown when the data is given '
                 "(<code>diagnose</code> keeps it; the command line always does).</p>")
    body += table(header, rows, row_keys=keys, table_id="points")
    return section(title, body, sid="flagged")


def _nuts_section(d, figs) -> str:
    if d.comparison is None:
        return section("Guide against NUTS", '<p class="note">Not run (--nuts 0, or '
                                             "discrete latents).</p>", sid="nuts")
    ref = d.reference
    nuts = d.summary()["nuts"]
    rows, keys = [], []
    by_point: dict = {}
    for r in d.comparison.rows():
        by_point.setdefault((r["site"], r.get("point")), []).append(r)
    for (site, p), group in by_point.items():
        diff = max(abs(r["mean_diff_sd"]) for r in group)
        ratio = float(np.median([r["sd_ratio"] for r in group]))
        rhat = max(r["nuts_rhat"] for r in group)
        ess = min(r["nuts_ess"] for r in group)
        k = (_f(float(d.importance.khat[int(p)])) if p is not None and d.importance.per_point
             else "–")
        rows.append([site, "global" if p is None else p, len(group), f"{diff:.3f}",
                     f"{ratio:.3f}", f"{rhat:.3f}", f"{ess:.0f}", k])
        keys.append(f"{site}:{p}")
    body = (f"<p>NUTS ({nuts['num_chains']} chains × {nuts['num_samples']} draws after "
            f"{nuts['warmup']} warm-up steps, {nuts['seconds']} s, {nuts['divergences']} "
            f"divergences) on points {esc(nuts['points'])}, chosen across the k-hat ranking. "
            f"Its draws are the reference posterior: a guide with max |mean diff| / sd well "
            f"below 1 and sd ratio near 1 matches it; mean-field guides typically have sd "
            f"ratios below 1. R-hat above 1.01 or a small ESS means the reference itself "
            f"needs more draws.</p>")
    body += table(["site", "point", "dims", "max |mean diff| / NUTS sd", "median sd ratio",
                   "max R-hat", "min ESS", "k-hat"], rows, row_keys=keys, table_id="nuts")
    body += figs.get("guide_vs_nuts", "")
    if ref.conditioned_on_all:
        body += ('<p class="note">The model has global latents: NUTS conditioned on every '
                 "point.</p>")
    return section("Guide against NUTS", body, sid="nuts")


def _sbc_section(d, figs) -> str:
    res = d.sbc
    if res is None:
        return section("Simulation-based calibration", '<p class="note">Not run (--sbc 0).'
                                                       "</p>", sid="sbc")
    ok = "ok" if res.uniform else "bad"
    body = (f'<p><span class="verdict {ok}" id="sbc-verdict">SBC: {esc(_sbc_sentence(res))}'
            f"</span></p>")
    body += (f"<p>{res.ranks.shape[0]} data sets simulated from the model; for each, the rank "
             f"of the true latent among {res.num_draws} guide draws. Ranks are uniform when "
             f"the guide is the posterior for every x the model generates. Rejection means "
             f"the guide is miscalibrated somewhere (a U shape: too narrow; a hump: too wide; "
             f"a slope: biased); not rejecting is not proof of calibration. The bands in the "
             f"figure are at the test's level, 1 - α = {1 - res.alpha:g}, simultaneous over "
             f"all dimensions.</p>")
    body += figs.get("sbc", "")
    worst = np.argsort(res.p_values, kind="stable")[:10]
    rows = [[res.dim_names[j], f"{res.chi2[j]:.1f}", f"{res.p_values[j]:.3g}",
             "yes" if res.p_values[j] * len(res.p_values) < res.alpha else "no"]
            for j in worst]
    body += ("<h3>Dimensions with the smallest p-values</h3>"
             + table(["dimension", f"chi-square ({res.num_bins - 1} dof)", "p-value",
                      f"rejected (p × {len(res.p_values)} < α)"], rows, table_id="sbc"))
    return section("Simulation-based calibration", body, sid="sbc")


def _models_section(d) -> str:
    if d.models is None:
        return ""
    rows = [[r["name"], f"{r['mean']:.3f} ± {r['se']:.3f}",
             f"{r['diff']:.3f} ± {r['diff_se']:.3f}", r["method"]] for r in d.models.rows]
    return section("Model comparison", "<p>Held-out log p(x) per point (± standard error) "
                                       "and the paired difference to the best.</p>"
                   + table(["model", "log p(x)", "difference", "method"], rows),
                   sid="models")


def _arviz_section(d) -> str:
    from .. import _arviz

    groups = _arviz.group_names(d.idata)
    rows = [[g, ", ".join(str(v) for v in _arviz.get_group(d.idata, g).data_vars)[:120]]
            for g in groups]
    code = ("import arviz as az\n"
            "idata = az.from_netcdf(\"diagnostics.nc\")\n"
            "az.summary(idata, group=\"posterior\")            # guide draws of the kept points\n"
            + ("az.summary(idata, group=\"reference_posterior\")  # NUTS draws\n"
               if "reference_posterior" in groups else "")
            + "idata[\"point_diagnostics\"][\"khat\"]              # every point")
    return section("ArviZ data", "<p><code>diagnostics.nc</code> holds these groups (ArviZ "
                                 f"{esc(_arviz.ARVIZ_VERSION)}):</p>"
                   + table(["group", "variables"], rows, cls="kv")
                   + f"<pre>{esc(code)}</pre>", sid="arviz")


def diagnosis_report_html(diagnosis, out_dir: str | Path | None = None, *, data=None,
                          image_shape=None, command: str | None = None,
                          title: str | None = None, settings: dict | None = None) -> str:
    """The report page of a :class:`~ppl_dgm.diagnostics.Diagnosis` as a string; the
    figures are read from ``out_dir`` where they were saved, else drawn afresh.  ``data``
    (the diagnosed points, defaults to ``diagnosis.data``) gives the images of the
    flagged points."""
    from ..diagnostics.plots import save_plots

    d = diagnosis
    x = data if data is not None else getattr(d, "data", None)
    names = {"khat": "khat.png", "ess": "ess.png", "guide_vs_nuts": "guide_vs_nuts.png",
             "sbc": "sbc.png"}
    wanted = ["khat", "ess"] + (["guide_vs_nuts"] if d.comparison is not None else []) + (
        ["sbc"] if d.sbc is not None else [])
    folder = Path(out_dir) if out_dir is not None else None
    captions = {
        "khat": "PSIS k-hat of every point's importance weights; the flag threshold depends "
                "on the number of draws S. Open circles: flagged points redrawn with more "
                "draws.",
        "ess": "Importance-sampling effective sample size per point (log scale) and against "
               "k-hat; the dashed line is S, the largest possible value.",
        "guide_vs_nuts": "Marginals of guide draws (orange) and NUTS draws (grey) for the "
                         "dimensions where they differ most, with the R-hat of the NUTS "
                         "chains.",
        "sbc": "Left: SBC rank histograms per dimension with the range of a bin count under "
               "uniform ranks; right: ECDF of the ranks minus the uniform CDF, with the "
               "simultaneous band. Both bands are at the level of the test in the title.",
    }
    with tempfile.TemporaryDirectory() as tmp:
        if folder is None or not all((folder / names[k]).is_file() for k in wanted):
            save_plots(d, tmp)
            folder = Path(tmp)
        figs = {k: figure(folder / names[k], alt=names[k], caption=captions[k], name=names[k])
                for k in wanted}
    imp = d.importance
    sections = [
        section("At a glance", _overview(d), sid="overview"),
        section("Pareto k-hat and effective sample size", figs["khat"] + figs["ess"]
                + definitions([("k-hat", "the estimated shape of the upper tail of the "
                                         "importance weights w = p(x, h) / q(h | x), h ~ q; "
                                         "the larger, the heavier the tail: the guide puts "
                                         "too little mass where the posterior has some"),
                               ("ESS", "1 / sum of squared normalised weights: the number "
                                       "of posterior draws the S guide draws are worth")]),
                sid="khat"),
        _points_section(d, x, image_shape),
        _nuts_section(d, figs),
        _sbc_section(d, figs),
        _models_section(d),
        _arviz_section(d),
        run_info(command, dict(settings or {}) | {
            "points diagnosed": len(imp.points), "guide draws (S)": imp.num_draws,
            "recheck draws": imp.recheck_draws}),
    ]
    lead = (f"Is the inference network (the guide) a good posterior, and for which points? "
            f"{len(imp.points)} held-out points, {imp.num_draws} guide draws each.")
    return page(title or "Diagnosis of a guide", lead, sections)


def write_diagnosis_report(diagnosis, out_dir: str | Path, **kwargs) -> Path:
    """Write ``report.html`` into ``out_dir`` (see :func:`diagnosis_report_html`)."""
    out = Path(out_dir)
    return write(out / REPORT_FILE, diagnosis_report_html(diagnosis, out, **kwargs))
