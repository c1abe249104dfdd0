"""A comparison's (estimator, seed) runs in worker processes, or shared between the ranks
of a ``torchrun`` launch.

Every run depends only on its estimator and seed: its worker rebuilds the seed's model
and guide under ``torch.manual_seed(seed)`` exactly as :func:`~ppl_dgm.compare.compare`
does in one process, so the tables are the same as with ``jobs=1`` apart from the timing
and memory columns (:data:`~ppl_dgm.compare.result.TIMING_COLUMNS`).

* :func:`plan_jobs` checks ``jobs`` (a positive count or ``"auto"``: the cores this
  process may use) and clamps it to the number of runs, saying so;
* :func:`run_jobs` runs the jobs: with several workers in a pool of spawned processes
  (one torch thread each; each measures its own peak memory), reporting every run's
  progress to one bar; under torchrun each rank takes every ``world_size``-th run and
  the records are gathered on every rank (rank 0 writes the files).

An estimator whose own check fails at a seed is reported for that seed and every later
one with the same reason, as in one process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue as queue_mod
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass

import torch

from ..distributed import world

__all__ = ["JobPlan", "available_cores", "check_jobs", "join_launch", "one_thread",
           "plan_jobs", "run_jobs"]


@dataclass(frozen=True)
class JobPlan:
    """How many worker processes a comparison uses, and why, when not as asked."""

    workers: int
    note: str | None = None


def available_cores() -> int:
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:   # not Linux
        return os.cpu_count() or 1


def check_jobs(jobs) -> int | str:
    """``jobs`` if it is a positive integer or ``"auto"``, else a ValueError."""
    if isinstance(jobs, str):
        if jobs == "auto":
            return jobs
        try:
            jobs = int(jobs)
        except ValueError:
            raise ValueError(f"jobs={jobs!r}: give a number of worker processes such as 2, "
                             f"or 'auto' for one per available core") from None
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs={jobs!r} must be a positive number of worker processes "
                         f"(1: one after another in this process) or 'auto'")
    return jobs


def plan_jobs(jobs, runs: int) -> JobPlan:
    """Worker processes for ``runs`` runs: ``jobs`` (``"auto"``: the available cores),
    never more than the runs."""
    jobs = check_jobs(jobs)
    asked = available_cores() if jobs == "auto" else jobs
    if asked > runs:
        what = (f"jobs=auto ({asked} cores)" if jobs == "auto" else f"jobs={asked}")
        return JobPlan(max(1, runs), f"{what} is more than the {runs} runs to do; using "
                                     f"{max(1, runs)} worker process{'es' if runs > 1 else ''}")
    return JobPlan(asked)


def join_launch(cfg):
    """Under torchrun: join (or start) the process group that gathers the records, and
    give each rank its own CUDA device; ``cfg`` as it is in one process."""
    w = world()
    if w.size <= 1:
        return cfg
    import dataclasses

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    if cfg.device.type == "cuda" and cfg.device.index is None:
        cfg = dataclasses.replace(cfg, device=torch.device(
            "cuda", w.local_rank % torch.cuda.device_count()))
    return cfg


@contextlib.contextmanager
def one_thread(device: torch.device):
    """Run the comparison's CPU work on one torch thread, as every worker does.

    Multi-threaded CPU kernels split their reductions by the thread count and round
    differently; over thousands of steps with discrete samples those last bits grow into
    different trajectories (3.8e-3 relative on the SBN comparison of 300 steps), so
    ``jobs=1`` runs one-threaded too and gives the table of ``jobs=N`` bit for bit.  On
    a shared machine one thread is also much faster for these small networks (7x on a
    loaded 2-core machine)."""
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class _Context:
    """What every worker needs, pickled once per worker."""

    specs: list
    skip: dict
    cfg: object
    data: object
    model_factory: object
    guide_factory: object
    x_dim: int


_WORKER: dict = {}


def _init_worker(payload: bytes, progress) -> None:
    torch.set_num_threads(1)
    ctx = pickle.loads(payload)
    _WORKER.update(ctx=ctx, progress=progress, builders=_builders(ctx))


def _builders(ctx: _Context):
    from .inputs import guide_builder, model_builder

    return (model_builder(ctx.model_factory, ctx.x_dim, ctx.cfg.model_options,
                          getattr(ctx.data.fit_data, "model_options", None)),
            guide_builder(ctx.guide_factory, ctx.model_factory, ctx.cfg.guide_options))


class _Bar:
    """The part of a tqdm bar that a run uses, reporting to the parent's queue."""

    def __init__(self, progress, index: int):
        self.progress, self.index, self.n, self.total = progress, index, 0, 0
        self.desc = ""

    def update(self, k: int = 1) -> None:
        self.n += k
        self.progress.put((self.index, self.n, self.desc))

    def set_description(self, desc: str) -> None:
        self.desc = desc
        self.progress.put((self.index, self.n, desc))

    def refresh(self) -> None:
        pass


def _run(ctx: _Context, builders, job: tuple[int, int, int], bar):
    """One (seed, estimator) run as :func:`~ppl_dgm.compare.compare` does it in one
    process; returns the record and the reason its estimator's check gave, if any."""
    from .run import _seed_start, _spec_run

    index, seed, k = job
    make_model, make_guide = builders
    spec = ctx.specs[k]
    skip = dict(ctx.skip)
    base = _seed_start(seed, make_model=make_model, make_guide=make_guide, data=ctx.data,
                       cfg=ctx.cfg, check=False)
    record = _spec_run(spec, seed, base, skip=skip, data=ctx.data, cfg=ctx.cfg, bar=bar,
                       curve0=[None])
    return index, record, skip[spec.label] if ctx.skip[spec.label] is None else None


