"""Atomic, verifiable checkpoints that load without unpickling.

A checkpoint is a directory ``RUN_DIR/checkpoints/step-00001000/`` holding

* ``weights.safetensors``: every module's state dict, keys prefixed by the module's
  role (``model.``, ``guide.``, ``estimator.``);
* ``optimizer.safetensors`` + the optimiser's non-tensor state inside ``meta.json``;
* ``rng.safetensors``: torch's CPU (and CUDA) generator states;
* ``meta.json``: step, user metadata and the size and SHA-256 of every file, written
  last.

It is written into a temporary directory and renamed into place, so a crash leaves
either the whole checkpoint or none; the temporary directories that killed writes
leave behind are removed by the next save.  A checkpoint directory may come from
someone else, so loading trusts nothing in it: only regular files directly inside it
are read (a symlink, a device such as ``/dev/zero`` or a FIFO is refused at once),
never more bytes than recorded, every hash is verified, every number in ``meta.json``
is bounded, and every weight key and shape, the optimiser state (parameter groups,
hyper-parameters, per-parameter tensors) and the RNG states are checked against the
live modules before any of them is touched: a corrupt, truncated or mismatched
checkpoint raises :class:`~ppl_dgm.errors.CheckpointError` and leaves the modules
untouched.  :func:`find_checkpoint` picks the newest intact checkpoint (or a chosen
step) and says which newer ones it skipped and why.

Example::

    from ppl_dgm.checkpoints import find_checkpoint, apply_checkpoint

    ckpt = find_checkpoint("runs/vae-elbo-s0")        # newest intact one
    ckpt.step, ckpt.skipped                             # e.g. 500, ()
    apply_checkpoint(ckpt, {"model": model, "guide": guide, "estimator": estimator})
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from .errors import CheckpointError
from .runfiles import check_int, check_number, clean_stale, fsync_dir, read_bytes, read_json

__all__ = ["MAX_FILE_BYTES", "MAX_STEP", "Checkpoint", "apply_checkpoint", "check_checkpoint",
           "find_checkpoint", "latest_checkpoint", "load_checkpoint", "resume_checkpoint",
           "save_checkpoint"]

_FILES = ("weights.safetensors", "optimizer.safetensors", "rng.safetensors")
MAX_STEP = 10**12          # a recorded step beyond this is corrupt
MAX_FILE_BYTES = 16 << 30  # no checkpoint file is read beyond this (16 GiB)
_STEP_DIR = re.compile(r"step-(\d{8,13})")


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint: ``step``, tensors, optimiser state, RNG states, user
    ``meta``; ``skipped`` names the newer checkpoints that were not intact (and why)
    when it was found by :func:`find_checkpoint`."""

    path: Path
    step: int
    weights: dict[str, torch.Tensor]
    optimizer: dict | None
    rng: dict[str, torch.Tensor]
    meta: dict
    skipped: tuple[str, ...] = ()


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


def _digest(path: Path) -> tuple[int, str]:
    import hashlib

    h, size = hashlib.sha256(), 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            size += len(block)
    return size, h.hexdigest()


