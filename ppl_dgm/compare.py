"""Compare estimators on one model, fairly, and report a tidy table.

:func:`compare` trains one model and guide with each of several estimators.  Within a
seed every estimator starts from the same initial parameters (the model and guide are
built once under ``torch.manual_seed(seed)`` and deep-copied), sees the same minibatch
order (:func:`~ppl_dgm.train.fit` draws it from the same seed) and is evaluated with
the same random numbers.  Several seeds give means and 95% t-intervals.

Measured for every (estimator, seed) run:

* a learning curve: the held-out IWAE-K bound (``curve_particles`` samples) against
  steps and against training wall-clock time (evaluation time excluded);
* the final bound ladder on held-out data: ELBO, IWAE-K, importance-sampled
  ``log p(x)`` (``eval_samples``, 5000 by default) and the exact ``log p(x)`` where the
  model has ``log_prob`` (:func:`~ppl_dgm.evaluate.evaluate`);
* gradient variance and SNR for model and guide parameters separately, from
  ``grad_draws`` draws on a fixed batch at three parameter snapshots: start, middle and
  end of training (:func:`~ppl_dgm.gradvar.gradient_stats`);
* time per step, peak memory during training (CUDA max allocated, or on CPU the
  process's peak resident set size, reset before each run on Linux), and time to reach
  a target held-out bound.

Estimators that cannot train the model are skipped with the reason: GAN-type
estimators (``needs_likelihood = False``) have no bound to compare, and the others are
asked through :meth:`~ppl_dgm.estimators.base.Estimator.check`.  A run that fails
(a NaN loss, say) is reported as failed; the other runs go on.

Example::

    from ppl_dgm.compare import compare
    from ppl_dgm.data import load_digits

    result = compare("vae", None, ["elbo", "iwae:num_particles=5"], load_digits(),
                     steps=1000, seeds=2, eval_samples=1000)
    print(result.to_markdown())
    result.save("runs/cmp")   # CSV, JSON, markdown and PNG plots
"""

from __future__ import annotations

import ast
import copy
import csv
import inspect
import json
import math
import resource
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from . import registry
from .checks import check_model_data, check_pair, check_setup
from .data import Dataset, check_data, load_data
from .errors import IncompatibleEstimatorError
from .estimators.base import Estimator
from .evaluate import bound, evaluate
from .gradvar import gradient_stats
from .train import fit, resolve_device

__all__ = ["ComparisonResult", "EstimatorSpec", "OUTPUT_FILES", "SNAPSHOTS", "TIMING_COLUMNS",
           "compare", "parse_estimators"]

SNAPSHOTS = ("start", "mid", "end")
GROUPS = ("model", "guide")
# Columns that measure time or memory: they differ between otherwise identical runs.
TIMING_COLUMNS = ("train_seconds", "ms_per_step", "time_to_target_s", "peak_mem_mb", "time")
# Per-run metrics summarised over seeds (mean and 95% t-interval).
METRICS = ("is_logpx", "iwae", "elbo", "exact_logpx", "heldout", "train_objective",
           "grad_var_model", "grad_var_guide", "grad_snr_model", "grad_snr_guide",
           "ms_per_step", "time_to_target_s", "peak_mem_mb")
# Every file :meth:`ComparisonResult.save` writes (``--overwrite`` replaces only these).
OUTPUT_FILES = ("table.md", "summary.csv", "runs.csv", "curves.csv", "gradients.csv",
                "results.json", "curves_steps.png", "curves_time.png", "gradients.png",
                "time_to_target.png", "bounds.png")


# --------------------------------------------------------------------- estimator specs
@dataclass(frozen=True)
class EstimatorSpec:
    """One estimator of a comparison: a label, a class or registered name, options.

    ``particles_from_default`` is True when ``num_particles`` was filled in from the
    comparison-wide ``particles`` rather than given for this estimator.
    """

    label: str
    estimator: str | type | Estimator
    options: Mapping[str, object] = field(default_factory=dict)
    particles_from_default: bool = False

    @property
    def cls(self) -> type:
        if isinstance(self.estimator, Estimator):
            return type(self.estimator)
        return registry.resolve("estimator", self.estimator)

    def build(self) -> Estimator:
        if isinstance(self.estimator, Estimator):
            est = copy.deepcopy(self.estimator)
            if self.options:
                raise ValueError(f"estimator {self.label!r} is an instance; options "
                                 f"{dict(self.options)} cannot be applied to it")
            return est
        return registry.build_estimator(self.estimator, options=dict(self.options))


