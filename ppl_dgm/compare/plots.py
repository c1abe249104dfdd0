"""PNG plots of a :class:`~ppl_dgm.compare.ComparisonResult` (matplotlib, no display).

* ``curves_steps.png`` / ``curves_time.png``: held-out bound against optimiser steps and
  against training wall-clock time; the line is the mean over seeds, the band spans the
  seeds (min to max); the dashed line is the time-to-target level;
* ``gradients.png``: gradient variance (log scale) and SNR for model and guide
  parameters at the start, middle and end of training; bars are means over seeds,
  whiskers span the seeds;
* ``time_to_target.png``: seconds of training until the held-out bound first reaches the
  target, per estimator;
* ``bounds.png``: the final bound ladder (ELBO, IWAE-K, importance-sampled and exact
  log p(x)) per estimator, mean and 95% t-interval over seeds.

Every figure says on itself what its bands and error bars are; each estimator has its
own colour, line style and marker, so that curves lying on top of each other stay
distinguishable; legends sit outside the axes.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

__all__ = ["plot_all", "plot_bounds", "plot_curves", "plot_gradients", "plot_time_to_target"]

_SNAPSHOTS = ("start", "mid", "end")
_GROUPS = ("model", "guide")


_LINESTYLES = ("-", "--", "-.", ":", (0, (6, 1.5, 1, 1.5)))
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _colors(labels: list[str]) -> dict[str, tuple]:
    cmap = plt.get_cmap("tab10")
    return {label: cmap(i % 10) for i, label in enumerate(labels)}


def _line_styles(labels: list[str]) -> dict[str, dict]:
    """Colour, line style and marker per estimator: no two of the first 40 alike."""
    colors = _colors(labels)
    return {label: {"color": colors[label], "ls": _LINESTYLES[i % len(_LINESTYLES)],
                    "marker": _MARKERS[i % len(_MARKERS)]} for i, label in enumerate(labels)}


def _seeds_text(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def _ok_labels(result) -> list[str]:
    ok = {r["estimator"] for r in result.runs if r["status"] == "ok"}
    return [label for label in result.labels if label in ok]


def _finite(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _curve_stats(result, label: str):
    """Per step: mean time, mean/min/max held-out bound over the seeds."""
    by_step: dict[int, list[dict]] = {}
    for c in result.curves:
        if c["estimator"] == label and _finite(c["heldout"]):
            by_step.setdefault(c["step"], []).append(c)
    steps = sorted(by_step)
    rows = []
    for s in steps:
        vals = [c["heldout"] for c in by_step[s]]
        times = [c["time"] for c in by_step[s]]
        rows.append((s, sum(times) / len(times), sum(vals) / len(vals), min(vals), max(vals)))
    return rows


def plot_curves(result, path: str | Path, *, x: str = "step") -> Path:
    """Held-out bound against ``x`` = ``"step"`` or ``"time"``."""
    cfg = result.config
    labels = _ok_labels(result)
    styles = _line_styles(result.labels)
    seeds = len(cfg["seeds"])
    fig, ax = plt.subplots(figsize=(7.6, 4.2))
    for label in labels:
        rows = _curve_stats(result, label)
        if not rows:
            continue
        xs = [r[0] if x == "step" else r[1] for r in rows]
        st = styles[label]
        ax.plot(xs, [r[2] for r in rows], color=st["color"], ls=st["ls"], marker=st["marker"],
                markevery=max(1, len(xs) // 7), ms=4.5, mfc="white", label=label, lw=1.6)
        if seeds > 1:
            ax.fill_between(xs, [r[3] for r in rows], [r[4] for r in rows],
                            color=st["color"], alpha=0.15, lw=0)
    if result.target is not None:
        ax.axhline(result.target, color="0.4", ls="--", lw=1,
                   label=f"target {result.target:.2f} (time to target)")
    ax.set_xlabel("optimiser step" if x == "step" else "training time (s)")
    ax.set_ylabel(f"held-out IWAE-{cfg['curve_particles']} bound (nats/point)")
    ax.set_title(f"{cfg['model']} on {cfg['data']}: learning curves ({_seeds_text(seeds)})")
    _clip_bottom(ax, result, labels)
    ax.grid(alpha=0.3)
    handles, names = ax.get_legend_handles_labels()
    if seeds > 1:
        handles.append(Patch(color="0.5", alpha=0.3))
        names.append(f"band: min to max over {seeds} seeds")
    ax.legend(handles, names, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
              title=f"line: mean over {_seeds_text(seeds)}", title_fontsize=8)
    return _save(fig, Path(path))


def _clip_bottom(ax, result, labels) -> None:
    # The first evaluations (random initialisation) can be far below everything else;
    # keep the interesting range in view.
    vals = sorted(c["heldout"] for c in result.curves
                  if c["estimator"] in labels and c["step"] > 0 and _finite(c["heldout"]))
    if len(vals) > 4:
        lo, hi = vals[len(vals) // 20], vals[-1]
        pad = 0.15 * (hi - lo) + 1e-6
        ax.set_ylim(lo - pad, hi + pad)


def plot_gradients(result, path: str | Path) -> Path:
    """Variance and SNR bars, model and guide, at the start/mid/end snapshots."""
    labels = _ok_labels(result)
    colors = _colors(result.labels)
    fig, axes = plt.subplots(2, 2, figsize=(10, 6.4), squeeze=False)
    width = 0.8 / max(1, len(labels))
    for col, group in enumerate(_GROUPS):
        for row, (key, title) in enumerate((("mean_variance", "gradient variance (per param)"),
                                            ("snr", "gradient SNR"))):
            ax = axes[row][col]
            shown = False
            for i, label in enumerate(labels):
                means, lo, hi = [], [], []
                for snap in _SNAPSHOTS:
                    vals = [g[key] for g in result.gradients if g["estimator"] == label
                            and g["group"] == group and g["snapshot"] == snap
                            and _finite(g[key])]
                    m = sum(vals) / len(vals) if vals else math.nan
                    means.append(m)
                    lo.append(m - min(vals) if vals else 0.0)
                    hi.append(max(vals) - m if vals else 0.0)
                xs = [j + (i - (len(labels) - 1) / 2) * width for j in range(len(_SNAPSHOTS))]
                ax.bar(xs, means, width=width, color=colors[label], label=label,
                       yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8})
                shown = shown or any(_finite(m) and m > 0 for m in means)
            ax.set_xticks(range(len(_SNAPSHOTS)))
            ax.set_xticklabels(_SNAPSHOTS)
            if shown:
                ax.set_yscale("log")
            else:  # e.g. a guide without parameters (an RBM's empty guide)
                ax.text(0.5, 0.5, "no values (no trainable parameters?)", ha="center",
                        va="center", transform=ax.transAxes, fontsize=9)
            ax.set_title(f"{group}: {title}", fontsize=10)
            ax.grid(axis="y", alpha=0.3)
    steps = result.config["snapshot_steps"]
    seeds = len(result.config["seeds"])
    spread = ("whiskers: min to max over the seeds" if seeds > 1 else "one seed: no whiskers")
    fig.suptitle(f"{result.config['grad_draws']} gradient draws on a fixed batch at steps "
                 f"{steps['start']}, {steps['mid']}, {steps['end']} (log scale)\n"
                 f"bars: mean over {_seeds_text(seeds)}; {spread}", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    if labels:
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(names), 6), fontsize=8,
                   frameon=False)
    return _save(fig, Path(path))


def plot_time_to_target(result, path: str | Path) -> Path:
    """Seconds until the held-out bound first reaches the target."""
    labels = _ok_labels(result)
    colors = _colors(result.labels)
    fig, ax = plt.subplots(figsize=(6.4, 0.5 * max(3, len(labels)) + 1))
    for i, label in enumerate(labels):
        runs = [r for r in result.runs if r["estimator"] == label and r["status"] == "ok"]
        times = [r["time_to_target_s"] for r in runs if _finite(r.get("time_to_target_s"))]
        if times:
            m = sum(times) / len(times)
            ax.barh(i, m, color=colors[label],
                    xerr=[[m - min(times)], [max(times) - m]], capsize=3)
            note = ("" if len(times) == len(runs)
                    else f"  ({len(times)} of {len(runs)} seeds reached it)")
            ax.text(max(times), i, f"  {m:.2f} s{note}", va="center", fontsize=8)
        else:
            ax.text(0, i, " not reached", va="center", fontsize=8, color="0.3")
    ax.set_yticks(range(len(labels)))
    ax.set_yticklabels(labels)
    ax.invert_yaxis()
    ax.set_xlim(right=ax.get_xlim()[1] * 1.2)  # room for the labels
    target = "" if result.target is None else f" {result.target:.2f}"
    ax.set_xlabel(f"training seconds to reach held-out IWAE-"
                  f"{result.config['curve_particles']} bound{target}")
    ax.set_title("time to target (lower is better)\nbars: mean over the seeds that reached "
                 "it; whiskers: min to max over them", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, Path(path))


def plot_bounds(result, path: str | Path) -> Path:
    """The final bound ladder per estimator (mean and 95% interval over seeds)."""
    cfg = result.config
    summary = [s for s in result.summary() if s["seeds"] > 0]
    seeds = len(cfg["seeds"])
    rungs = [("elbo", "ELBO", "o"), ("iwae", f"IWAE-{cfg['iwae_k']}", "s"),
             ("is_logpx", f"IS-{cfg['eval_samples']}", "^"), ("exact_logpx", "exact", "*")]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(summary) + 2) + 1.6, 4.2))
    for j, (key, name, marker) in enumerate(rungs):
        xs, ys, es = [], [], []
        for i, s in enumerate(summary):
            if _finite(s[f"{key}_mean"]):
                xs.append(i + (j - 1.5) * 0.12)
                ys.append(s[f"{key}_mean"])
                es.append(s[f"{key}_ci"] if _finite(s[f"{key}_ci"]) else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=es, fmt=marker, capsize=3, label=name, ms=6)
    ax.set_xticks(range(len(summary)))
    ax.set_xticklabels([s["estimator"] for s in summary], rotation=20, ha="right")
    ax.set_ylabel("nats per held-out point")
    ax.set_title(f"final bounds on held-out data ({cfg['model']}, {cfg['data']})")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1),
              title=(f"mean ± 95% t-interval\nover {seeds} seeds" if seeds > 1
                     else "one seed: no interval"), title_fontsize=8)
    return _save(fig, Path(path))


def plot_all(result, out_dir: str | Path) -> list[Path]:
    """Write every plot into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    return [plot_curves(result, out / "curves_steps.png", x="step"),
            plot_curves(result, out / "curves_time.png", x="time"),
            plot_gradients(result, out / "gradients.png"),
            plot_time_to_target(result, out / "time_to_target.png"),
            plot_bounds(result, out / "bounds.png")]