def _work(job):
    bar = _Bar(_WORKER["progress"], job[0]) if _WORKER["ctx"].cfg.progress else None
    return _run(_WORKER["ctx"], _WORKER["builders"], job, bar)


def run_jobs(*, specs, skip, cfg, data, model_factory, guide_factory, x_dim: int,
             workers: int, bar, store=None) -> list:
    """Every (seed, estimator) run's record in the order of one process (seeds, then
    estimators), from ``workers`` processes; under torchrun, from every rank.  With a
    :class:`~ppl_dgm.compare.store.PairStore` (one process launch only), runs it holds
    are restored instead of run and every finished run is saved to it."""
    ctx = _Context(list(specs), dict(skip), cfg, data, model_factory, guide_factory, x_dim)
    try:
        payload = pickle.dumps(ctx)
    except Exception as e:
        raise ValueError(
            f"jobs={workers} runs the comparison in worker processes, which get the model, "
            f"guide and estimators by pickling; this comparison cannot be pickled ({e}). "
            f"Give them by registered name, 'file.py:Class' spec or a module-level class or "
            f"function, or use jobs=1") from None
    jobs = [(i, seed, k) for i, (seed, k) in
            enumerate((seed, k) for seed in cfg.seeds for k in range(len(specs)))]
    w = world()
    mine = jobs[w.rank::w.size] if w.size > 1 else jobs
    restored, save = [], None
    if store is not None and w.size == 1:
        mine, restored = _restore_jobs(store, mine, specs, skip, cfg, bar)

        def save(result):
            index, record, reason = result
            label = record.row["estimator"]
            store.save(record, reason if reason is not None else skip[label])
    if workers > 1 and mine:
        results = _pool(payload, mine, min(workers, max(1, len(mine))), cfg.steps, bar,
                        save)
    else:
        builders = _builders(ctx)
        results = []
        for job in mine:
            if bar is not None:
                bar.set_description(f"run {job[0] + 1}/{len(jobs)}")
            results.append(_run(ctx, builders, job, bar))
            if save is not None:
                save(results[-1])
    results += restored
    if w.size > 1:
        results = _gather(results)
    return _propagate_check_failures(results, specs, cfg)


def _restore_jobs(store, jobs: list, specs, skip: dict, cfg, bar) -> tuple[list, list]:
    """The jobs still to run, and the results of those ``store`` holds (``--resume``)."""
    todo, restored = [], []
    for job in jobs:
        index, seed, k = job
        label = specs[k].label
        got, after = [], dict(skip)
        if store.restore(got, label, seed, after):
            restored.append((index, got[0], after[label] if skip[label] is None else None))
            if bar is not None and skip[label] is None:
                bar.update(cfg.steps)
        else:
            todo.append(job)
    return todo, restored


def _pool(payload: bytes, jobs: list, workers: int, steps: int, bar, save=None) -> list:
    mp = multiprocessing.get_context("spawn")
    progress = mp.Queue()
    done: dict[int, int] = {}
    running: dict[int, str] = {}
    results = []
    with ProcessPoolExecutor(workers, mp_context=mp, initializer=_init_worker,
                             initargs=(payload, progress)) as pool:
        pending = {pool.submit(_work, job) for job in jobs}
        try:
            while pending:
                finished, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                _drain(progress, bar, done, running, steps)
                for f in finished:
                    index, record, reason = f.result()
                    results.append((index, record, reason))
                    if save is not None:
                        save(results[-1])
                    running.pop(index, None)
                    if bar is not None:   # a run skipped or stopped early
                        bar.total -= steps - done.get(index, 0)
                        done[index] = steps
                        bar.refresh()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    _drain(progress, bar, done, running, steps)
    return results


def _drain(progress, bar, done: dict, running: dict, steps: int) -> None:
    while True:
        try:
            index, n, desc = progress.get_nowait()
        except (queue_mod.Empty, OSError, ValueError):
            break
        if bar is None or done.get(index, 0) >= steps:
            continue
        n = min(n, steps)
        bar.update(n - done.get(index, 0))
        done[index] = n
        running[index] = f"{desc} {100 * n // steps}%"
        bar.set_postfix_str(" | ".join(running.values()), refresh=False)


def _gather(results: list) -> list:
    import torch.distributed as dist

    if not dist.is_initialized():
        raise ValueError("compare under torchrun needs the process group; it is set up by "
                         "ppl_dgm.compare.compare before the runs")
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, results)
    return [r for part in out for r in part]


def _propagate_check_failures(results: list, specs, cfg) -> list:
    """Records in one-process order; once an estimator's own check fails at a seed, its
    later seeds are reported with that reason."""
    from .run import _skipped

    by_index = {index: (record, reason) for index, record, reason in results}
    records, first_failure = [], {}
    for i, (seed, k) in enumerate((seed, k) for seed in cfg.seeds for k in range(len(specs))):
        record, reason = by_index[i]
        label = specs[k].label
        if label in first_failure:
            record = _skipped(specs[k], seed, first_failure[label])
        elif reason is not None:
            first_failure[label] = reason
        records.append(record)
    return records
