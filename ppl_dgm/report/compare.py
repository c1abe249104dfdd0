"""``report.html`` of a comparison: one page with the table, its explanations and every
figure of :mod:`ppl_dgm.compare.plots`, plus samples of each estimator's model.

Example::

    result = compare("vae", None, "elbo,iwae", load_digits(), steps=2000, seeds=3)
    result.save("runs/vae-cmp")            # writes report.html among the other files
    write_compare_report(result, "runs/vae-cmp", command="ppl-dgm compare ...")
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

from .html import REPORT_FILE, Cell, definitions, esc, figure, page, run_info, section, table, write
from .images import as_images, grid_png

__all__ = ["compare_report_html", "write_compare_report"]


# The figures of ppl_dgm.compare.plots, in the order the page shows them.
_FIGURES = ("curves_steps.png", "curves_time.png", "bounds.png", "gradients.png",
            "time_to_target.png")


def _columns(cfg: dict, has_exact: bool) -> list[tuple[str, str, str, str]]:
    """``(metric, header, format, explanation)`` of the summary table's columns."""
    ci = "mean ± half-width of the 95% t-interval over seeds"
    bounds = [("is_logpx", f"log p(x) IS-{cfg['eval_samples']}", "bound",
               f"importance-sampled log-likelihood of the held-out data with "
               f"{cfg['eval_samples']} guide samples per point: a stochastic lower bound, "
               f"nats per point, higher is better; {ci}"),
              ("iwae", f"IWAE-{cfg['iwae_k']}", "bound",
               f"the {cfg['iwae_k']}-sample importance-weighted bound on held-out data; {ci}"),
              ("elbo", "ELBO", "bound", f"the evidence lower bound on held-out data; {ci}")]
    if has_exact:
        bounds.append(("exact_logpx", "log p(x) exact", "bound",
                       f"the exact held-out log-likelihood (the model enumerates its "
                       f"latents); {ci}"))
    snap = cfg["snapshot_steps"]["mid"]
    grads = [(f"grad_{kind}_{group}", f"{group} {label}", "sci",
              f"{text} of the {group}'s parameters at step {snap} (mid-training), from "
              f"{cfg['grad_draws']} draws of the estimator's update on one fixed batch; {ci}")
             for group in ("guide", "model")
             for kind, label, text in (("var", "grad var", "mean per-parameter variance of "
                                                           "the gradient (lower is better)"),
                                       ("snr", "SNR", "norm of the mean gradient over the "
                                                      "square root of its total variance "
                                                      "(higher is better)"))]
    timing = [("ms_per_step", "ms/step", "plain",
               "milliseconds per optimiser step (training time only); mean over seeds"),
              ("time_to_target_s", "s to target", "target", ""),
              ("peak_mem_mb", "peak MB", "plain", "peak memory during training; mean over "
                                                  "seeds")]
    return bounds + grads + timing


_MEMORY = {"cuda_max_allocated": "the most CUDA memory allocated at once (cuda_max_allocated)",
           "cpu_peak_rss": "the process's peak resident memory since the run started "
                           "(cpu_peak_rss)",
           "cpu_process_max_rss": "the process's peak resident memory since it started "
                                  "(cpu_process_max_rss)"}


