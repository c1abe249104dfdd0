"""Compare estimators on one model, fairly: :func:`compare` and the run of each pair.

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

The settings shared by every run are validated once and held in one frozen
:class:`~ppl_dgm.compare.config.CompareConfig`, which is passed down to each
(estimator, seed) run.
"""

from __future__ import annotations

import copy
import json
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import pyro
import torch

from .. import registry
from ..checks import check_model_data, check_pair, check_setup
from ..distributed import world
from ..errors import IncompatibleEstimatorError
from ..estimators.base import Estimator
from ..evaluate import evaluate
from ..gradvar import gradient_stats
from ..programs import ParamStoreParams, set_training, trainables
from ..train import fit, resolve_device
from .config import CompareConfig, check_counts, check_steps, seed_list
from .inputs import ComparisonData, guide_builder, model_builder, name_of, prepare_data
from .measure import fork_rng, heldout_bound, peak_memory, reset_peak_memory
from .parallel import check_jobs, join_launch, one_thread, plan_jobs, run_jobs
from .result import GROUPS, ComparisonResult, fill_time_to_target
from .samples import draw_samples
from .spec import EstimatorSpec, parse_estimators, skip_reason

__all__ = ["compare"]


@dataclass(frozen=True)
class _RunStart:
    """One run's own copies of the shared start, its estimator, the fixed gradient batch
    and the held-out bound at step 0 (the same for every estimator of a seed)."""

    model: object
    guide: object
    estimator: Estimator
    x_fixed: torch.Tensor
    curve0: float


@dataclass(frozen=True)
class _RunRecord:
    """What one (estimator, seed) run adds to the result's tables."""

    row: dict
    curves: list[dict]
    gradients: list[dict]
    samples: object = None  # model samples (first seed only), for the report