def save_checkpoint(run_dir: str | Path, step: int, *, modules: dict[str, object],
                    optimizer: torch.optim.Optimizer | None = None, meta: dict | None = None,
                    keep: int = 2) -> Path:
    """Write a checkpoint atomically and keep the ``keep`` most recent ones.

    The temporary directories of earlier, killed writes are removed first.  A write that
    fails (disk full, a read-only directory) raises
    :class:`~ppl_dgm.errors.CheckpointError` naming the checkpoint, removes its partial
    files and leaves every earlier checkpoint as it was."""
    step = check_int(step, "checkpoint step", low=0, high=MAX_STEP, error=ValueError)
    root = Path(run_dir) / "checkpoints"
    final = root / f"step-{step:08d}"
    tmp = None
    try:
        root.mkdir(parents=True, exist_ok=True)
        clean_stale(root)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
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
        digests = {name: _digest(tmp / name) for name in _FILES}
        info = {"format": 2, "step": int(step), "meta": meta or {}, "optimizer": opt_skeleton,
                "sha256": {name: d[1] for name, d in digests.items()},
                "sizes": {name: d[0] for name, d in digests.items()}}
        with open(tmp / "meta.json", "w") as f:
            json.dump(info, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(root)
    except OSError as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        prev = latest_checkpoint(run_dir)
        raise CheckpointError(
            f"writing checkpoint {str(final)!r} failed: {e.strerror or e}; "
            + (f"the previous checkpoint {prev.name} is intact" if prev is not None
               else "there is no earlier checkpoint")
            + "; free disk space or make the directory writable, then rerun with "
              "--resume") from e
    except BaseException:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = sorted(p for p in root.glob("step-*") if p.is_dir() and not p.is_symlink())
    for p in old[:-keep] if keep > 0 else []:
        shutil.rmtree(p, ignore_errors=True)
    return final


def _step_dirs(run_dir: Path) -> list[tuple[int, Path]]:
    root = run_dir / "checkpoints"
    if root.is_symlink():
        raise CheckpointError(f"{str(root)!r} is a symlink; a run directory's checkpoints "
                              f"must be inside it")
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.fullmatch(p.name)
        if m is not None:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The newest complete checkpoint of a run directory (one with ``meta.json``); it is
    not verified (see :func:`find_checkpoint`)."""
    try:
        dirs = _step_dirs(Path(run_dir))
    except CheckpointError:
        return None
    done = [p for _, p in dirs if not p.is_symlink() and (p / "meta.json").exists()]
    return done[-1] if done else None


def find_checkpoint(run_dir: str | Path, step: int | None = None) -> Checkpoint:
    """The newest intact checkpoint of a run directory, or the one written at ``step``.

    Newer checkpoints that fail verification are skipped and named, with the reason, in
    the result's ``skipped`` (a caller should say so).  Raises
    :class:`~ppl_dgm.errors.CheckpointError` when none is intact."""
    run_dir = Path(run_dir)
    dirs = _step_dirs(run_dir)
    if step is not None:
        match = [p for s, p in dirs if s == step]
        if not match:
            raise CheckpointError(f"run directory {str(run_dir)!r} has no checkpoint at step "
                                  f"{step}; it has steps {[s for s, _ in dirs]}")
        return _load(match[0], root=run_dir)
    skipped = []
    for _, p in reversed(dirs):
        try:
            ckpt = _load(p, root=run_dir)
        except CheckpointError as e:
            skipped.append(f"{p.name}: {str(e).replace(str(p) + '/', '')}")
            continue
        return Checkpoint(ckpt.path, ckpt.step, ckpt.weights, ckpt.optimizer, ckpt.rng,
                          ckpt.meta, tuple(skipped))
    raise CheckpointError(f"run directory {str(run_dir)!r} holds no intact checkpoint"
                          + (f": {'; '.join(skipped)}" if skipped else ""))


def resume_checkpoint(run_dir: str | Path, resume) -> Checkpoint | None:
    """What ``fit(..., resume=resume)`` continues from: None for ``False`` or a run with no
    checkpoint yet; for ``True`` the newest intact checkpoint (warning about skipped
    newer ones); for an ``int`` the checkpoint of that step; for a path that checkpoint."""
    if resume is None or resume is False:
        return None
    if resume is True:
        if not _step_dirs(Path(run_dir)):
            return None
        ckpt = find_checkpoint(run_dir)
        if ckpt.skipped:
            import warnings

            warnings.warn(f"resuming from {ckpt.path.name}; skipped "
                          f"{'; '.join(ckpt.skipped)}", stacklevel=3)
        return ckpt
    if isinstance(resume, int):
        return find_checkpoint(run_dir, step=resume)
    return load_checkpoint(resume)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint directory (or a run directory's newest intact one).

    Only safetensors and JSON are read: loading runs no code from the checkpoint.
    """
    path = Path(path)
    if (path / "checkpoints").is_dir():
        if not _step_dirs(path):
            raise CheckpointError(f"run directory {str(path)!r} holds no complete checkpoint")
        return find_checkpoint(path)
    return _load(path, root=path)


def _load(path: Path, *, root: Path) -> Checkpoint:
    where = f"checkpoint {str(path)!r}"
    if path.is_symlink() or (path != root and not path.is_dir()):
        raise CheckpointError(f"{where} is not a directory inside the run (a symlink?)")
    if not (path / "meta.json").exists() and not (path / "meta.json").is_symlink():
        raise CheckpointError(f"{str(path)!r} is not a checkpoint: meta.json is missing "
                              f"(an interrupted write leaves no meta.json)")
    info = read_json(path / "meta.json", what="checkpoint file", root=root)
    fields = _check_meta(info, path, where)
    blobs = {}
    for name in _FILES:
        data = read_bytes(path / name, max_bytes=MAX_FILE_BYTES, root=root,
                          what="checkpoint file",
                          size=fields["sizes"].get(name), sha256=fields["sha256"][name])
        try:
            blobs[name] = load_bytes(data)
        except (SafetensorError, ValueError, RuntimeError, OverflowError) as e:
            raise CheckpointError(f"{where} cannot be read: {name}: {e}") from None
    opt_tensors = blobs["optimizer.safetensors"]
    skeleton = info.get("optimizer")
    if skeleton is not None:
        _check_skeleton(skeleton, opt_tensors, where)
    elif opt_tensors:
        raise CheckpointError(f"{where}: optimizer.safetensors holds tensors but meta.json "
                              f"no optimiser state")
    _check_rng(blobs["rng.safetensors"], where)
    optimizer = _unflatten_optimizer(opt_tensors, skeleton) if skeleton is not None else None
    return Checkpoint(path=path, step=fields["step"], weights=blobs["weights.safetensors"],
                      optimizer=optimizer, rng=blobs["rng.safetensors"],
                      meta=info.get("meta") or {})


def _check_meta(info, path: Path, where: str) -> dict:
    def err(msg):
        return CheckpointError(f"{where}: meta.json is corrupt: {msg}")

    if not isinstance(info, dict):
        raise err(f"expected an object, found {type(info).__name__}")
    try:
        step = check_int(info.get("step"), "step", low=0, high=MAX_STEP)
    except CheckpointError as e:
        raise err(str(e)) from None
    m = _STEP_DIR.fullmatch(path.name)
    if m is not None and int(m.group(1)) != step:
        raise err(f"it records step {step} but the directory is {path.name}")
    hashes, sizes = info.get("sha256"), info.get("sizes", {})
    if not isinstance(hashes, dict) or set(hashes) != set(_FILES) or not all(
            isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in hashes.values()):
        raise err(f"sha256 must map {list(_FILES)} to hex digests")
    if not isinstance(sizes, dict) or not set(sizes) <= set(_FILES):
        raise err(f"sizes must map {list(_FILES)} to byte counts")
    for name, size in sizes.items():
        try:
            check_int(size, f"sizes[{name!r}]", low=0, high=MAX_FILE_BYTES)
        except CheckpointError as e:
            raise err(str(e)) from None
    if not isinstance(info.get("meta", {}), dict):
        raise err("meta must be an object")
    if info.get("optimizer") is not None and not isinstance(info["optimizer"], dict):
        raise err("optimizer must be an object or null")
    return {"step": step, "sha256": hashes, "sizes": sizes}


_PARAM_SHAPED = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "momentum_buffer")


