"""Run directories: what ``ppl-dgm train`` writes and every later command reads back.

A run directory holds ``config.json`` (the names and options of model, guide,
estimator and data, the seed and the training settings) and the checkpoints of
:mod:`ppl_dgm.checkpoints`.  This module is the one place that knows that layout:

* :func:`default_run_dir` and :func:`start_run_dir` create a run directory (refusing to
  replace one unless asked) and write its ``config.json``;
* :func:`build_from_config` rebuilds model, guide and estimator from such a config;
* :func:`load_run` rebuilds them and applies the latest checkpoint.

Example::

    from ppl_dgm.runs import load_run

    run = load_run("runs/vae-elbo-s0")
    x = run.data.test
    run.model, run.guide, run.checkpoint.step
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import registry
from .checkpoints import Checkpoint, apply_checkpoint, load_checkpoint
from .data import Dataset, load_data
from .errors import CheckpointError
from .estimators.base import Estimator
from .programs import set_training, trainables

__all__ = ["CONFIG_FILE", "BuiltRun", "LoadedRun", "build_from_config", "default_run_dir",
           "init_from", "load_run", "start_run_dir"]

CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class BuiltRun:
    """A fresh model, guide and estimator, built from a run's config."""

    model: object
    guide: object
    estimator: Estimator


@dataclass(frozen=True)
class LoadedRun:
    """A trained run read back from its directory: config, data, the model, guide and
    estimator with the checkpoint applied (model and guide in eval mode), and the
    checkpoint itself (``checkpoint.step`` is the step it was written at)."""

    config: dict
    data: Dataset = field(repr=False)
    model: object = field(repr=False)
    guide: object = field(repr=False)
    estimator: Estimator = field(repr=False)
    checkpoint: Checkpoint = field(repr=False)


def build_from_config(config: dict, data: Dataset) -> BuiltRun:
    """Rebuild model, guide and estimator from a run's ``config.json``."""
    model = registry.build_model(config["model"], x_dim=data.x_dim,
                                 data_options=data.model_options,
                                 options=config.get("model_options"))
    guide = registry.build_guide(config["guide"], model, options=config.get("guide_options"))
    estimator = registry.build_estimator(config["estimator"],
                                         options=config.get("estimator_options"))
    return BuiltRun(model, guide, estimator)


def default_run_dir(model: str, estimator: str, seed: int) -> Path:
    """``runs/MODEL-ESTIMATOR-sSEED``; a model given as ``path/file.py:Class`` is named
    by its class."""
    name = Path(model.rpartition(":")[2] or model).stem.lower()
    return Path(f"runs/{name}-{estimator}-s{seed}")


def start_run_dir(run_dir: str | Path, config: dict, *, resume: bool = False,
                  overwrite: bool = False) -> Path:
    """Create ``run_dir`` and write its ``config.json``.

    An existing non-empty directory is refused unless ``resume`` (continue it) or
    ``overwrite`` (delete it first) is given."""
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise FileExistsError(f"run directory {str(run_dir)!r} already exists; pass "
                                  f"--resume to continue it, --overwrite to replace it, or "
                                  f"--run-dir to choose another")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    return run_dir


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> LoadedRun:
    """Read a run directory back: config, data, and model, guide and estimator with the
    checkpoint applied, on ``device``, model and guide in eval mode."""
    path = Path(run_dir)
    cfg_path = path / CONFIG_FILE
    if not path.is_dir() or not cfg_path.exists():
        raise CheckpointError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE}); "
                              f"give the directory that `ppl-dgm train` wrote")
    config = json.loads(cfg_path.read_text())
    data = load_data(config["data"], root=config.get("data_root"), seed=config.get("seed", 0))
    built = build_from_config(config, data)
    model, guide, estimator = built.model, built.guide, built.estimator
    x = data.train[:2]
    estimator.prepare(model, guide, x)  # builds data-sized auxiliary networks
    ckpt = load_checkpoint(path)
    modules = {**trainables(model, guide, (x,)), "estimator": estimator}
    apply_checkpoint(ckpt, modules)
    for m in modules.values():
        m.to(device)
    set_training(False, model, guide)
    return LoadedRun(config, data, model, guide, estimator, ckpt)


def init_from(run_dir: str | Path, model, guide) -> None:
    """Copy the model and guide weights of another run into ``model`` and ``guide``
    (built with the same options), e.g. up-down fine-tuning after greedy training."""
    other = load_run(run_dir)
    for role, live, saved in (("model", model, other.model), ("guide", guide, other.guide)):
        try:
            live.load_state_dict(saved.state_dict())
        except RuntimeError as e:
            raise ValueError(f"--init-from {run_dir}: its {role} does not fit this run's "
                             f"(build both with the same options): {e}") from None