def compare(model_factory, guide_factory, estimators, data, *, steps: int,
            seeds: int | Sequence[int] = 1, batch_size: int = 100, lr: float = 1e-3,
            lr_groups: Mapping[str, float] | None = None, optim: str = "adam",
            device: str | torch.device = "auto", particles: int | None = None,
            model_options: dict | None = None, guide_options: dict | None = None,
            eval_data: torch.Tensor | None = None, eval_every: int | None = None,
            curve_particles: int = 50, iwae_k: int = 50, eval_samples: int = 5000,
            grad_draws: int = 100, target: float | None = None,
            progress: bool = False, jobs: int | str = 1, store=None) -> ComparisonResult:
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
    :param store: a :class:`~ppl_dgm.compare.store.PairStore`: every (estimator, seed) run
        is saved to it as it finishes, and runs it already holds are not run again
        (``ppl-dgm compare --resume``; the table is the same).
    :param jobs: worker processes for the runs (``"auto"``: one per available core; more
        than the runs is clamped, with a warning); the tables equal those of ``jobs=1``
        apart from the timing and memory columns (see :mod:`~ppl_dgm.compare.parallel`;
        on the CPU every run, with ``jobs=1`` too, uses one torch thread).
        Under ``torchrun`` the runs are shared between the ranks, and every rank returns
        the whole result.
    """
    # ---- validate everything before any training
    check_steps(steps)
    seeds = seed_list(seeds)
    check_jobs(jobs)
    specs = parse_estimators(estimators, particles=particles)
    eval_every = check_counts(steps=steps, batch_size=batch_size,
                              curve_particles=curve_particles, iwae_k=iwae_k,
                              eval_samples=eval_samples, grad_draws=grad_draws,
                              eval_every=eval_every)
    skip = _skip_reasons(specs, particles=particles)
    cfg = CompareConfig(steps=steps, seeds=seeds, eval_every=eval_every,
                        batch_size=batch_size, lr=lr, lr_groups=dict(lr_groups or {}),
                        optim=optim, device=resolve_device(device), particles=particles,
                        model_options=model_options, guide_options=guide_options,
                        curve_particles=curve_particles, iwae_k=iwae_k,
                        eval_samples=eval_samples, grad_draws=grad_draws, target=target,
                        progress=progress)
    cfg = join_launch(cfg)
    cdata = prepare_data(data, eval_data, batch_size=cfg.batch_size, device=cfg.device)
    make_model = model_builder(model_factory, cdata.train_x.shape[1], cfg.model_options,
                               getattr(cdata.fit_data, "model_options", None))
    make_guide = guide_builder(guide_factory, model_factory, cfg.guide_options)
    guide_name = name_of(guide_factory if guide_factory is not None else
                         registry.default_guide(model_factory))
    config = {"model": name_of(model_factory), "guide": guide_name, "data": cdata.name,
              "estimators": [s.label for s in specs],
              "estimator_options": {s.label: dict(s.options) for s in specs},
              "steps": cfg.steps, "seeds": list(cfg.seeds), "batch_size": cfg.batch_size,
              "lr": cfg.lr, "lr_groups": dict(cfg.lr_groups), "optim": cfg.optim,
              "device": str(cfg.device), "particles": cfg.particles,
              "eval_every": cfg.eval_every, "eval_split": cdata.eval_split,
              "curve_particles": cfg.curve_particles, "iwae_k": cfg.iwae_k,
              "eval_samples": cfg.eval_samples, "grad_draws": cfg.grad_draws,
              "snapshot_steps": cfg.snapshot_steps, "table_snapshot": "mid"}

    runs: list[dict] = []
    curves: list[dict] = []
    gradients: list[dict] = []
    samples: dict = {}
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        todo = sum(1 for s in specs if skip[s.label] is None) * len(cfg.seeds)
        bar = tqdm(total=todo * cfg.steps, unit="step", desc="compare", dynamic_ncols=True)
    try:
        with one_thread(cfg.device):   # the table of jobs=N bit for bit (see one_thread)
            records = _parallel_records(jobs, specs, skip=skip, make_model=make_model,
                                        make_guide=make_guide, data=cdata, cfg=cfg, bar=bar,
                                        factories=(model_factory, guide_factory),
                                        store=store)
            for record in records if records is not None else (
                    r for seed in cfg.seeds
                    for r in _compare_seed(seed, specs, skip=skip, make_model=make_model,
                                           make_guide=make_guide, data=cdata, cfg=cfg,
                                           bar=bar, store=store)):
                runs.append(record.row)
                curves.extend(record.curves)
                gradients.extend(record.gradients)
                if record.samples is not None:
                    samples[record.row["estimator"]] = record.samples
    finally:
        if bar is not None:
            bar.close()
    used = fill_time_to_target(runs, curves, cfg.target)
    return ComparisonResult(config, runs, curves, gradients, used, samples)


def _parallel_records(jobs, specs, *, skip, make_model, make_guide, data, cfg, bar,
                      factories, store=None) -> list[_RunRecord] | None:
    """The records from worker processes or torchrun ranks (see
    :mod:`~ppl_dgm.compare.parallel`); None: run them one after another here."""
    todo = sum(skip[s.label] is None for s in specs) * len(cfg.seeds)
    plan = plan_jobs(jobs, todo)
    if todo == 0 or (plan.workers == 1 and world().size == 1):
        return None
    if plan.note and world().rank == 0:
        warnings.warn(plan.note, stacklevel=3)
    base = _seed_start(cfg.seeds[0], make_model=make_model, make_guide=make_guide, data=data,
                       cfg=cfg, check=True)
    if base.uses_param_store:   # the runs share Pyro's param store: one process
        warnings.warn("the programs keep parameters in Pyro's param store, which every run "
                      "of a comparison shares; the runs go one after another in this "
                      "process", stacklevel=3)
        return None
    return run_jobs(specs=specs, skip=skip, cfg=cfg, data=data, model_factory=factories[0],
                    guide_factory=factories[1], x_dim=data.train_x.shape[1],
                    workers=plan.workers, bar=bar, store=store)


def _skip_reasons(specs: list[EstimatorSpec], *, particles: int | None) -> dict[str, str | None]:
    """Why each estimator is left out (None: it runs).  Options that its constructor
    refuses raise, unless they came from the comparison-wide ``particles``."""
    skip: dict[str, str | None] = {s.label: skip_reason(s) for s in specs}
    for spec in specs:  # bad options fail now, not after hours of other runs
        if skip[spec.label] is None:
            try:
                spec.build()
            except ValueError as e:
                if not spec.particles_from_default:
                    raise
                skip[spec.label] = f"particles={particles} does not suit it: {e}"
    return skip


@dataclass(frozen=True)
class _SeedStart:
    """A seed's shared start: the model and guide built under ``torch.manual_seed(seed)``,
    the fixed gradient batch, and the initial values of param-store parameters."""

    model: object
    guide: object
    x_fixed: torch.Tensor
    start_params: list
    uses_param_store: bool = False


def _seed_start(seed: int, *, make_model: Callable, make_guide: Callable,
                data: ComparisonData, cfg: CompareConfig, check: bool) -> _SeedStart:
    """Build the seed's model and guide (``check``: validate them, as errors there concern
    every run)."""
    dev = cfg.device
    torch.manual_seed(seed)
    model0 = _to(make_model(), dev)
    guide0 = _to(make_guide(model0), dev)
    x_fixed = data.train_x[torch.randperm(data.n_train, generator=torch.Generator()
                                          .manual_seed(seed))[:cfg.batch_size]].to(dev)
    if check:
        with pyro.validation_enabled(True):  # model/guide errors concern every run
            check_model_data(model0, x_fixed)
            check_pair(model0, guide0, x_fixed)
    # Programs that keep their parameters in Pyro's param store (plain functions) share
    # them between runs (a module is copied for each run): every run starts from this
    # seed's initial values.
    held = trainables(model0, guide0, (x_fixed,)).values()
    shared = [p for m in held for p in m.parameters()]
    return _SeedStart(model0, guide0, x_fixed, [(p, p.detach().clone()) for p in shared],
                      any(isinstance(m, ParamStoreParams) or isinstance(
                          getattr(m, "extra", None), ParamStoreParams) for m in held))


def _compare_seed(seed: int, specs: list[EstimatorSpec], *, skip: dict[str, str | None],
                  make_model: Callable, make_guide: Callable, data: ComparisonData,
                  cfg: CompareConfig, bar, store=None) -> list[_RunRecord]:
    """Every estimator's run on one seed, each from a copy of the same model and guide.

    An estimator whose own check fails is skipped (incompatible) or failed (any other
    error) for this and every later seed: ``skip`` is updated in place."""
    base = _seed_start(seed, make_model=make_model, make_guide=make_guide, data=data,
                       cfg=cfg, check=seed == cfg.seeds[0]
                       and any(skip[s.label] is None for s in specs))
    curve0: list = [None]
    records: list[_RunRecord] = store.collector(skip) if store is not None else []
    for spec in specs:
        if store is not None and store.restore(records, spec.label, seed, skip):
            if bar is not None and skip[spec.label] is None:
                bar.update(cfg.steps)
            continue  # finished before an interruption
        records.append(_spec_run(spec, seed, base, skip=skip, data=data, cfg=cfg, bar=bar,
                                 curve0=curve0))
    return records


def _spec_run(spec: EstimatorSpec, seed: int, base: _SeedStart, *,
              skip: dict[str, str | None], data: ComparisonData, cfg: CompareConfig, bar,
              curve0: list) -> _RunRecord:
    """One estimator's run on one seed from a copy of ``base``; ``curve0[0]`` holds the
    seed's held-out bound at step 0 once one run has measured it."""
    dev, model0, guide0, x_fixed = cfg.device, base.model, base.guide, base.x_fixed
    row = _row(spec, seed)
    if skip[spec.label] is not None:
        return _skipped(spec, seed, skip[spec.label])
    model, guide = copy.deepcopy((model0, guide0))
    with torch.no_grad():
        for p, value in base.start_params:
            p.copy_(value)
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
        if bar is not None:
            bar.total -= cfg.steps * (len(cfg.seeds) - cfg.seeds.index(seed))
            bar.refresh()
        return _RunRecord(row, [], [])
    if curve0[0] is None:
        try:
            curve0[0] = heldout_bound(model, guide, data.eval_x, k=cfg.curve_particles,
                                      seed=seed * 7919, device=dev)
        except Exception as e:  # evaluation failures stay in their row too
            row.update(status="failed", reason=f"held-out bound at the start: "
                                               f"{type(e).__name__}: {e}")
            return _RunRecord(row, [], [])
    if bar is not None:
        bar.set_description(f"{spec.label} seed {seed}")
        bar_start = bar.n
    record = _run_one(spec, seed, _RunStart(model, guide, est, x_fixed, curve0[0]),
                      data=data, cfg=cfg, row=row, bar=bar)
    if bar is not None:
        bar.update(bar_start + cfg.steps - bar.n)
    return record