def _parse_value(text: str):
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return list(value) if isinstance(value, tuple) else value


def _split_item(item: str) -> tuple[str, list[str]]:
    """``"iwae:num_particles=5:dreg=True"`` -> ``("iwae", ["num_particles=5", "dreg=True"])``;
    a user file ``"path/est.py:MyEst:k=3"`` keeps ``path/est.py:MyEst`` as the name."""
    if ".py:" in item:
        path, _, rest = item.partition(".py:")
        cls_name, *opts = rest.split(":")
        return f"{path}.py:{cls_name}", opts
    name, *opts = item.split(":")
    return name, opts


def _accepts_particles(cls: type) -> bool:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return False
    return "num_particles" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def parse_estimators(spec: str | Sequence, *, particles: int | None = None) -> list[EstimatorSpec]:
    """Turn an estimator list into :class:`EstimatorSpec` objects.

    ``spec`` is a comma-separated string or a sequence whose items are

    * a registered name, ``"all"`` (every registered estimator), or a user's
      ``"path/to/file.py:ClassName"``, optionally followed by options
      ``:key=value[:key=value...]``, e.g. ``"iwae:num_particles=5:dreg=True"``;
    * an :class:`~ppl_dgm.estimators.base.Estimator` subclass or instance;
    * an :class:`EstimatorSpec`.

    ``particles`` sets ``num_particles`` for every estimator whose constructor takes
    it, unless that estimator's options give it.  Labels (the item as written) must be
    unique: to compare one estimator with two settings, give the options, e.g.
    ``"iwae:num_particles=5,iwae:num_particles=50"``.
    """
    if isinstance(spec, str):
        items: list = [s.strip() for s in spec.split(",")] if spec.strip() else []
        if any(not s for s in items):
            raise ValueError(f"estimator list {spec!r} has an empty entry; give names separated "
                             f"by commas, e.g. 'elbo,iwae' (options after a colon: "
                             f"'iwae:num_particles=5')")
    elif isinstance(spec, (type, Estimator, EstimatorSpec)):
        items = [spec]
    else:
        items = list(spec)
    if particles is not None and (not isinstance(particles, int) or particles < 1):
        raise ValueError(f"particles must be a positive integer, got {particles!r}")
    if not items:
        raise ValueError("the estimator list is empty; name at least one estimator, e.g. "
                         f"'elbo,iwae' (registered: {', '.join(registry.ESTIMATORS)})")
    out: list[EstimatorSpec] = []
    for item in items:
        if isinstance(item, EstimatorSpec):
            out.append(item)
            continue
        if isinstance(item, Estimator):
            out.append(EstimatorSpec(item.name, item))
            continue
        if isinstance(item, type):
            registry.resolve("estimator", item)
            out.append(_with_particles(EstimatorSpec(item.__name__, item), particles))
            continue
        if not isinstance(item, str):
            raise TypeError(f"estimator entries are names, Estimator classes or instances; "
                            f"got {type(item).__name__}")
        if item == "all":
            out.extend(_with_particles(EstimatorSpec(n, n), particles)
                       for n in registry.ESTIMATORS)
            continue
        name, opt_items = _split_item(item)
        registry.resolve("estimator", name)  # unknown names fail here, before any work
        options = {}
        for opt in opt_items:
            key, sep, value = opt.partition("=")
            if not sep or not key:
                raise ValueError(f"estimator option {opt!r} in {item!r} is not key=value; "
                                 f"write e.g. 'iwae:num_particles=5:dreg=True'")
            options[key] = _parse_value(value)
        label = item if ".py:" not in item else item.partition(".py:")[2]
        out.append(_with_particles(EstimatorSpec(label, name, options), particles))
    labels = [s.label for s in out]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ValueError(f"estimator(s) {dupes} listed more than once; give distinct options "
                         f"to compare settings, e.g. 'iwae:num_particles=5,iwae:num_particles=50'")
    return out


def _with_particles(spec: EstimatorSpec, particles: int | None) -> EstimatorSpec:
    if particles is None or "num_particles" in spec.options or not _accepts_particles(spec.cls):
        return spec
    return EstimatorSpec(spec.label, spec.estimator, {**spec.options, "num_particles": particles},
                         particles_from_default=True)