def _check_skeleton(skeleton: dict, tensors: dict[str, torch.Tensor], where: str) -> None:
    """The optimiser state of ``meta.json`` on its own: parameter groups of integer ids,
    per-parameter entries that name tensors of ``optimizer.safetensors`` by their own
    key, every tensor named once."""
    def err(msg):
        return CheckpointError(f"{where}: the optimiser state is corrupt: {msg}")

    groups, state = skeleton.get("param_groups"), skeleton.get("state")
    if not isinstance(groups, list) or not isinstance(state, dict) or not 1 <= len(groups) <= 64:
        raise err("expected param_groups (a list of 1-64 groups) and state (an object)")
    ids = []
    for g in groups:
        if not isinstance(g, dict) or not isinstance(g.get("params"), list):
            raise err("every parameter group needs a params list")
        for i in g["params"]:
            ids.append(check_int(i, "a parameter id", low=0, high=10**7, error=err))
        for key, value in g.items():
            if key != "params":
                _check_hyper(key, value, err)
    if len(set(ids)) != len(ids):
        raise err("a parameter id appears twice")
    used, known = set(), set(ids)
    for pid, entry in state.items():
        if not (isinstance(pid, str) and pid.isdigit() and int(pid) in known):
            raise err(f"state for parameter {pid[:40]!r}, which no group holds")
        if not isinstance(entry, dict):
            raise err(f"state of parameter {pid} must be an object")
        for key, value in entry.items():
            if isinstance(value, dict) and set(value) == {"tensor"}:
                name = value["tensor"]
                if name != f"{pid}.{key}" or name not in tensors:
                    raise err(f"parameter {pid} names tensor {str(name)[:60]!r}; expected "
                              f"{pid}.{key}, stored in optimizer.safetensors")
                t = tensors[name]
                if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
                    raise err(f"tensor {name} is not a finite float tensor")
                if key == "step" and not (t.numel() == 1 and 0 <= float(t) <= MAX_STEP):
                    raise err(f"tensor {name} is not a step count")
                used.add(name)
            elif isinstance(value, dict) and set(value) == {"value"}:
                _check_hyper(key, value["value"], err)
            else:
                raise err(f"state {key!r} of parameter {pid} must be {{'tensor': name}} or "
                          f"{{'value': number}}")
    if used != set(tensors):
        raise err(f"optimizer.safetensors holds tensors no state names: "
                  f"{sorted(set(tensors) - used)[:3]}")


