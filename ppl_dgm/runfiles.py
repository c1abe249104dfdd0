"""Reading and writing the files of a run directory safely.

A run directory may come from someone else, so every file in it is read as untrusted
input: only regular files (no symlinks, devices or FIFOs, which could point outside
the run or never end), none larger than a bound, nothing followed out of the directory,
JSON parsed with errors that name the file.  Writes go to a temporary file in the same
directory that is renamed into place, so a crash leaves the old file or the new one.

Example::

    from ppl_dgm.runfiles import read_json, write_atomic

    write_atomic(run / "config.json", json.dumps(config))
    config = read_json(run / "config.json", root=run, what="run config")
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
from pathlib import Path

from .errors import CheckpointError

__all__ = ["MAX_JSON_BYTES", "check_inside", "check_int", "check_number", "clean_stale",
           "read_bytes", "read_json", "read_metrics", "write_atomic"]

MAX_JSON_BYTES = 64 << 20  # config.json, meta.json: far above anything ppl-dgm writes
MAX_METRICS_BYTES = 1 << 30
_O_FLAGS = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)


def check_inside(path: Path, root: Path, *, error=CheckpointError) -> None:
    """Refuse ``path`` unless it lies under ``root`` through no symlink at all."""
    path, root = Path(path), Path(root)
    try:
        rel = path.relative_to(root)
    except ValueError:
        raise error(f"{str(path)!r} lies outside {str(root)!r}") from None
    if ".." in rel.parts:
        raise error(f"{str(path)!r} leaves {str(root)!r} (a '..' in the path)")
    current = root
    for part in rel.parts:
        current = current / part
        if current.is_symlink():
            raise error(f"{str(current)!r} is a symlink; files of a run directory must be "
                        f"regular files inside it (copy the file instead of linking it)")


def read_bytes(path: str | Path, *, max_bytes: int, what: str, root: Path | None = None,
               size: int | None = None, sha256: str | None = None,
               error=CheckpointError) -> bytes:
    """The bytes of a regular file, at most ``max_bytes`` (or exactly ``size``), checked
    against ``sha256`` when given; no symlink is followed and nothing beyond the bound is
    read, so a link to ``/dev/zero`` or a FIFO is refused at once instead of hanging."""
    path = Path(path)
    if root is not None:
        check_inside(path, root, error=error)
    try:
        fd = os.open(path, _O_FLAGS)
    except FileNotFoundError:
        raise error(f"{what} {str(path)!r} is missing") from None
    except OSError as e:
        if path.is_symlink():
            raise error(f"{what} {str(path)!r} is a symlink; only regular files are "
                        f"read") from None
        raise error(f"{what} {str(path)!r} cannot be read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file"
            raise error(f"{what} {str(path)!r} is {kind}; expected a regular file")
        limit = max_bytes if size is None else size
        if st.st_size > max_bytes or (size is not None and st.st_size != size):
            expected = f"{size} as recorded" if size is not None else f"at most {max_bytes}"
            raise error(f"{what} {str(path)!r} is corrupt or truncated: it has {st.st_size} "
                        f"bytes, expected {expected}")
        chunks, total, h = [], 0, hashlib.sha256()
        while True:
            block = os.read(fd, min(1 << 22, limit + 1 - total))
            if not block:
                break
            total += len(block)
            if total > limit:
                raise error(f"{what} {str(path)!r} grew beyond {limit} bytes while it was "
                            f"read (corrupt or replaced)")
            h.update(block)
            chunks.append(block)
    except OSError as e:
        raise error(f"{what} {str(path)!r} cannot be read: {e.strerror}") from None
    finally:
        os.close(fd)
    if sha256 is not None and h.hexdigest() != sha256:
        raise error(f"{what} {str(path)!r} is corrupt or truncated: it does not match its "
                    f"recorded SHA-256")
    return b"".join(chunks)


def read_json(path: str | Path, *, what: str, root: Path | None = None,
              max_bytes: int = MAX_JSON_BYTES, error=CheckpointError):
    """Parse a JSON file read with :func:`read_bytes`; NaN, infinities and numbers that
    overflow a float are refused, as is nesting deeper than a few hundred levels."""
    raw = read_bytes(path, max_bytes=max_bytes, what=what, root=root, error=error)
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constant,
                          parse_float=_finite_float)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError too
        detail = "nested too deeply" if isinstance(e, RecursionError) else str(e)[:200]
        raise error(f"{what} {str(path)!r} is not valid JSON ({detail}); it is corrupt, or "
                    f"was not written by ppl-dgm") from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number ppl-dgm writes")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} overflows a float")
    return value


def read_metrics(path: str | Path, *, root: Path | None = None) -> list[dict]:
    """The rows of a ``metrics.jsonl``.  A torn last line (a run killed while appending
    it) is dropped; a corrupt line before it is an error naming the file and line."""
    path = Path(path)
    raw = read_bytes(path, max_bytes=MAX_METRICS_BYTES, what="metrics file", root=root)
    lines = raw.split(b"\n")
    rows = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))  # NaN metrics are written as NaN
            if not isinstance(row, dict) or not isinstance(row.get("step", 0), int):
                raise ValueError("a row must be an object with an integer step")
        except (ValueError, RecursionError) as e:
            if i == len(lines) - 1:  # no newline after it: torn by a kill
                break
            raise CheckpointError(f"metrics file {str(path)!r}, line {i + 1}, is corrupt "
                                  f"({str(e)[:120]}); delete the line or the file") from None
        rows.append(row)
    return rows


def check_int(value, name: str, *, low: int, high: int, error=CheckpointError) -> int:
    """``value`` as an int in ``[low, high]`` (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise error(f"{name} is {_show(value)}; expected an integer from {low} to {high}")
    return value


def check_number(value, name: str, *, low: float = -math.inf, high: float = math.inf,
                 positive: bool = False, error=CheckpointError) -> float:
    """``value`` as a finite float in ``[low, high]`` (``> 0`` with ``positive``)."""
    ok = (not isinstance(value, bool) and isinstance(value, (int, float))
          and math.isfinite(value) and low <= value <= high and (value > 0 or not positive))
    if not ok:
        want = "a finite number > 0" if positive else f"a finite number in [{low}, {high}]"
        raise error(f"{name} is {_show(value)}; expected {want}")
    return float(value)


def _show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def append_metrics(path: str | Path, row: dict) -> None:
    """Append one JSON line to ``metrics.jsonl``; an OS error (disk full, read-only) names
    the file."""
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same directory that is
    fsynced and renamed into place; on any error the temporary file is removed and the
    old file, if any, is left as it was."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{path.name}-", dir=path.parent)
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be
    opened, e.g. on Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def clean_stale(folder: str | Path, prefix: str = ".tmp-", keep: Path | None = None
                ) -> list[Path]:
    """Remove the temporary files and directories that killed writes left in ``folder``
    (those named ``prefix*``, except ``keep``); returns what was removed."""
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        if not entry.name.startswith(prefix) or entry == keep:
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            try:
                entry.unlink()
            except OSError:
                continue
        removed.append(entry)
    return removed
