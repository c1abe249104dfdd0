"""Run directories: what ``ppl-dgm train`` writes and every later command reads back.

A run directory holds ``config.json`` (the names and options of model, guide,
estimator and data, the seed and the training settings), ``metrics.jsonl`` and the
checkpoints of :mod:`ppl_dgm.checkpoints`.  This module is the one place that knows
that layout:

* :func:`default_run_dir` and :func:`start_run_dir` create a run directory (refusing to
  replace one unless asked, and never anything that is not a run directory) and write
  its ``config.json`` atomically;
* :func:`read_config` reads a ``config.json`` as untrusted input (bounded size, every
  field checked); :func:`build_from_config` rebuilds model, guide and estimator from it
  with every option validated (:func:`ppl_dgm.options.check_options`);
* :func:`load_run` rebuilds them and applies the newest intact checkpoint.

A run directory may come from someone else.  Loading one runs no code from it: a
config that names a Python file (a user's ``mine.py:Model``) is refused with
:class:`~ppl_dgm.errors.UntrustedCodeError` unless the caller passes
``trust_code=True`` (``--trust-code``); the file's SHA-256 is recorded at training time
and a changed file is reported in :attr:`LoadedRun.notes`.  The one file outside the
run that is read is the data file its config names, as data (``allow_pickle=False``).

Example::

    from ppl_dgm.runs import load_run

    run = load_run("runs/vae-elbo-s0")
    x = run.data.test
    run.model, run.guide, run.checkpoint.step, run.notes
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import registry
from .checkpoints import MAX_STEP, Checkpoint, apply_checkpoint, find_checkpoint
from .data import Dataset, load_data
from .errors import CheckpointError, UntrustedCodeError
from .estimators.base import Estimator
from .options import check_options
from .programs import set_training, trainables
from .runfiles import check_int, check_number, read_bytes, read_json, write_atomic

__all__ = ["CONFIG_FILE", "BuiltRun", "LoadedRun", "build_from_config", "check_code",
           "default_run_dir", "file_sha256", "init_from", "load_run", "read_config",
           "record_code", "start_run_dir", "write_config"]

CONFIG_FILE = "config.json"
MAX_CONFIG_BYTES = 1 << 20
MAX_CODE_BYTES = 64 << 20
ROLES = ("model", "guide", "estimator")
_RUN_MARKS = (CONFIG_FILE, "checkpoints", "metrics.jsonl")


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
    checkpoint itself (``checkpoint.step`` is the step it was written at).  ``notes``
    are things a caller should say aloud: a changed model file, a newer checkpoint that
    was skipped because it is not intact."""

    config: dict
    data: Dataset = field(repr=False)
    model: object = field(repr=False)
    guide: object = field(repr=False)
    estimator: Estimator = field(repr=False)
    checkpoint: Checkpoint = field(repr=False)
    notes: tuple[str, ...] = ()


# ------------------------------------------------------------------ config.json
def read_config(run_dir: str | Path) -> dict:
    """Read and check a run directory's ``config.json`` (see :func:`check_config`)."""
    path = Path(run_dir)
    cfg = path / CONFIG_FILE
    if not path.is_dir() or not (cfg.exists() or cfg.is_symlink()):
        raise CheckpointError(f"{str(run_dir)!r} is not a run directory (no {CONFIG_FILE}); "
                              f"give the directory that `ppl-dgm train` wrote")
    config = read_json(cfg, what="run config", root=path, max_bytes=MAX_CONFIG_BYTES)
    return check_config(config, where=str(cfg))