def _check_hyper(key, value, err) -> None:
    if not isinstance(key, str) or len(key) > 64:
        raise err("a hyper-parameter name must be a short string")
    if key == "lr":
        check_number(value, "lr", positive=True, error=err)
    elif key == "betas":
        if not (isinstance(value, list) and len(value) == 2):
            raise err(f"betas is {str(value)[:60]}; expected two numbers in [0, 1)")
        for b in value:
            check_number(b, "a beta", low=0.0, high=0.999999999, error=err)
    elif key in ("eps", "weight_decay", "momentum", "dampening"):
        check_number(value, key, low=0.0, error=err)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        check_number(value, key, error=err)
    elif not (value is None or isinstance(value, bool) or
              (isinstance(value, str) and len(value) <= 64)):
        raise err(f"{key} is {str(value)[:60]}; expected a number, a flag or a short name")


def _check_rng(rng: dict[str, torch.Tensor], where: str) -> None:
    for key, t in rng.items():
        if key != "torch" and not re.fullmatch(r"cuda\.\d{1,2}", key):
            raise CheckpointError(f"{where}: rng.safetensors holds an unknown state {key!r}")
        if t.dtype != torch.uint8 or t.dim() != 1 or t.numel() > 1 << 20:
            raise CheckpointError(f"{where}: RNG state {key} is not a byte vector")
    if "torch" not in rng:
        raise CheckpointError(f"{where}: the torch RNG state is missing")


