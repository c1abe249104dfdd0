"""The result of a comparison: tidy rows, their summary over seeds, and its outputs.

:class:`ComparisonResult` holds one row per (estimator, seed) run, per learning-curve
point and per gradient snapshot.  :meth:`~ComparisonResult.summary` gives the mean and
the half-width of a 95% t-interval over seeds of every metric;
:meth:`~ComparisonResult.to_markdown`, :meth:`~ComparisonResult.to_json`,
:meth:`~ComparisonResult.to_csv` and :meth:`~ComparisonResult.save` write them
(``OUTPUT_FILES`` lists every file :meth:`~ComparisonResult.save` writes), and
:func:`fill_time_to_target` measures each run's time to a target held-out bound, for
:func:`~ppl_dgm.compare.compare` and for :meth:`~ComparisonResult.with_target`.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GROUPS", "METRICS", "OUTPUT_FILES", "SNAPSHOTS", "TIMING_COLUMNS",
           "ComparisonResult", "Interval", "fill_time_to_target", "t_interval"]

# Gradient snapshots (parameters at the start, middle and end of training) and the
# parameter groups measured at each.
SNAPSHOTS = ("start", "mid", "end")
GROUPS = ("model", "guide")
# Columns that measure time or memory: they differ between otherwise identical runs.
TIMING_COLUMNS = ("train_seconds", "ms_per_step", "time_to_target_s", "peak_mem_mb", "time")
# Per-run metrics summarised over seeds (mean and 95% t-interval).
METRICS = ("is_logpx", "iwae", "elbo", "exact_logpx", "heldout", "train_objective",
           "grad_var_model", "grad_var_guide", "grad_snr_model", "grad_snr_guide",
           "ms_per_step", "time_to_target_s", "peak_mem_mb")
# Every file :meth:`ComparisonResult.save` writes (besides the marker complete.json).
OUTPUT_FILES = ("table.md", "summary.csv", "runs.csv", "curves.csv", "gradients.csv",
                "results.json", "curves_steps.png", "curves_time.png", "gradients.png",
                "time_to_target.png", "bounds.png", "samples.npz", "report.html")


@dataclass(frozen=True)
class Interval:
    """A mean over seeds and the half-width of its 95% t-interval."""

    mean: float
    half_width: float


def t_interval(values: list[float]) -> Interval:
    """Mean and the half-width of a 95% t-interval (NaN with fewer than two values)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return Interval(math.nan, math.nan)
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return Interval(mean, math.nan)
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return Interval(mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n))