def _row(spec: EstimatorSpec, seed: int) -> dict:
    return {"estimator": spec.label, "estimator_class": spec.cls.__name__,
            "options": json.dumps(dict(spec.options), sort_keys=True, default=str),
            "seed": seed, "status": "ok", "reason": ""}


def _skipped(spec: EstimatorSpec, seed: int, reason: str) -> _RunRecord:
    """The record of a run left out for ``reason`` (failed when its check failed)."""
    row = _row(spec, seed)
    row.update(status="failed" if reason.startswith("check failed") else "skipped",
               reason=reason)
    return _RunRecord(row, [], [])


def _to(program, device):
    return program.to(device) if isinstance(program, torch.nn.Module) else program


def _run_one(spec: EstimatorSpec, seed: int, start: _RunStart, *, data: ComparisonData,
             cfg: CompareConfig, row: dict, bar) -> _RunRecord:
    """Train one (estimator, seed) pair from ``start`` and measure it into ``row``.

    A run that fails (a NaN loss, say) is marked failed and keeps what was measured
    before the failure; one failing run must not end the comparison."""
    curves: list[dict] = []
    gradients: list[dict] = []
    samples = None
    try:
        _train_and_measure(spec.label, seed, start, data=data, cfg=cfg, row=row,
                           curves=curves, gradients=gradients, bar=bar)
        if seed == cfg.seeds[0]:
            samples = draw_samples(start.model, seed=seed, template=data.train_x)
    except Exception as e:  # one failing run must not end the comparison
        row.update(status="failed", reason=f"{type(e).__name__}: {e}")
    return _RunRecord(row, curves, gradients, samples)