def check_config(config, *, where: str) -> dict:
    """Every field of a run config has the type and range ``ppl-dgm train`` writes."""
    def err(msg):
        return CheckpointError(f"{where}: {msg}; the file is corrupt or was not written by "
                               f"ppl-dgm train")

    if not isinstance(config, dict):
        raise err("expected a JSON object")
    for key in (*ROLES, "data"):
        value = config.get(key)
        if not isinstance(value, str) or not 0 < len(value) <= 4096 or "\0" in value:
            raise err(f"{key!r} must be a name or path/to/file.py:Name")
    for key in ("model_options", "guide_options", "estimator_options", "lr_groups"):
        value = config.get(key, {})
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise err(f"{key!r} must be an object")
        _check_plain(value, key, err, depth=0)
    for key in ("data_root", "init_from"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise err(f"{key!r} must be a path or null")
    ints = {"seed": (0, 2**63 - 1), "steps": (1, MAX_STEP), "batch_size": (1, 10**9),
            "log_every": (1, MAX_STEP), "eval_every": (0, MAX_STEP),
            "checkpoint_every": (0, MAX_STEP), "eval_samples": (1, 10**9)}
    for key, (low, high) in ints.items():
        if key in config:
            check_int(config[key], repr(key), low=low, high=high, error=err)
    if "lr" in config:
        check_number(config["lr"], "'lr'", positive=True, error=err)
    for role, value in config.get("lr_groups", {}).items():
        if role not in ROLES:
            raise err(f"lr_groups names {role[:40]!r}; groups are {list(ROLES)}")
        check_number(value, f"lr_groups[{role!r}]", positive=True, error=err)
    if config.get("optim", "adam") not in ("adam", "sgd"):
        raise err("'optim' must be 'adam' or 'sgd'")
    code = config.get("code", {})
    if not isinstance(code, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and len(v) == 64 for k, v in code.items()):
        raise err("'code' must map file paths to SHA-256 digests")
    return config


def _check_plain(value, where: str, err, depth: int) -> None:
    """Options hold JSON scalars and short lists or objects of them, nothing deeper."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        check_int(value, where, low=-(2**63), high=2**63, error=err)
    elif isinstance(value, float):
        check_number(value, where, error=err)
    elif isinstance(value, str):
        if len(value) > 4096:
            raise err(f"{where} is longer than 4096 characters")
    elif isinstance(value, (list, dict)) and depth < 3 and len(value) <= 4096:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            _check_plain(v, f"{where}[{k!r}]"[:80], err, depth + 1)
    else:
        raise err(f"{where} holds a value nested too deeply or too long")


def write_config(run_dir: str | Path, config: dict) -> Path:
    """Write ``config.json`` atomically (the old one stays if the write fails)."""
    return write_atomic(Path(run_dir) / CONFIG_FILE, json.dumps(config, indent=1))


# ------------------------------------------------------------------ code from files
def _code_files(config: dict) -> dict[str, Path]:
    return {role: Path(config[role].rpartition(":")[0]).expanduser().resolve()
            for role in ROLES if registry.file_spec(config.get(role))}


def file_sha256(path: str | Path) -> str:
    import hashlib

    data = read_bytes(path, max_bytes=MAX_CODE_BYTES, what="Python file", error=ValueError)
    return hashlib.sha256(data).hexdigest()


def record_code(config: dict) -> dict:
    """``config`` with the SHA-256 of every Python file it names under ``"code"``."""
    return {**config, "code": {str(p): file_sha256(p) for p in _code_files(config).values()}}


def check_code(config: dict, *, trust_code: bool = False, trusted=(), where: str) -> list[str]:
    """Refuse a config naming a Python file unless it is trusted; report changed files.

    :param trusted: paths the user typed on this command line (trusted as typed)."""
    notes = []
    trusted = {str(Path(t).expanduser().resolve()) for t in trusted}
    for role, path in _code_files(config).items():
        if not (trust_code or str(path) in trusted):
            raise UntrustedCodeError(
                f"{where} names the Python file {str(path)!r} as its {role}; loading the run "
                f"would import that file and run its code. Pass --trust-code if you trust it")
        if not path.is_file():
            raise CheckpointError(f"the {role} file {str(path)!r} of {where} does not exist; "
                                  f"restore it to load the run")
        recorded, now = config.get("code", {}).get(str(path)), file_sha256(path)
        if recorded is None:
            notes.append(f"the {role} file {path} has no recorded SHA-256 (an older run), so "
                         f"it cannot be checked")
        elif recorded != now:
            notes.append(f"the {role} file {path} has changed since the run was trained "
                         f"(SHA-256 {recorded[:12]}... then, {now[:12]}... now)")
    return notes


# ------------------------------------------------------------------ building
def build_from_config(config: dict, data: Dataset) -> BuiltRun:
    """Rebuild model, guide and estimator from a run's ``config.json``, every option
    checked against the class first (an unknown key lists the valid ones)."""
    opts = {role: dict(config.get(f"{role}_options") or {}) for role in ROLES}
    for role in ROLES:
        check_options(role, registry.resolve(role, config[role]), opts[role],
                      name=_short(config[role]))
    model = _build("model", config, lambda: registry.build_model(
        config["model"], x_dim=data.x_dim, data_options=data.model_options,
        options=opts["model"]))
    guide = _build("guide", config, lambda: registry.build_guide(config["guide"], model,
                                                                 options=opts["guide"]))
    estimator = _build("estimator", config, lambda: registry.build_estimator(
        config["estimator"], options=opts["estimator"]))
    return BuiltRun(model, guide, estimator)


def _build(role: str, config: dict, make):
    try:
        built = make()
    except (ValueError, KeyError):
        raise
    except Exception as e:  # a constructor refusing its options in its own way
        raise ValueError(f"building the {role} {_short(config[role])} with options "
                         f"{config.get(f'{role}_options') or {}} failed: {type(e).__name__}: "
                         f"{str(e)[:300]}") from e
    if isinstance(built, torch.nn.Module):
        for name, p in built.named_parameters():
            if p.numel() == 0:
                raise ValueError(f"the {role} {_short(config[role])} built with options "
                                 f"{config.get(f'{role}_options') or {}} has an empty "
                                 f"parameter {name} (shape {tuple(p.shape)}): a size option "
                                 f"is 0 or a list of sizes is empty")
    return built


def _short(spec: str) -> str:
    return spec if len(spec) <= 80 else "..." + spec[-77:]


def _fits(config: dict, data: Dataset, ckpt: Checkpoint) -> None:
    """Refuse a config whose model is far larger than its checkpoint before allocating
    it (built first on the ``meta`` device, which allocates nothing)."""
    try:
        with torch.device("meta"):
            built = build_from_config(config, data)
    except Exception:  # not buildable on meta: the real build will say what is wrong
        return
    live = sum(t.numel() for m in (built.model, built.guide) if isinstance(m, torch.nn.Module)
               for t in m.state_dict().values())
    saved = sum(t.numel() for k, t in ckpt.weights.items() if not k.startswith("estimator."))
    if live > 4 * saved + 1_000_000:
        raise CheckpointError(f"the config of this run builds a model and guide of {live} "
                              f"numbers, its checkpoint holds {saved}: config.json and the "
                              f"checkpoint do not belong together")


# ------------------------------------------------------------------ run directories
def default_run_dir(model: str, estimator: str, seed: int) -> Path:
    """``runs/MODEL-ESTIMATOR-sSEED``; a model given as ``path/file.py:Class`` is named
    by its class."""
    name = Path(model.rpartition(":")[2] or model).stem.lower()
    return Path(f"runs/{name}-{estimator}-s{seed}")


def is_run_dir(path: str | Path) -> bool:
    """Whether ``path`` holds what ``ppl-dgm train`` writes."""
    path = Path(path)
    return path.is_dir() and any((path / m).exists() for m in _RUN_MARKS)


def check_run_dir(run_dir: str | Path, *, resume: bool = False,
                  overwrite: bool = False) -> Path:
    """Refuse a ``run_dir`` that cannot be started (without writing anything)."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise FileExistsError(f"--run-dir {str(run_dir)!r} is a file; give a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not resume:
        if not overwrite:
            raise FileExistsError(f"run directory {str(run_dir)!r} already exists; pass "
                                  f"--resume to continue it, --overwrite to replace it, or "
                                  f"--run-dir to choose another")
        if not is_run_dir(run_dir):
            raise FileExistsError(f"--overwrite replaces a run directory, but {str(run_dir)!r} "
                                  f"holds no {CONFIG_FILE}, checkpoints or metrics: it is not "
                                  f"one, so it is not deleted; choose another --run-dir")
    return run_dir


def start_run_dir(run_dir: str | Path, config: dict, *, resume: bool = False,
                  overwrite: bool = False) -> Path:
    """Create ``run_dir`` and write its ``config.json`` atomically.

    An existing non-empty directory is refused unless ``resume`` (continue it) or
    ``overwrite`` (replace it: only a run directory is ever replaced) is given."""
    run_dir = check_run_dir(run_dir, resume=resume, overwrite=overwrite)
    if overwrite and not resume and run_dir.is_dir() and any(run_dir.iterdir()):
        aside = run_dir.with_name(f".{run_dir.name}.old-{os.getpid()}")
        os.rename(run_dir, aside)  # the old run is out of the way at once ...
        shutil.rmtree(aside)  # ... and deleted
    run_dir.mkdir(parents=True, exist_ok=True)
    write_config(run_dir, config)
    return run_dir


def load_run(run_dir: str | Path, device: str | torch.device = "cpu", *,
             trust_code: bool = False, step: int | None = None) -> LoadedRun:
    """Read a run directory back: config, data, and model, guide and estimator with the
    newest intact checkpoint (or the one of ``step``) applied, on ``device``, model and
    guide in eval mode.

    :param trust_code: import a Python file the config names (refused otherwise).
    """
    path = Path(run_dir)
    config = read_config(path)
    notes = check_code(config, trust_code=trust_code, where=f"run directory {str(path)!r}")
    ckpt = find_checkpoint(path, step)
    notes += [f"skipped the newer checkpoint {s}" for s in ckpt.skipped]
    data = load_data(config["data"], root=config.get("data_root"), seed=config.get("seed", 0))
    _fits(config, data, ckpt)
    built = build_from_config(config, data)
    model, guide, estimator = built.model, built.guide, built.estimator
    x = data.train[:2]
    estimator.prepare(model, guide, x)  # builds data-sized auxiliary networks
    modules = {**trainables(model, guide, (x,)), "estimator": estimator}
    apply_checkpoint(ckpt, modules)
    for m in modules.values():
        m.to(device)
    set_training(False, model, guide)
    return LoadedRun(config, data, model, guide, estimator, ckpt, tuple(notes))


def init_from(run_dir: str | Path, model, guide, *, trust_code: bool = False) -> None:
    """Copy the model and guide weights of another run into ``model`` and ``guide``
    (built with the same options), e.g. up-down fine-tuning after greedy training."""
    other = load_run(run_dir, trust_code=trust_code)
    for role, live, saved in (("model", model, other.model), ("guide", guide, other.guide)):
        try:
            live.load_state_dict(saved.state_dict())
        except RuntimeError as e:
            raise ValueError(f"--init-from {run_dir}: its {role} does not fit this run's "
                             f"(build both with the same options): {e}") from None