def _fmt(kind: str, mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "–"
    if kind == "bound":
        return f"{mean:.2f}" + (f" ± {ci:.2f}" if math.isfinite(ci) else "")
    if kind == "sci":
        return f"{mean:.3g}" + (f" ± {ci:.2g}" if math.isfinite(ci) else "")
    return f"{mean:.3g}"


def _default_target(result) -> float | None:
    from ..compare.result import fill_time_to_target

    runs = [dict(r) for r in result.runs]
    return fill_time_to_target(runs, result.curves, None)


def _target_text(result) -> str:
    cfg = result.config
    if result.target is None:
        return "No target: no learning curve was measured."
    default = _default_target(result)
    how = ("the default: the lowest of the estimators' best held-out values (each the mean "
           "over seeds), so that every estimator can reach it"
           if default is not None and abs(default - result.target) < 1e-9
           else "given with --target (or ComparisonResult.with_target)")
    return (f"training seconds (evaluation excluded) until the held-out IWAE-"
            f"{cfg['curve_particles']} bound of the learning curve first reaches the target "
            f"<b>{result.target:.3f}</b> nats per point ({how}); mean over the seeds that "
            f"reached it. <i>(k of n)</i>: only k of the n seeds reached it; "
            f"<i>not reached</i>: none did. Curve points are {cfg['eval_every']} steps apart, "
            f"so the time is that of the first evaluation at or above the target.")


def _summary_table(result) -> str:
    cfg = result.config
    summary = result.summary()
    has_exact = any(math.isfinite(r["exact_logpx_mean"]) for r in summary)
    cols = _columns(cfg, has_exact)
    shown = [r for r in summary if r["seeds"] > 0]
    best = {}
    for key, _, kind, _ in cols:
        vals = [r[f"{key}_mean"] for r in shown if math.isfinite(r[f"{key}_mean"])]
        if kind == "bound" and len(vals) > 1:
            best[key] = max(vals)
    rows, keys = [], []
    for r in shown:
        cells = [Cell(r["estimator"]), Cell(r["seeds"], data={"col": "seeds",
                                                              "mean": r["seeds"]})]
        for key, _, kind, _ in cols:
            mean, ci = r[f"{key}_mean"], r[f"{key}_ci"]
            text = _fmt("plain" if kind == "target" else kind, mean, ci)
            if kind == "target":
                reached = r["target_reached"]
                if reached == 0:
                    text = "not reached"
                elif reached < r["seeds"]:
                    text = f"{text} ({reached} of {r['seeds']})"
            cells.append(Cell(text, data={"col": key, "mean": mean, "ci": ci},
                              cls="best" if best.get(key) == mean else ""))
        rows.append(cells)
        keys.append(r["estimator"])
    header = ["estimator", "seeds"] + [c[1] for c in cols]
    html = table(header, rows, row_keys=keys, table_id="summary", cls="wide")
    explain = [("estimator", "the estimator's label (name and options) as given to "
                             "--estimators"),
               ("seeds", f"runs that finished, of seeds {_list(cfg['seeds'])}; every "
                         f"estimator of a seed starts from the same parameters and sees the "
                         f"same minibatches")]
    explain += [(h, text) for _, h, kind, text in cols if kind != "target"]
    explain.insert(len(explain) - 1, ("s to target", _target_text(result)))
    kinds = sorted({r["mem_kind"] for r in result.runs if r.get("mem_kind")})
    note = (f"<p class=\"note\">Bold: the best mean of a bound column. Peak memory is "
            f"{esc(', '.join(_MEMORY.get(k, k) for k in kinds))}.</p>" if kinds else "")
    notes = [r for r in summary if r["status"] != "ok"]
    skipped = ""
    if notes:
        skipped = "<h3>Not compared</h3>" + table(
            ["estimator", "status", "reason"],
            [(r["estimator"], r["status"], r["reason"]) for r in notes], cls="text")
    return html + note + definitions(explain) + skipped


def _list(values) -> str:
    return ", ".join(str(v) for v in values)


def _figure_captions(result) -> dict[str, tuple[str, str]]:
    cfg = result.config
    seeds = len(cfg["seeds"])
    band = (f"The line is the mean over {seeds} seeds; the shaded band spans the seeds "
            f"(minimum to maximum)." if seeds > 1 else "One seed: no band.")
    target = ("" if result.target is None else
              f" The dashed line is the time-to-target level {result.target:.3f}.")
    return {
        "curves_steps.png": ("Learning curves against optimiser steps",
                             f"Held-out IWAE-{cfg['curve_particles']} bound every "
                             f"{cfg['eval_every']} steps. {band}{target}"),
        "curves_time.png": ("Learning curves against training time",
                            f"The same curves against training wall-clock seconds "
                            f"(evaluation time excluded). {band}{target}"),
        "bounds.png": ("Bound ladder",
                       "Final held-out bounds per estimator: ELBO ≤ IWAE-K ≤ IS log p(x) "
                       "(≤ exact log p(x) where the model enumerates). Markers are means "
                       "over seeds, error bars the 95% t-interval (none with one seed)."),
        "gradients.png": ("Gradient variance and SNR",
                          f"{cfg['grad_draws']} gradient draws on one fixed batch at steps "
                          f"{cfg['snapshot_steps']['start']}, {cfg['snapshot_steps']['mid']} "
                          f"and {cfg['snapshot_steps']['end']}, for the model's and the "
                          f"guide's parameters. Bars are means over seeds, whiskers span the "
                          f"seeds (minimum to maximum); log scale."),
        "time_to_target.png": ("Time to target",
                               "Training seconds until the held-out bound first reaches the "
                               "target (see the table's explanation); bars are means over "
                               "the seeds that reached it, whiskers span them."),
    }


def _samples_section(result, image_shape=None) -> str:
    samples = getattr(result, "samples", None) or {}
    if not samples:
        return section("Samples", '<p class="note">No samples were drawn: the model cannot '
                                  "be sampled (neither <code>sample(n)</code> nor its own "
                                  "program), or the result was made before samples were "
                                  "recorded.</p>", sid="samples")
    figs, skipped = [], []
    for label in result.labels:
        if label not in samples:
            continue
        shown = as_images(samples[label], image_shape)
        if shown is None:
            skipped.append(label)
            continue
        images, _ = shown
        figs.append(figure(grid_png(images[:64], size=0.42), alt=f"samples of {label}",
                           caption=f"<b>{esc(label)}</b>: {len(images[:64])} samples",
                           name=f"samples:{label}"))
    seed = result.config["seeds"][0]
    body = (f"<p>Samples from each estimator's trained model (seed {seed}), drawn after "
            f"training with a fixed random seed: the mean of p(x | h) for fresh latents h "
            f"where the model offers <code>sample(n, mean=True)</code>, else draws of its "
            f"own program.</p>")
    body += '<div class="grid">' + "".join(figs) + "</div>"
    if skipped:
        body += (f'<p class="note">Not shown as images (the data are not image-shaped): '
                 f"{esc(_list(skipped))}.</p>")
    return section("Samples", body, sid="samples")


def compare_report_html(result, out_dir: str | Path | None = None, *,
                        command: str | None = None, image_shape=None) -> str:
    """The report page of ``result`` as a string.  The figures are read from
    ``out_dir`` where :meth:`~ppl_dgm.compare.ComparisonResult.plot` wrote them, and drawn
    afresh where they are missing."""
    from ..compare.plots import plot_all

    cfg = result.config
    folder = Path(out_dir) if out_dir is not None else None
    with tempfile.TemporaryDirectory() as tmp:
        if folder is None or not all((folder / f).is_file() for f in _FIGURES):
            plot_all(result, tmp)
            folder = Path(tmp)
        captions = _figure_captions(result)
        figs = {name: figure(folder / name, alt=captions[name][0],
                             caption=captions[name][1], name=name) for name in _FIGURES}
    sections = [
        section("Summary", _summary_table(result), sid="summary-section"),
        section("Learning curves", figs["curves_steps.png"] + figs["curves_time.png"],
                sid="curves"),
        section("Bound ladder", figs["bounds.png"], sid="bounds"),
        section("Gradient variance and signal-to-noise ratio", figs["gradients.png"],
                sid="gradients"),
        section("Time to target", figs["time_to_target.png"], sid="time-to-target"),
        _samples_section(result, image_shape),
        run_info(command, {k: v for k, v in cfg.items() if k != "estimator_options"}
                 | {"estimator options": "; ".join(
                     f"{label}: {', '.join(f'{k}={v}' for k, v in opts.items()) or '–'}"
                     for label, opts in cfg.get("estimator_options", {}).items()),
                    "target": "–" if result.target is None else f"{result.target:.3f}"}),
    ]
    ok = sum(1 for r in result.summary() if r["seeds"] > 0)
    lead = (f"{esc(cfg['model'])} + {esc(cfg['guide'])} on {esc(cfg['data'])}: {ok} of "
            f"{len(result.labels)} estimators compared, {cfg['steps']} steps, seeds "
            f"{esc(_list(cfg['seeds']))}. Held-out numbers are on the "
            f"{esc(cfg.get('eval_split', 'test'))} split, in nats per point.")
    return page(f"Comparison of estimators: {cfg['model']} on {cfg['data']}", lead, sections)


def write_compare_report(result, out_dir: str | Path, *, command: str | None = None,
                         image_shape=None) -> Path:
    """Write ``report.html`` (self-contained: figures embedded, nothing loaded) into
    ``out_dir``; returns its path."""
    out = Path(out_dir)
    return write(out / REPORT_FILE, compare_report_html(result, out, command=command,
                                                         image_shape=image_shape))