# --------------------------------------------------------------------- the result
def _t_interval(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of a 95% t-interval (NaN with fewer than two values)."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return math.nan, math.nan
    n = len(vals)
    mean = sum(vals) / n
    if n < 2:
        return mean, math.nan
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in vals) / (n - 1))
    return mean, float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


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
    """Everything :func:`compare` measured, as tidy rows.

    * ``runs``: one row per (estimator, seed) with status, reason and every scalar
      metric (the gradient columns are at the ``"mid"`` snapshot);
    * ``curves``: one row per (estimator, seed, evaluation step): step, training time,
      held-out bound, training objective per point;
    * ``gradients``: one row per (estimator, seed, snapshot, group) with the gradient
      variance and SNR summaries of :class:`~ppl_dgm.gradvar.GradStats`;
    * ``config``: the settings; ``target``: the held-out bound that
      ``time_to_target_s`` refers to.
    """

    config: dict
    runs: list[dict] = field(repr=False)
    curves: list[dict] = field(repr=False)
    gradients: list[dict] = field(repr=False)
    target: float | None = None

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
                mean, ci = _t_interval([r.get(m) for r in ok])
                row[f"{m}_mean"], row[f"{m}_ci"] = mean, ci
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
                   f"{cfg['grad_draws']} draws{target}.")
        text = "\n".join(lines) + "\n\n" + caption + "\n"
        if notes:
            text += "\nNot compared:\n" + "\n".join(notes) + "\n"
        return text

    @classmethod
    def load(cls, path: str | Path) -> ComparisonResult:
        """Read a result back from the ``results.json`` that :meth:`save` wrote (or its
        directory), e.g. to redraw the plots or change the target."""
        path = Path(path)
        if path.is_dir():
            path = path / "results.json"
        doc = json.loads(path.read_text())
        return cls(doc["config"], doc["runs"], doc["curves"], doc["gradients"], doc["target"])

    def with_target(self, target: float) -> ComparisonResult:
        """The same result with ``time_to_target_s`` measured against another target."""
        runs = [dict(r) for r in self.runs]
        used = _fill_time_to_target(runs, self.curves, float(target))
        return ComparisonResult(self.config, runs, self.curves, self.gradients, used)

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
        """Draw the PNG plots into ``out_dir`` (see :mod:`ppl_dgm.compare_plots`)."""
        from .compare_plots import plot_all

        return plot_all(self, out_dir)

    def save(self, out_dir: str | Path, *, plots: bool = True) -> list[Path]:
        """Write table.md, summary/runs/curves/gradients CSV, results.json and the plots."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "table.md").write_text(self.to_markdown())
        (out / "results.json").write_text(self.to_json())
        paths = [out / "table.md", out / "results.json"]
        for table in ("summary", "runs", "curves", "gradients"):
            paths.append(self.to_csv(out / f"{table}.csv", table=table))
        if plots:
            paths += self.plot(out)
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


# --------------------------------------------------------------------- compare
def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of integers, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (the number of seeds), got {seeds}")
        return list(range(seeds))
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise ValueError(f"seeds must be a positive count or a non-empty list of integers, "
                         f"got {seeds!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds {out} repeat a value; each seed is one independent run")
    return out


def _model_builder(model_factory, x_dim: int, options: dict | None) -> Callable:
    if isinstance(model_factory, (str, type)):
        registry.resolve("model", model_factory)
        return lambda: registry.build_model(model_factory, x_dim=x_dim, options=options)
    if callable(model_factory):
        if options:
            return lambda: model_factory(**options)
        return model_factory
    raise TypeError(f"model_factory must be a registered name, 'file.py:Class', a class or a "
                    f"callable returning a model; got {type(model_factory).__name__}")


def _guide_builder(guide_factory, model_factory, options: dict | None) -> Callable:
    if guide_factory is None:
        if not isinstance(model_factory, (str, type)):
            raise ValueError("guide_factory=None needs the model given by name or class (to "
                             "find its default guide); pass a guide factory")
        guide_factory = registry.default_guide(model_factory)
    if isinstance(guide_factory, (str, type)):
        registry.resolve("guide", guide_factory)
        return lambda model: registry.build_guide(guide_factory, model, options=options)
    if callable(guide_factory):
        return guide_factory
    raise TypeError(f"guide_factory must be a registered name, 'file.py:Class', a class or a "
                    f"callable model -> guide; got {type(guide_factory).__name__}")


def _name_of(factory) -> str:
    if factory is None:
        return "default"
    if isinstance(factory, str):
        return factory
    return getattr(factory, "__name__", type(factory).__name__)


def _largest_divisor_at_most(n: int, cap: int) -> int:
    for d in range(min(n, cap), 0, -1):
        if n % d == 0:
            return d
    return 1


def _reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_memory_mb(device: torch.device) -> tuple[float, str]:
    """Peak memory since :func:`_reset_peak_memory`: CUDA max allocated, or the process's
    peak resident set size on CPU (Linux; elsewhere the process's lifetime peak)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10, "cpu_peak_rss"
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (2**20 if sys.platform == "darwin" else 2**10), "cpu_process_max_rss"


def _fork(device: torch.device):
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


def _heldout(model, guide, x, k: int, seed: int, device) -> float:
    with _fork(device), torch.no_grad():
        torch.manual_seed(seed)
        model.eval(), guide.eval()
        try:
            return float(bound(model, guide, x, k).mean())
        finally:
            model.train(), guide.train()


def _skip_reason(spec: EstimatorSpec) -> str | None:
    cls = spec.cls
    if not getattr(cls, "needs_likelihood", True):
        return (f"{cls.__name__} does not use the likelihood (needs_likelihood=False, a GAN-type "
                f"objective), so it has no bound to compare; compare it with sample-based "
                f"metrics instead")
    k = spec.options.get("num_particles")
    if spec.particles_from_default and isinstance(k, int) and k < cls.min_particles:
        return (f"{cls.__name__} needs num_particles >= {cls.min_particles}; the "
                f"comparison-wide particles={k} does not suit it (give it its own, e.g. "
                f"'{spec.label}:num_particles={cls.min_particles}')")
    return None


def compare(model_factory, guide_factory, estimators, data, *, steps: int,
            seeds: int | Sequence[int] = 1, batch_size: int = 100, lr: float = 1e-3,
            lr_groups: Mapping[str, float] | None = None, optim: str = "adam",
            device: str | torch.device = "auto", particles: int | None = None,
            model_options: dict | None = None, guide_options: dict | None = None,
            eval_data: torch.Tensor | None = None, eval_every: int | None = None,
            curve_particles: int = 50, iwae_k: int = 50, eval_samples: int = 5000,
            grad_draws: int = 100, target: float | None = None,
            progress: bool = False) -> ComparisonResult:
    """Train ``model`` + ``guide`` with each estimator from the same start; measure and tabulate.

    :param model_factory: a registered model name, ``"path/to/file.py:Class"``, a model
        class (built with ``x_dim`` when it takes one, plus ``model_options``), or a
        callable returning a fresh model.
    :param guide_factory: a registered guide name, a file spec or class (built with
        ``from_model`` when it has one), a callable ``model -> guide``, or None for the
        model's usual guide.
    :param estimators: see :func:`parse_estimators`, e.g. ``"elbo,iwae:num_particles=5"``.
    :param data: a :class:`~ppl_dgm.data.Dataset` (its test split is the held-out
        data), a data spec such as ``"digits"``, or a tensor ``(N, D)`` (then held-out
        numbers use ``eval_data``, or the training data when that is None).
    :param steps: optimiser steps per run.  :param seeds: a count (seeds 0..n-1) or a list.
    :param particles: ``num_particles`` for every estimator that takes it and was not
        given one.
    :param eval_every: steps between learning-curve points (default: steps // 20).
    :param curve_particles: K of the held-out IWAE-K bound on the learning curves.
    :param iwae_k, eval_samples: K of the final IWAE bound and of importance-sampled
        ``log p(x)`` (5000 as in the literature; smaller for quick runs).
    :param grad_draws: gradient draws per snapshot (0 skips the gradient measurement).
    :param target: held-out bound for the time-to-target column (default: the lowest
        best-curve value over the estimators, mean over seeds, so all can reach it).
    :param progress: show a progress bar (tqdm) naming the run in progress.
    """
    # ---- validate everything before any training
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    seed_list = _seed_list(seeds)
    specs = parse_estimators(estimators, particles=particles)
    for name, value, low in (("curve_particles", curve_particles, 1), ("iwae_k", iwae_k, 1),
                             ("eval_samples", eval_samples, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(grad_draws, int) or grad_draws == 1 or grad_draws < 0:
        raise ValueError(f"grad_draws must be 0 (off) or an integer >= 2, got {grad_draws!r}")
    if eval_every is None:
        eval_every = max(1, steps // 20)
    if not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
    skip: dict[str, str | None] = {s.label: _skip_reason(s) for s in specs}
    for spec in specs:  # bad options fail now, not after hours of other runs
        if skip[spec.label] is None:
            try:
                spec.build()
            except ValueError as e:
                if not spec.particles_from_default:
                    raise
                skip[spec.label] = f"particles={particles} does not suit it: {e}"
    dev = resolve_device(device)
    data_name = data if isinstance(data, str) else getattr(data, "name", "tensor")
    if isinstance(data, str):
        data = load_data(data)
    if isinstance(data, Dataset):
        train_x = check_data(data.train, name="training data")
        if eval_data is None:
            eval_data = data.test if data.test.shape[0] else None
    else:
        train_x = check_data(data, name="training data")
    eval_split = "test" if eval_data is not None else "train"
    eval_x = check_data(eval_data if eval_data is not None else train_x,
                        name="evaluation data").to(dev)
    if batch_size > train_x.shape[0]:
        raise ValueError(f"batch_size={batch_size} exceeds the {train_x.shape[0]} training points")
    make_model = _model_builder(model_factory, train_x.shape[1], model_options)
    make_guide = _guide_builder(guide_factory, model_factory, guide_options)
    guide_name = _name_of(guide_factory if guide_factory is not None else
                          registry.default_guide(model_factory))

    log_every = _largest_divisor_at_most(eval_every, 50)
    mid = min(steps, max(log_every, round(steps / 2 / log_every) * log_every))
    config = {"model": _name_of(model_factory), "guide": guide_name, "data": str(data_name),
              "estimators": [s.label for s in specs],
              "estimator_options": {s.label: dict(s.options) for s in specs},
              "steps": steps, "seeds": seed_list, "batch_size": batch_size, "lr": lr,
              "lr_groups": dict(lr_groups or {}), "optim": optim, "device": str(dev),
              "particles": particles, "eval_every": eval_every, "eval_split": eval_split,
              "curve_particles": curve_particles, "iwae_k": iwae_k,
              "eval_samples": eval_samples, "grad_draws": grad_draws,
              "snapshot_steps": {"start": 0, "mid": mid, "end": steps},
              "table_snapshot": "mid"}

    runs: list[dict] = []
    curves: list[dict] = []
    gradients: list[dict] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        todo = sum(1 for s in specs if skip[s.label] is None) * len(seed_list)
        bar = tqdm(total=todo * steps, unit="step", desc="compare", dynamic_ncols=True)
    n_train = train_x.shape[0]
    try:
        for seed in seed_list:
            torch.manual_seed(seed)
            model0 = make_model().to(dev)
            guide0 = make_guide(model0).to(dev)
            x_fixed = train_x[torch.randperm(n_train, generator=torch.Generator()
                                             .manual_seed(seed))[:batch_size]].to(dev)
            if seed == seed_list[0] and any(skip[s.label] is None for s in specs):
                with pyro.validation_enabled(True):  # model/guide errors concern every run
                    check_model_data(model0, x_fixed)
                    check_pair(model0, guide0, x_fixed)
            curve0 = None
            for spec in specs:
                row = {"estimator": spec.label, "estimator_class": spec.cls.__name__,
                       "options": json.dumps(dict(spec.options), sort_keys=True, default=str),
                       "seed": seed, "status": "ok", "reason": ""}
                if skip[spec.label] is not None:
                    failed = skip[spec.label].startswith("check failed")
                    row.update(status="failed" if failed else "skipped", reason=skip[spec.label])
                    runs.append(row)
                    continue
                model, guide = copy.deepcopy((model0, guide0))
                torch.manual_seed(seed)
                est = spec.build().to(dev)
                try:
                    with pyro.validation_enabled(True):
                        check_setup(model, guide, est, x_fixed)
                except Exception as e:  # the estimator's own check; never end the comparison
                    incompatible = isinstance(e, IncompatibleEstimatorError)
                    reason = str(e) if incompatible else f"check failed: {type(e).__name__}: {e}"
                    skip[spec.label] = reason
                    row.update(status="skipped" if incompatible else "failed", reason=reason)
                    runs.append(row)
                    if bar is not None:
                        bar.total -= steps * (len(seed_list) - seed_list.index(seed))
                        bar.refresh()
                    continue
                if curve0 is None:
                    curve0 = _heldout(model, guide, eval_x, curve_particles, seed * 7919, dev)
                if bar is not None:
                    bar.set_description(f"{spec.label} seed {seed}")
                    bar_start = bar.n
                try:
                    _run_one(spec, seed, model, guide, est, data if isinstance(data, Dataset)
                             else train_x, eval_x, x_fixed, row, curves, gradients,
                             steps=steps, mid=mid, curve0=curve0, n_train=n_train,
                             batch_size=batch_size, lr=lr, lr_groups=lr_groups, optim=optim,
                             dev=dev, log_every=log_every, eval_every=eval_every,
                             curve_particles=curve_particles, iwae_k=iwae_k,
                             eval_samples=eval_samples, grad_draws=grad_draws, bar=bar)
                except Exception as e:  # one failing run must not end the comparison
                    row.update(status="failed", reason=f"{type(e).__name__}: {e}")
                if bar is not None:
                    bar.update(bar_start + steps - bar.n)
                runs.append(row)
    finally:
        if bar is not None:
            bar.close()
    target = _fill_time_to_target(runs, curves, target)
    return ComparisonResult(config, runs, curves, gradients, target)


def _run_one(spec, seed, model, guide, est, data, eval_x, x_fixed, row, curves, gradients, *,
             steps, mid, curve0, n_train, batch_size, lr, lr_groups, optim, dev, log_every,
             eval_every, curve_particles, iwae_k, eval_samples, grad_draws, bar) -> None:
    label = spec.label
    run_curves = [{"estimator": label, "seed": seed, "step": 0, "time": 0.0, "heldout": curve0,
                   "train_objective": None}]

    def measure(snapshot: str, step: int) -> None:
        if not grad_draws:
            return
        stats = gradient_stats(model, guide, est, x_fixed, num_draws=grad_draws,
                               seed=seed * 1_000_003 + step)
        for group in GROUPS:
            gradients.append({"estimator": label, "seed": seed, "snapshot": snapshot,
                              "step": step, **stats[group].as_dict()})
            if snapshot == "mid":
                row[f"grad_var_{group}"] = stats[group].mean_variance
                row[f"grad_snr_{group}"] = stats[group].snr

    last = [0]

    def callback(step: int, fit_row: dict) -> None:
        if bar is not None:
            bar.update(step - last[0])
            last[0] = step
        if step % eval_every == 0 or step == steps:
            objective = fit_row.get("objective")
            run_curves.append({
                "estimator": label, "seed": seed, "step": step, "time": fit_row["time"],
                "heldout": _heldout(model, guide, eval_x, curve_particles,
                                    seed * 7919 + step, dev),
                "train_objective": None if objective is None else objective / n_train})
        if step == mid:
            measure("mid", step)
        if step == steps:
            row["train_seconds"] = fit_row["time"]
            measure("end", step)

    measure("start", 0)
    _reset_peak_memory(dev)
    try:
        fit(model, guide, est, data, steps=steps, batch_size=batch_size, optim=optim, lr=lr,
            lr_groups=lr_groups, device=dev, seed=seed, log_every=log_every, eval_every=0,
            progress=False, callback=callback)
    finally:
        curves.extend(run_curves)
    row["steps"] = steps
    row["ms_per_step"] = 1000.0 * row["train_seconds"] / steps
    row["peak_mem_mb"], row["mem_kind"] = _peak_memory_mb(dev)
    row["heldout"] = run_curves[-1]["heldout"]
    row["train_objective"] = run_curves[-1]["train_objective"]
    if bar is not None:
        bar.set_description(f"{label} seed {seed}: final bounds")
    with _fork(dev):
        model.eval(), guide.eval()
        ladder = evaluate(model, guide, eval_x, num_samples=eval_samples, ks=(1, iwae_k),
                          seed=seed).summary
    row["elbo"] = ladder.get("elbo")
    row["iwae"] = ladder.get(f"iwae_{iwae_k}", ladder.get("elbo") if iwae_k == 1 else None)
    row["is_logpx"] = ladder.get("is")
    row["exact_logpx"] = ladder.get("exact")


def _fill_time_to_target(runs: list[dict], curves: list[dict], target: float | None):
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

