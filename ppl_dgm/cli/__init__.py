"""The ``ppl-dgm`` command line: train, evaluate, sample, list, compare, diagnose.

:func:`main` is the one error boundary.  Every expected failure (bad input, a user's
own code that raises, an OS error such as a full disk, a NaN stop, a corrupt file)
becomes a message of one or two lines naming what is wrong and how to fix it, and exit
code 2; an unexpected internal error says that it is a bug and exits 1.  A traceback
is printed only with ``--debug``.
"""

from __future__ import annotations

import errno
import sys
import traceback

from ..errors import CheckpointError, NonFiniteLossError, UserCodeError
from .compare import _compare
from .diagnose import _diagnose
from .evaluate import _evaluate, _list, _sample
from .parser import _parser, given_options, parse_options
from .train import _train

__all__ = ["main", "parse_options"]


_COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample, "list": _list,
             "compare": _compare, "diagnose": _diagnose}
# the exceptions that are a user's input, files or environment, never a bug of ours
_EXPECTED = (ValueError, KeyError, CheckpointError, NonFiniteLossError, UserCodeError, OSError,
             MemoryError)
_MAX_MESSAGE = 1500


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parser().parse_args(argv)
        if args.command == "train":
            args.given = given_options(argv)
    except SystemExit as e:  # --help (0) or a refused argument (2, already printed)
        return e.code if isinstance(e.code, int) else 2
    prog = f"ppl-dgm {args.command}"
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            traceback.print_exc()
        code, lines = describe(e)
        lines = ["".join(c if c.isprintable() else repr(c)[1:-1] for c in line)
                 for line in lines]
        print(f"{prog}: {lines[0]}", file=sys.stderr)
        for line in lines[1:]:
            print(line, file=sys.stderr)
        return code


def describe(e: BaseException) -> tuple[int, list[str]]:
    """Exit code and the one or two lines that say what went wrong."""
    user = _user_frame(e)
    if user is not None and not isinstance(e, (CheckpointError, NonFiniteLossError)):
        file, line, func = user
        return 2, [f"error: your file {file} raised {type(e).__name__}: {_text(e)}",
                   f"(line {line}, in {func}; fix the file, or rerun with --debug for the "
                   f"traceback)"]
    if isinstance(e, OSError):
        return 2, [f"error: {_os_text(e)}"]
    if isinstance(e, MemoryError):
        return 2, ["error: out of memory; use smaller sizes, batches or sample counts"]
    if isinstance(e, _EXPECTED) or type(e).__name__ == "OutOfMemoryError":
        return 2, [f"error: {_text(e)}"]
    return 1, [f"internal error (a bug in ppl-dgm; please report it): {type(e).__name__}: "
               f"{_text(e)}", "rerun with --debug to see the traceback"]


def _text(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= _MAX_MESSAGE else text[:_MAX_MESSAGE - 3] + "..."


_OS_HINTS = {
    errno.ENOSPC: "the disk is full: free space and rerun (a training run continues from "
                  "its last intact checkpoint with --resume)",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EACCES: "permission denied: check the permissions or write somewhere else",
    errno.EPERM: "operation not permitted",
    errno.ENOENT: "no such file or directory",
    errno.EISDIR: "it is a directory, not a file",
    errno.ENOTDIR: "a part of the path is not a directory",
    errno.EDQUOT: "the disk quota is exceeded: free space and rerun",
}


def _os_text(e: OSError) -> str:
    if e.strerror is None:  # raised with our own message
        return _text(e)
    where = f"{e.filename}: " if e.filename else ""
    hint = _OS_HINTS.get(e.errno, e.strerror)
    return f"{where}{e.strerror}" + ("" if hint == e.strerror else f" ({hint})")


def _user_frame(e: BaseException):
    """(file, line, function) of the innermost frame in a user's own file (imported
    from ``file.py:Name``), or None when the error did not come from one."""
    found = None
    tb = e.__traceback__
    while tb is not None:
        g = tb.tb_frame.f_globals
        if str(g.get("__name__", "")).startswith("ppl_dgm_user_"):
            found = (tb.tb_frame.f_code.co_filename, tb.tb_lineno, tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    if found is None and e.__cause__ is not None and e.__cause__ is not e:
        return _user_frame(e.__cause__) if isinstance(e, UserCodeError) else None
    return found


if __name__ == "__main__":
    sys.exit(main())
