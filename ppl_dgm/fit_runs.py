"""The run-directory side of :func:`ppl_dgm.train.fit`: metric rows, learning rates
after a resume, and the data-parallel (``torchrun``) start, resume and checkpoint save,
in which rank 0 reads and writes the run directory and every rank gets what it needs."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import torch

from .checkpoints import apply_checkpoint, resume_checkpoint, save_checkpoint
from .distributed import DataParallel, world
from .errors import CheckpointError
from .runfiles import read_metrics

__all__ = ["apply_learning_rates", "data_parallel", "read_resume", "resume_data_parallel",
           "save_data_parallel", "write_rows"]


def write_rows(path: Path, rows: list[dict]) -> None:
    """Replace ``path`` with ``rows``, one JSON object per line (atomically)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def apply_learning_rates(optimizer, lr: float, lr_groups: Mapping[str, float] | None):
    """After a resume the learning rates asked for now apply (``--override lr``)."""
    for group in optimizer.param_groups:
        group["lr"] = dict(lr_groups or {}).get(group.get("name"), lr)


def data_parallel(distributed: bool | None, device: torch.device) -> DataParallel | None:
    """The process group of a torchrun launch, or None for one process."""
    if distributed is False:
        return None
    size = world().size
    if size <= 1:
        if distributed:
            raise ValueError("distributed=True needs a launch of several processes "
                             "(torchrun --nproc_per_node=N ...); WORLD_SIZE is "
                             f"{size}")
        return None
    return DataParallel.setup(device)


def read_resume(run_path: Path, resume) -> tuple:
    """``(checkpoint or None, the logged rows up to its step, metrics path)`` of the run
    directory ``run_path`` (created if new) for ``fit(..., resume=resume)``."""
    run_path.mkdir(parents=True, exist_ok=True)
    metrics_path = run_path / "metrics.jsonl"
    ckpt = resume_checkpoint(run_path, resume)
    history = []
    if ckpt is not None and metrics_path.exists():
        history = [r for r in read_metrics(metrics_path) if r.get("step", 0) <= ckpt.step]
    return ckpt, history, metrics_path


def resume_data_parallel(dp: DataParallel, run_path: Path | None, resume, modules,
                          optimizer, lr: float, lr_groups: Mapping[str, float] | None):
    """Rank 0 reads the latest checkpoint and the logged rows and sends them to every
    rank; each restores the modules, the optimiser and its own random state."""
    history: list[dict] = []
    start, resumed_from, last_ckpt, metrics_path = 0, None, None, None
    if run_path is None:
        return history, start, resumed_from, last_ckpt, metrics_path
    payload = None
    if dp.rank == 0:
        try:
            ckpt, history, metrics_path = read_resume(run_path, resume)
            payload = (ckpt, history)
        except Exception as e:
            dp.fail(e)
    ckpt, history = dp.broadcast_object(payload)
    if ckpt is not None:
        info = ckpt.meta.get("data_parallel") or {}
        if info.get("world_size") != dp.size:
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r} was written by a run of world size "
                f"{info.get('world_size', 1)}, this launch has {dp.size} processes; resume "
                f"with the same --nproc_per_node x nodes (the random streams are per rank)")
        apply_checkpoint(ckpt, modules, optimizer)
        dp.restore_rng(info["rng"][dp.rank])
        apply_learning_rates(optimizer, lr, lr_groups)
        start = resumed_from = ckpt.step
        last_ckpt = ckpt.path
    if metrics_path is not None:
        write_rows(metrics_path, history)
    return history, start, resumed_from, last_ckpt, metrics_path


def save_data_parallel(dp: DataParallel, run_path: Path, step: int, modules, optimizer,
                        meta) -> Path:
    """Rank 0 writes the checkpoint with every rank's random state; every rank waits for
    it and gets its path."""
    rng = dp.rng_states()
    path = None
    if dp.rank == 0:
        try:
            path = save_checkpoint(run_path, step, modules=modules, optimizer=optimizer,
                                   meta={**(meta or {}), "data_parallel": {
                                       "world_size": dp.size, "rng": rng}})
        except Exception as e:
            dp.fail(e)
    return dp.broadcast_object(path)