def _clean(value):
    """JSON-safe values: NaN and infinities become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _write_csv(path: Path, rows: list[dict]) -> Path:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v))
                                 else v) for k, v in row.items()})
    return path


@dataclass(frozen=True)
class ComparisonResult:
    """Everything :func:`~ppl_dgm.compare.compare` measured, as tidy rows.

    * ``runs``: one row per (estimator, seed) with status, reason and every scalar
      metric (the gradient columns are at the ``"mid"`` snapshot);
    * ``curves``: one row per (estimator, seed, evaluation step): step, training time,
      held-out bound, training objective per point;
    * ``gradients``: one row per (estimator, seed, snapshot, group) with the gradient
      variance and SNR summaries of :class:`~ppl_dgm.gradvar.GradStats`;
    * ``config``: the settings; ``target``: the held-out bound that
      ``time_to_target_s`` refers to;
    * ``samples``: ``{estimator: array (n, D)}``, data drawn from each estimator's
      trained model of the first seed (for the report's sample grids; empty where the
      model cannot be sampled).
    """

    config: dict
    runs: list[dict] = field(repr=False)
    curves: list[dict] = field(repr=False)
    gradients: list[dict] = field(repr=False)
    target: float | None = None
    samples: dict = field(default_factory=dict, repr=False)

    @property
    def labels(self) -> list[str]:
        return list(self.config["estimators"])

    def summary(self) -> list[dict]:
        """One row per estimator: status, seeds, and mean and 95% CI of each metric."""
        out = []
        for label in self.labels:
            runs = [r for r in self.runs if r["estimator"] == label]
            ok = [r for r in runs if r["status"] == "ok"]
            status = "ok" if len(ok) == len(runs) else (
                runs[0]["status"] if not ok else f"ok ({len(runs) - len(ok)} failed)")
            reasons = sorted({r["reason"] for r in runs if r.get("reason")})
            row = {"estimator": label, "status": status, "reason": "; ".join(reasons),
                   "seeds": len(ok)}
            for m in METRICS:
                interval = t_interval([r.get(m) for r in ok])
                row[f"{m}_mean"], row[f"{m}_ci"] = interval.mean, interval.half_width
            row["target_reached"] = sum(1 for r in ok if r.get("time_to_target_s") is not None)
            out.append(row)
        return out

    def to_markdown(self, *, timing: bool = True) -> str:
        """The summary as a markdown table, skipped and failed runs listed below it.

        ``timing=False`` leaves out the time and memory columns (which differ between
        otherwise identical runs)."""
        cfg = self.config
        summary = self.summary()
        has_exact = any(math.isfinite(r["exact_logpx_mean"]) for r in summary)
        cols = [("is_logpx", f"log p(x) IS-{cfg['eval_samples']}", _fmt_bound),
                ("iwae", f"IWAE-{cfg['iwae_k']}", _fmt_bound),
                ("elbo", "ELBO", _fmt_bound)]
        if has_exact:
            cols.append(("exact_logpx", "log p(x) exact", _fmt_bound))
        cols += [("grad_var_guide", "guide grad var", _fmt_sci),
                 ("grad_snr_guide", "guide SNR", _fmt_sci),
                 ("grad_var_model", "model grad var", _fmt_sci),
                 ("grad_snr_model", "model SNR", _fmt_sci)]
        if timing:
            cols += [("ms_per_step", "ms/step", _fmt_plain),
                     ("time_to_target_s", "s to target", _fmt_plain),
                     ("peak_mem_mb", "peak MB", _fmt_plain)]
        header = ["estimator", "seeds"] + [c[1] for c in cols]
        lines = ["| " + " | ".join(header) + " |",
                 "|" + "|".join(["---"] + ["--:"] * (len(header) - 1)) + "|"]
        notes = []
        for row in summary:
            if row["seeds"] == 0:
                notes.append(f"- **{row['estimator']}** {row['status']}: {row['reason']}")
                continue
            cells = [row["estimator"], str(row["seeds"])]
            for key, _, fmt in cols:
                cell = fmt(row[f"{key}_mean"], row[f"{key}_ci"])
                if key == "time_to_target_s" and row["target_reached"] < row["seeds"]:
                    cell = (f"{cell} ({row['target_reached']}/{row['seeds']})"
                            if row["target_reached"] else "not reached")
                cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
            if row["status"] != "ok":
                notes.append(f"- **{row['estimator']}** {row['status']}: {row['reason']}")
        target = (f"; time to target: training seconds until the held-out IWAE-"
                  f"{cfg['curve_particles']} bound first reaches {self.target:.3f}"
                  if self.target is not None and timing else "")
        kinds = sorted({r["mem_kind"] for r in self.runs if r.get("mem_kind")})
        if timing and kinds:
            target += f"; peak MB: {', '.join(kinds)}"
        caption = (f"{cfg['model']} + {cfg['guide']} on {cfg['data']}, {cfg['steps']} steps, "
                   f"seeds {cfg['seeds']}; bounds in nats per held-out point (mean ± 95% "
                   f"t-interval over seeds); gradient variance (mean per parameter) and SNR "
                   f"(norm of mean / sqrt of total variance) at mid-training, "
                   f"{cfg['grad_draws']} draws{target}"
                   + ("; (k/n): only k of n seeds reached it, mean over those k"
                      if timing and self.target is not None else "") + ".")
        text = "\n".join(lines) + "\n\n" + caption + "\n"
        if notes:
            text += "\nNot compared:\n" + "\n".join(notes) + "\n"
        return text

    @classmethod
    def load(cls, path: str | Path) -> ComparisonResult:
        """Read a result back from the ``results.json`` that :meth:`save` wrote (or its
        directory), e.g. to redraw the plots or change the target.  A directory without
        the completeness marker (an interrupted save) is refused with
        :class:`~ppl_dgm.errors.IncompleteResultError`."""
        from ..errors import CheckpointError, IncompleteResultError
        from ..runfiles import read_json
        from .store import check_complete

        path = Path(path)
        folder = path if path.is_dir() else path.parent
        check_complete(folder)
        try:
            doc = read_json(folder / "results.json", what="comparison result", root=folder)
            samples = {}
            if (folder / "samples.npz").is_file():
                import numpy as np

                with np.load(folder / "samples.npz", allow_pickle=False) as f:
                    samples = {k: f[k] for k in f.files}
            return cls(doc["config"], doc["runs"], doc["curves"], doc["gradients"],
                       doc["target"], samples)
        except (CheckpointError, KeyError, TypeError, ValueError, OSError) as e:
            raise IncompleteResultError(f"{str(folder)!r}: results.json or samples.npz is "
                                        f"corrupt ({e})") from None

    def with_target(self, target: float) -> ComparisonResult:
        """The same result with ``time_to_target_s`` measured against another target."""
        runs = [dict(r) for r in self.runs]
        used = fill_time_to_target(runs, self.curves, float(target))
        return ComparisonResult(self.config, runs, self.curves, self.gradients, used,
                                self.samples)

    def to_json(self) -> str:
        """Config, target, summary and all rows as a JSON document (NaN as null)."""
        doc = {"config": self.config, "target": self.target, "summary": self.summary(),
               "runs": self.runs, "curves": self.curves, "gradients": self.gradients}
        return json.dumps(_clean(doc), indent=1)

    def to_csv(self, path: str | Path, *, table: str = "runs") -> Path:
        """Write one table (``runs``, ``curves``, ``gradients`` or ``summary``) as CSV."""
        tables = {"runs": self.runs, "curves": self.curves, "gradients": self.gradients,
                  "summary": None}
        if table not in tables:
            raise ValueError(f"table={table!r}; choose one of {sorted(tables)}")
        rows = self.summary() if table == "summary" else tables[table]
        return _write_csv(Path(path), rows)

    def plot(self, out_dir: str | Path) -> list[Path]:
        """Draw the PNG plots into ``out_dir`` (see :mod:`ppl_dgm.compare.plots`)."""
        from .plots import plot_all

        return plot_all(self, out_dir)

    def save(self, out_dir: str | Path, *, plots: bool = True, report: bool = True,
             command: str | None = None, extra: dict[str, Path] | None = None) -> list[Path]:
        """Write table.md, summary/runs/curves/gradients CSV, results.json, the plots,
        samples.npz and report.html (:mod:`ppl_dgm.report`; ``command`` is shown in it),
        and copies of the ``extra`` files or folders, atomically: into a temporary
        directory that ends with the completeness marker ``complete.json`` and then
        takes the place of ``out_dir`` (see :mod:`ppl_dgm.compare.store`), so a crash
        leaves the old result or the new one, never a mix."""
        from .store import write_dir_atomically

        def write(tmp: Path) -> list[Path]:
            paths = self._write(tmp, plots=plots, report=report, command=command)
            for name, src in (extra or {}).items():
                if src.is_dir():
                    shutil.copytree(src, tmp / name)
                else:
                    shutil.copyfile(src, tmp / name)
            return paths

        return write_dir_atomically(out_dir, write)

    def _write(self, out: Path, *, plots: bool, report: bool = True,
               command: str | None = None) -> list[Path]:
        (out / "table.md").write_text(self.to_markdown())
        (out / "results.json").write_text(self.to_json())
        paths = [out / "table.md", out / "results.json"]
        for table in ("summary", "runs", "curves", "gradients"):
            paths.append(self.to_csv(out / f"{table}.csv", table=table))
        if plots:
            paths += self.plot(out)
        if self.samples:
            import numpy as np

            np.savez_compressed(out / "samples.npz", **self.samples)
            paths.append(out / "samples.npz")
        if report:
            from ..report import write_compare_report

            paths.append(write_compare_report(self, out, command=command))
        return paths


def _fmt_bound(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.2f}" + (f" ± {ci:.2f}" if math.isfinite(ci) else "")


def _fmt_sci(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3g}" + (f" ± {ci:.2g}" if math.isfinite(ci) else "")


def _fmt_plain(mean: float, ci: float) -> str:
    if not math.isfinite(mean):
        return "–"
    return f"{mean:.3g}"


# --------------------------------------------------------------------- time to target
def fill_time_to_target(runs: list[dict], curves: list[dict],
                        target: float | None) -> float | None:
    """Set ``time_to_target_s`` and ``steps_to_target`` of every ``"ok"`` row of ``runs``
    (in place): the first learning-curve point whose held-out bound reaches ``target``,
    or None.  ``target=None`` takes the lowest best-curve value over the estimators (mean
    over seeds), so that every estimator can reach it.  Returns the target used."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return target
    by_run: dict[tuple, list[dict]] = {}
    for c in curves:
        if c["step"] > 0 and c["heldout"] is not None and math.isfinite(c["heldout"]):
            by_run.setdefault((c["estimator"], c["seed"]), []).append(c)
    if target is None:
        best: dict[str, list[float]] = {}
        for r in ok:
            pts = by_run.get((r["estimator"], r["seed"]))
            if pts:
                best.setdefault(r["estimator"], []).append(max(c["heldout"] for c in pts))
        if not best:
            return None
        target = min(sum(v) / len(v) for v in best.values())
    for r in ok:
        pts = sorted(by_run.get((r["estimator"], r["seed"]), []), key=lambda c: c["step"])
        hit = next((c for c in pts if c["heldout"] >= target), None)
        r["time_to_target_s"] = None if hit is None else hit["time"]
        r["steps_to_target"] = None if hit is None else hit["step"]
    return float(target)

