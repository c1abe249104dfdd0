"""Validation of model, guide and estimator options before anything is built.

``--model-opt z_dim=8`` and a run's ``config.json`` pass keyword options to a class.
:func:`check_options` reads the class's signature and refuses an unknown key (listing
the valid ones) and a value of the wrong kind or out of range (naming the option):
sizes (``*_dim``, ``hidden``, ``layers``, ``channels``, ``num_*``, ...) are integers
from 1 to :data:`MAX_SIZE`, counts of steps are integers >= 0, flags are booleans,
floats are finite.  A class that takes ``**options`` accepts further keys (an
estimator's are those of ``pyro.infer.ELBO``).

Example::

    from ppl_dgm.models import VAE
    from ppl_dgm.options import check_options

    check_options("model", VAE, {"z_dim": 8, "hidden": [200]}, name="vae")   # fine
    check_options("model", VAE, {"zdim": 8}, name="vae")
    # ValueError: unknown model option 'zdim' for vae; valid options: x_dim, z_dim, ...
"""

from __future__ import annotations

import inspect
import math
import re

__all__ = ["MAX_SIZE", "check_options", "valid_options"]

MAX_SIZE = 1_000_000  # a width, depth or count beyond this is a typo, not a model
_SIZE = re.compile(r"(^|_)(dim|dims|hidden|layers|channels|size|units|iterations|masks|"
                   r"runs|temperatures|groups|particles)$|^num_")
_COUNT = re.compile(r"(_steps|^burn_in|^steps)$")
_SEED = re.compile(r"(^|_)seed$")
_SKIP = {"self", "model", "args", "kwargs"}


def _parameters(target) -> dict[str, inspect.Parameter] | None:
    """Named keyword parameters of ``target``; None when its signature is unknown."""
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    return {n: p for n, p in params.items() if n not in _SKIP
            and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _open_ended(target) -> bool:
    try:
        params = inspect.signature(target).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is p.VAR_KEYWORD for p in params)


def valid_options(kind: str, target) -> tuple[list[str], bool]:
    """The option names ``target`` accepts and whether it takes further ``**options``."""
    params = _parameters(target)
    if params is None:
        return [], True
    names = list(params)
    open_ended = _open_ended(target)
    if kind == "estimator" and open_ended:
        import pyro.infer

        names += [n for n in _parameters(pyro.infer.ELBO.__init__) or {} if n not in names]
        open_ended = False
    return names, open_ended


def check_options(kind: str, target, options: dict | None, *, name: str) -> None:
    """Refuse unknown keys and bad values of ``options`` for class ``target``.

    :raises ValueError: naming the option, what was expected and what was given."""
    options = dict(options or {})
    if not options:
        return
    names, open_ended = valid_options(kind, target)
    params = _parameters(target) or {}
    flag = f"--{kind}-opt"
    for key, value in options.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"{flag} {str(key)[:40]!r}: option names are identifiers")
        if key not in names:
            if open_ended:
                continue
            raise ValueError(f"unknown {kind} option {key!r} for {name}; valid options: "
                             f"{', '.join(names) or 'none'}")
        param = params.get(key)
        _check_value(f"{flag} {key}={_short(value)}", key, value, param)


def _check_value(where: str, key: str, value, param: inspect.Parameter | None) -> None:
    ann = "" if param is None or param.annotation is param.empty else str(param.annotation)
    default = None if param is None or param.default is param.empty else param.default
    if value is None:
        if default is None or "None" in ann or not ann:
            return
        raise ValueError(f"{where}: {key} takes a value (default {default!r})")
    kinds = _kinds(ann, default)
    if isinstance(value, bool):
        if "bool" in kinds or not kinds:
            return
        raise ValueError(f"{where}: expected {_describe(kinds)}, not a flag")
    if isinstance(value, (list, tuple)):
        if "seq" not in kinds and kinds:
            raise ValueError(f"{where}: expected {_describe(kinds)}, not a list")
        for item in value:
            if isinstance(item, int) and not isinstance(item, bool):
                _check_int(where, key, item)
            elif not (isinstance(item, str) and ("str" in kinds or not kinds)):
                raise ValueError(f"{where}: every entry must be an integer")
        return
    if isinstance(value, int):
        if kinds and not kinds & {"int", "float", "seq"}:
            raise ValueError(f"{where}: expected {_describe(kinds)}")
        _check_int(where, key, value)
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{where}: expected a finite number")
        if kinds and "float" not in kinds:
            raise ValueError(f"{where}: expected {_describe(kinds)}, not a fraction")
        return
    if isinstance(value, str):
        if kinds and "str" not in kinds:
            raise ValueError(f"{where}: expected {_describe(kinds)}, got the text {value!r}")
        if len(value) > 4096:
            raise ValueError(f"{where}: the text is longer than 4096 characters")
        return
    if isinstance(value, dict) and (not kinds or "dict" in kinds):
        return
    raise ValueError(f"{where}: a {type(value).__name__} is not an option value here")


def _kinds(ann: str, default) -> set[str]:
    found = set()
    for word, kind in (("bool", "bool"), ("int", "int"), ("float", "float"), ("str", "str"),
                       ("Sequence", "seq"), ("list", "seq"), ("tuple", "seq"),
                       ("dict", "dict"), ("Mapping", "dict")):
        if re.search(rf"\b{word}\b", ann):
            found.add(kind)
    if not ann and default is not None:
        found.add({bool: "bool", int: "int", float: "float", str: "str", tuple: "seq",
                   list: "seq", dict: "dict"}.get(type(default), "any"))
        if "seq" in found:
            found |= {"int", "str"}  # layers=(32, 16) also takes 32 or "32,16"
    if "float" in found:
        found.add("int")
    return found - {"any"}


def _describe(kinds: set[str]) -> str:
    words = {"bool": "True/False", "int": "an integer", "float": "a number", "str": "a text",
             "seq": "a list such as 200,200", "dict": "a mapping"}
    return " or ".join(words[k] for k in sorted(kinds) if k in words)


def _check_int(where: str, key: str, value: int) -> None:
    if _SIZE.search(key):
        low, high, what = 1, MAX_SIZE, "a size"
    elif _COUNT.search(key) or _SEED.search(key):
        low, high, what = 0, 10**12, "a count"
    else:
        low, high, what = -(2**53), 2**53, "an integer"
    if not low <= value <= high:
        raise ValueError(f"{where}: expected {what} from {low} to {high}")


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."
