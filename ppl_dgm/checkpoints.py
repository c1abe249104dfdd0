"""Atomic, verifiable checkpoints that load without unpickling.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-00001000/`` holding

* ``weights.safetensors``: every module's state dict, keys prefixed by the module's
  role (``model.``, ``guide.``, ``estimator.``);
* ``optimizer.safetensors`` + the optimiser's non-tensor state inside ``meta.json``;
* ``rng.safetensors``: torch's CPU (and CUDA) generator states;
* ``meta.json``: step, user metadata and the SHA-256 of every file, written last.

It is written into a temporary directory and renamed into place, so a crash leaves
either the whole checkpoint or none.  Loading verifies every hash before anything is
applied, and checks every key and shape against the live modules before any
``load_state_dict``: a corrupt, truncated or mismatched checkpoint raises
:class:`~ppl_dgm.errors.CheckpointError` and leaves the modules untouched.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .errors import CheckpointError

__all__ = ["Checkpoint", "apply_checkpoint", "latest_checkpoint", "load_checkpoint",
           "save_checkpoint"]

_FILES = ("weights.safetensors", "optimizer.safetensors", "rng.safetensors")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict | None
    rng: dict[str, torch.Tensor]
    meta: dict


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, skeleton = {}, {"param_groups": state["param_groups"], "state": {}}
    for pid, pstate in state["state"].items():
        entry = {}
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
                entry[key] = {"tensor": f"{pid}.{key}"}
            else:
                entry[key] = {"value": value}
        skeleton["state"][str(pid)] = entry
    return tensors, skeleton


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], skeleton: dict) -> dict:
    state = {}
    for pid, entry in skeleton["state"].items():
        state[int(pid)] = {k: tensors[v["tensor"]] if "tensor" in v else v["value"]
                           for k, v in entry.items()}
    return {"state": state, "param_groups": skeleton["param_groups"]}


def save_checkpoint(run_dir: str | Path, step: int, *, modules: dict[str, object],
                    optimizer: torch.optim.Optimizer | None = None, meta: dict | None = None,
                    keep: int = 2) -> Path:
    """Write a checkpoint atomically and keep the ``keep`` most recent ones."""
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        weights = {}
        for role, module in modules.items():
            for key, value in module.state_dict().items():
                weights[f"{role}.{key}"] = value.detach().clone().contiguous().cpu()
        save_file(weights, tmp / "weights.safetensors")
        opt_tensors, opt_skeleton = ({}, None)
        if optimizer is not None:
            opt_tensors, opt_skeleton = _flatten_optimizer(optimizer.state_dict())
        save_file(opt_tensors, tmp / "optimizer.safetensors")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rng[f"cuda.{i}"] = s
        save_file(rng, tmp / "rng.safetensors")
        for name in _FILES:
            _fsync_file(tmp / name)
        info = {"step": int(step), "meta": meta or {}, "optimizer": opt_skeleton,
                "sha256": {name: _sha256(tmp / name) for name in _FILES}}
        with open(tmp / "meta.json", "w") as f:
            json.dump(info, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        dir_fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sorted(p for p in root.glob("step-*") if p.is_dir())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory (one with ``meta.json``)."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return None
    done = sorted(p for p in root.glob("step-*") if (p / "meta.json").exists())
    return done[-1] if done else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint directory (or a run directory's latest one).

    Only safetensors and JSON are read: loading runs no code from the checkpoint.
    """
    path = Path(path)
    if (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"run directory {str(path)!r} holds no complete checkpoint")
        path = found
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise CheckpointError(f"{str(path)!r} is not a checkpoint: meta.json is missing "
                              f"(an interrupted write leaves no meta.json)")
    try:
        info = json.loads(meta_path.read_text())
        hashes = info["sha256"]
        step = int(info["step"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r}: meta.json is corrupt ({e})") from e
    for name in _FILES:
        f = path / name
        if not f.exists():
            raise CheckpointError(f"checkpoint {str(path)!r} is incomplete: {name} is missing")
        if _sha256(f) != hashes.get(name):
            raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or truncated: {name} "
                                  f"does not match its recorded SHA-256; resume from an "
                                  f"earlier checkpoint or start again")
    try:
        weights = load_file(path / "weights.safetensors")
        opt_tensors = load_file(path / "optimizer.safetensors")
        rng = load_file(path / "rng.safetensors")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {e}") from e
    optimizer = (_unflatten_optimizer(opt_tensors, info["optimizer"])
                 if info.get("optimizer") is not None else None)
    return Checkpoint(path=path, step=step, weights=weights, optimizer=optimizer, rng=rng,
                      meta=info.get("meta", {}))


def apply_checkpoint(ckpt: Checkpoint, modules: dict[str, object],
                     optimizer: torch.optim.Optimizer | None = None, *,
                     restore_rng: bool = False) -> None:
    """Load a verified checkpoint into live modules, all or nothing."""
    per_role: dict[str, dict[str, torch.Tensor]] = {role: {} for role in modules}
    for key, value in ckpt.weights.items():
        role, _, rest = key.partition(".")
        if role not in per_role:
            raise CheckpointError(f"checkpoint {str(ckpt.path)!r} holds weights for "
                                  f"{role!r}, which is not among {sorted(modules)}")
        per_role[role][rest] = value
    for role, module in modules.items():
        live = module.state_dict()
        saved = per_role[role]
        if set(live) != set(saved):
            raise CheckpointError(
                f"checkpoint {str(ckpt.path)!r} does not fit the {role}: missing "
                f"{sorted(set(live) - set(saved))[:5]}, unexpected "
                f"{sorted(set(saved) - set(live))[:5]}; build the {role} with the options "
                f"it was trained with")
        for key, value in live.items():
            if tuple(value.shape) != tuple(saved[key].shape):
                raise CheckpointError(
                    f"checkpoint {str(ckpt.path)!r}: {role}.{key} has shape "
                    f"{tuple(saved[key].shape)} but the live {role} expects "
                    f"{tuple(value.shape)}")
    if optimizer is not None and ckpt.optimizer is not None:
        if len(ckpt.optimizer["param_groups"]) != len(optimizer.param_groups):
            raise CheckpointError(f"checkpoint {str(ckpt.path)!r}: optimiser has "
                                  f"{len(ckpt.optimizer['param_groups'])} parameter groups, "
                                  f"the live one {len(optimizer.param_groups)}")
    for role, module in modules.items():
        module.load_state_dict(per_role[role])
    if optimizer is not None and ckpt.optimizer is not None:
        optimizer.load_state_dict(ckpt.optimizer)
    if restore_rng:
        torch.set_rng_state(ckpt.rng["torch"])
        cuda = [ckpt.rng[k] for k in sorted(ckpt.rng) if k.startswith("cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