def _train_and_measure(label: str, seed: int, start: _RunStart, *, data: ComparisonData,
                       cfg: CompareConfig, row: dict, curves: list[dict],
                       gradients: list[dict], bar) -> None:
    """Measure gradients at the start, train with a callback that records the learning
    curve and the mid/end gradient snapshots, then the final bound ladder; rows go into
    ``row``, ``curves`` and ``gradients`` as they are measured."""
    model, guide, est, x_fixed = start.model, start.guide, start.estimator, start.x_fixed
    dev, steps = cfg.device, cfg.steps
    run_curves = [{"estimator": label, "seed": seed, "step": 0, "time": 0.0,
                   "heldout": start.curve0, "train_objective": None}]

    def measure(snapshot: str, step: int) -> None:
        if not cfg.grad_draws:
            return
        stats = gradient_stats(model, guide, est, x_fixed, num_draws=cfg.grad_draws,
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
        if step % cfg.eval_every == 0 or step == steps:
            objective = fit_row.get("objective")
            run_curves.append({
                "estimator": label, "seed": seed, "step": step, "time": fit_row["time"],
                "heldout": heldout_bound(model, guide, data.eval_x, k=cfg.curve_particles,
                                         seed=seed * 7919 + step, device=dev),
                "train_objective": None if objective is None else objective / data.n_train})
        if step == cfg.mid:
            measure("mid", step)
        if step == steps:
            row["train_seconds"] = fit_row["time"]
            measure("end", step)

    measure("start", 0)
    reset_peak_memory(dev)
    try:
        fit(model, guide, est, data.fit_data, steps=steps, batch_size=cfg.batch_size,
            optim=cfg.optim, lr=cfg.lr, lr_groups=cfg.lr_groups, device=dev, seed=seed,
            log_every=cfg.log_every, eval_every=0, progress=False, callback=callback,
            distributed=False)
    finally:
        curves.extend(run_curves)
    row["steps"] = steps
    row["ms_per_step"] = 1000.0 * row["train_seconds"] / steps
    peak = peak_memory(dev)
    row["peak_mem_mb"], row["mem_kind"] = peak.mb, peak.kind
    row["heldout"] = run_curves[-1]["heldout"]
    row["train_objective"] = run_curves[-1]["train_objective"]
    if bar is not None:
        bar.set_description(f"{label} seed {seed}: final bounds")
    with fork_rng(dev):
        set_training(False, model, guide)
        ladder = evaluate(model, guide, data.eval_x, num_samples=cfg.eval_samples,
                          ks=(1, cfg.iwae_k), seed=seed).summary
    row["elbo"] = ladder.get("elbo")
    row["iwae"] = ladder.get(f"iwae_{cfg.iwae_k}",
                             ladder.get("elbo") if cfg.iwae_k == 1 else None)
    row["is_logpx"] = ladder.get("is")
    row["exact_logpx"] = ladder.get("exact")