def check_checkpoint(ckpt: Checkpoint, modules: dict[str, object],
                     optimizer: torch.optim.Optimizer | None = None, *,
                     restore_rng: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Check that a checkpoint fits live modules (and optimiser and RNG) without touching
    them; returns the weights split by role.  Raises
    :class:`~ppl_dgm.errors.CheckpointError` naming the first mismatch."""
    where = f"checkpoint {str(ckpt.path)!r}"
    per_role: dict[str, dict[str, torch.Tensor]] = {role: {} for role in modules}
    for key, value in ckpt.weights.items():
        role, _, rest = key.partition(".")
        if role not in per_role:
            raise CheckpointError(f"{where} holds weights for {role!r}, which is not among "
                                  f"{sorted(modules)}")
        per_role[role][rest] = value
    for role, module in modules.items():
        live = module.state_dict()
        saved = per_role[role]
        if set(live) != set(saved):
            raise CheckpointError(
                f"{where} does not fit the {role}: missing "
                f"{sorted(set(live) - set(saved))[:5]}, unexpected "
                f"{sorted(set(saved) - set(live))[:5]}; build the {role} with the options "
                f"it was trained with")
        for key, value in live.items():
            if tuple(value.shape) != tuple(saved[key].shape):
                raise CheckpointError(
                    f"{where}: {role}.{key} has shape {tuple(saved[key].shape)} but the live "
                    f"{role} expects {tuple(value.shape)}")
    if optimizer is not None and ckpt.optimizer is not None:
        _check_optimizer(ckpt.optimizer, optimizer, where)
    if restore_rng:
        size = torch.get_rng_state().numel()
        if ckpt.rng["torch"].numel() != size:
            raise CheckpointError(f"{where}: the torch RNG state has "
                                  f"{ckpt.rng['torch'].numel()} bytes, expected {size}")
        cuda = [k for k in ckpt.rng if k.startswith("cuda.")]
        if cuda and torch.cuda.is_available():
            live = torch.cuda.get_rng_state_all()
            if len(cuda) > len(live) or any(ckpt.rng[f"cuda.{i}"].numel() != live[i].numel()
                                            for i in range(len(cuda))):
                raise CheckpointError(f"{where}: its CUDA RNG states do not fit this "
                                      f"machine's {len(live)} devices")
    return per_role


def _check_optimizer(saved: dict, optimizer: torch.optim.Optimizer, where: str) -> None:
    live_groups, saved_groups = optimizer.param_groups, saved["param_groups"]
    if len(saved_groups) != len(live_groups):
        raise CheckpointError(f"{where}: optimiser has {len(saved_groups)} parameter groups, "
                              f"the live one {len(live_groups)}")
    params = {}
    for lg, sg in zip(live_groups, saved_groups):
        if len(sg["params"]) != len(lg["params"]):
            raise CheckpointError(f"{where}: optimiser group {lg.get('name', '?')!r} has "
                                  f"{len(sg['params'])} parameters, the live one "
                                  f"{len(lg['params'])}")
        params.update(zip(sg["params"], lg["params"]))
    if sorted(params) != list(range(len(params))):
        raise CheckpointError(f"{where}: optimiser parameter ids are not 0..{len(params) - 1}")
    for pid, entry in saved["state"].items():
        p = params[int(pid)]
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and key in _PARAM_SHAPED and \
                    tuple(value.shape) != tuple(p.shape):
                raise CheckpointError(f"{where}: optimiser state {key} of parameter {pid} has "
                                      f"shape {tuple(value.shape)}, the parameter "
                                      f"{tuple(p.shape)}")


def apply_checkpoint(ckpt: Checkpoint, modules: dict[str, object],
                     optimizer: torch.optim.Optimizer | None = None, *,
                     restore_rng: bool = False) -> None:
    """Load a verified checkpoint into live modules, all or nothing: everything is checked
    by :func:`check_checkpoint` before the first module is touched."""
    per_role = check_checkpoint(ckpt, modules, optimizer, restore_rng=restore_rng)
    for role, module in modules.items():
        module.load_state_dict(per_role[role])
    if optimizer is not None and ckpt.optimizer is not None:
        optimizer.load_state_dict(ckpt.optimizer)
    if restore_rng:
        torch.set_rng_state(ckpt.rng["torch"])
        cuda = [ckpt.rng[k] for k in sorted(ckpt.rng) if k.startswith("cuda.")]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda)
