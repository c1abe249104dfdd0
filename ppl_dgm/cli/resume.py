"""What ``ppl-dgm train`` runs: a fresh config from the command line, or for ``--resume``
the saved config with the command line checked against it.

On resume the saved configuration is the truth: an option not given is restored; a
given option equal to the saved one is fine; a different one is refused by name,
unless it is a learning rate named by ``--override`` (then it applies from the resumed
step on and is recorded in the config's ``overrides``).  ``--steps`` and the intervals
(``--log-every``, ``--eval-every``, ``--checkpoint-every``, ``--eval-samples``) say how
far and how verbosely to train, not what is trained, so they may change freely.
"""

from __future__ import annotations

from pathlib import Path

from .. import registry
from ..errors import ResumeError
from .parser import parse_options

__all__ = ["fresh_config", "resume_config"]

_FREE = ("steps", "log_every", "eval_every", "checkpoint_every", "eval_samples")
_FIXED = ("data", "data_root", "seed", "batch_size", "optim", "init_from")
_LR_GROUPS = {"lr_model": "model", "lr_guide": "guide", "lr_estimator": "estimator"}
_DEFAULTS = {"optim": "adam", "data_root": None, "init_from": None, "log_every": 100,
             "eval_every": 500, "checkpoint_every": 500, "eval_samples": 1000}


def data_spec(spec: str) -> str:
    """A data file with its absolute path, so that the run works from any directory."""
    if spec.endswith((".npy", ".npz")):
        return str(Path(spec).expanduser().resolve())
    if spec.startswith("text:"):
        file, sep, rest = spec[5:].partition(",")
        return f"text:{Path(file).expanduser().resolve()}{sep}{rest}" if file else spec
    return spec


def _estimator_options(args) -> dict:
    opts = parse_options(args.estimator_opt, "estimator")
    if args.particles is not None:
        opts["num_particles"] = args.particles
    return opts


def fresh_config(args) -> dict:
    """The config of a new run, from the command line."""
    guide = args.guide or registry.default_guide(args.model)
    config = {
        "model": registry.absolute_spec(args.model),
        "model_options": parse_options(args.model_opt, "model"),
        "guide": registry.absolute_spec(guide),
        "guide_options": parse_options(args.guide_opt, "guide"),
        "estimator": registry.absolute_spec(args.estimator),
        "estimator_options": _estimator_options(args),
        "data": data_spec(args.data), "data_root": args.data_root, "seed": args.seed,
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "lr_groups": {g: getattr(args, k) for k, g in _LR_GROUPS.items()
                      if getattr(args, k) is not None},
        "optim": args.optim, "log_every": args.log_every, "eval_every": args.eval_every,
        "checkpoint_every": args.checkpoint_every, "eval_samples": args.eval_samples,
    }
    if args.init_from:
        config["init_from"] = str(Path(args.init_from).expanduser().resolve())
    return config


def resume_config(saved: dict, args, *, run_dir, step: int) -> dict:
    """The config a resumed run continues with (``saved`` updated by what may change);
    raises :class:`~ppl_dgm.errors.ResumeError` naming every option that differs."""
    given = args.given
    overrides = set(args.override or [])
    config = dict(saved)
    problems, changes = [], []

    def differs(flag, now, before, fix):
        sep = "" if flag.endswith("=") else " "
        problems.append(f"{flag}{sep}{_show(now)} differs from the saved {_show(before)} "
                        f"({fix})")

    keep = "a resumed run keeps it; start a new run with another --run-dir"
    for role in ("model", "guide", "estimator"):
        if role in given and registry.absolute_spec(getattr(args, role)) != saved[role]:
            differs(f"--{role}", getattr(args, role), saved[role], keep)
    for key in _FIXED:
        if key in given:
            now = getattr(args, key)
            now = data_spec(now) if key == "data" else (
                str(Path(now).expanduser().resolve()) if key == "init_from" else now)
            if now != saved.get(key, _DEFAULTS.get(key)):
                differs(f"--{key.replace('_', '-')}", now, saved.get(key, _DEFAULTS.get(key)),
                        keep)
    for dest, key in (("model_opt", "model_options"), ("guide_opt", "guide_options")):
        for k, v in parse_options(getattr(args, dest), dest[:-4]).items():
            before = saved.get(key, {}).get(k, "the default")
            if before != v:
                differs(f"--{dest.replace('_', '-')} {k}=", v, before, keep)
    given_est = parse_options(args.estimator_opt, "estimator") if "estimator_opt" in given else {}
    if "particles" in given:
        given_est["num_particles"] = args.particles
    for k, v in given_est.items():
        before = saved.get("estimator_options", {}).get(k, "the default")
        if before != v:
            flag = "--particles" if k == "num_particles" and "particles" in given \
                else f"--estimator-opt {k}="
            differs(flag, v, before, keep)
    saved_groups = dict(saved.get("lr_groups", {}))
    new_groups = dict(saved_groups)
    for dest, name in [("lr", "lr"), *((k, k.replace("_", "-")) for k in _LR_GROUPS)]:
        if dest not in given:
            continue
        now = getattr(args, dest)
        before = saved.get("lr") if dest == "lr" else saved_groups.get(_LR_GROUPS[dest])
        if before == now:
            continue
        if name not in overrides:
            differs(f"--{name}", now, before if before is not None else "--lr",
                    f"pass --override {name} to change it from the resumed step on")
            continue
        if dest == "lr":
            config["lr"] = now
        else:
            new_groups[_LR_GROUPS[dest]] = now
        changes.append({"step": step, "option": name, "from": before, "to": now})
    if problems:
        raise ResumeError(f"cannot resume {str(run_dir)!r}: " + "; ".join(problems))
    config["lr_groups"] = new_groups
    for key in _FREE:
        if key in given:
            config[key] = getattr(args, key)
        else:
            config.setdefault(key, _DEFAULTS.get(key, getattr(args, key)))
    if changes:
        config["overrides"] = list(saved.get("overrides", [])) + changes
    return config


def _show(value) -> str:
    text = str(value)
    return text if len(text) <= 60 else "..." + text[-57:]
