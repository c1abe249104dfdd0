"""The ``ppl-dgm`` command line: train, evaluate, sample, list, compare."""

from __future__ import annotations

import sys

from ..errors import CheckpointError, DataError, UnknownNameError
from .compare import _compare
from .diagnose import _diagnose
from .evaluate import _evaluate, _list, _sample
from .parser import _parser, parse_options
from .train import _train

__all__ = ["main", "parse_options"]


_COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample, "list": _list,
             "compare": _compare, "diagnose": _diagnose}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (UnknownNameError, DataError, CheckpointError, FileExistsError, ValueError) as e:
        print(f"ppl-dgm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
