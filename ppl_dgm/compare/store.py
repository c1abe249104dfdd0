"""Comparison outputs that survive a crash: atomic directories and resumable runs.

* :func:`write_dir_atomically` writes an output directory into a temporary sibling,
  ends it with the completeness marker ``complete.json`` (the SHA-256 of every file)
  and renames it into place; an existing directory is exchanged atomically
  (``renameat2(RENAME_EXCHANGE)`` on Linux, else two renames), so ``--overwrite`` never
  loses the old result before the new one is whole.  :func:`check_complete` refuses a
  directory without the marker.
* :class:`PairStore` saves every finished (estimator, seed) run of a comparison, as it
  finishes, into ``.OUT.partial/`` next to the output directory, with the settings of
  the comparison; ``ppl-dgm compare --resume`` reopens it (refusing other settings by
  name), skips the finished runs and gives the same table.  The finished runs are kept
  in the output's ``pairs/``, so a completed comparison can be resumed too.

Example::

    store = PairStore.open("runs/cmp", settings, resume=True, overwrite=False)
    result = compare(..., store=store)
    result.save("runs/cmp", extra=store.outputs())
    store.finish()
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import CheckpointError, IncompleteResultError, ResumeError
from ..runfiles import clean_stale, fsync_dir, read_json, write_atomic

__all__ = ["MARKER", "PairStore", "check_complete", "write_dir_atomically"]

MARKER = "complete.json"
SETTINGS = "settings.json"
PAIRS = "pairs"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _exchange(a: Path, b: Path) -> bool:
    """Swap two directories in one atomic step where the system offers it."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def write_dir_atomically(out: str | Path, write: Callable[[Path], list[Path]]) -> list[Path]:
    """Run ``write(tmp)`` into a fresh temporary sibling of ``out``, add the marker and
    put it in place of ``out``; returns the written paths as they are under ``out``."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{out.name}.tmp-"
    clean_stale(out.parent, prefix=prefix)
    _recover(out)
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=out.parent))
    try:
        paths = write(tmp)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        for p in files:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
        marker = {"format": 1, "files": {str(p.relative_to(tmp)): _sha256(p) for p in files}}
        write_atomic(tmp / MARKER, json.dumps(marker, indent=1))
        if out.exists():
            if _exchange(tmp, out):
                shutil.rmtree(tmp, ignore_errors=True)  # now the old result
            else:
                aside = out.parent / f".{out.name}.old-{os.getpid()}"
                os.rename(out, aside)
                os.rename(tmp, out)
                shutil.rmtree(aside, ignore_errors=True)
        else:
            os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [out / p.relative_to(tmp) for p in paths]


def _recover(out: Path) -> None:
    """A crash between the two renames of the fallback leaves ``.OUT.old-*`` and no
    ``OUT``: put the old result back; otherwise remove such leftovers."""
    old = sorted(out.parent.glob(f".{out.name}.old-*"))
    if old and not out.exists():
        os.rename(old.pop(), out)
    for p in old:
        shutil.rmtree(p, ignore_errors=True)


def check_complete(out: str | Path) -> dict:
    """The marker of a complete output directory, or
    :class:`~ppl_dgm.errors.IncompleteResultError`."""
    out = Path(out)
    if not (out / MARKER).is_file():
        raise IncompleteResultError(f"{str(out)!r} holds no complete comparison ({MARKER} is "
                                    f"missing: it was interrupted while it was written, or "
                                    f"is not a compare output); rerun ppl-dgm compare with "
                                    f"--resume")
    try:
        marker = read_json(out / MARKER, what="completeness marker", root=out)
        if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
            raise CheckpointError("no file list")
    except CheckpointError as e:
        raise IncompleteResultError(f"{str(out)!r}: {MARKER} is corrupt ({e})") from None
    return marker


def _replaceable(out: Path, names) -> bool:
    return (out / MARKER).exists() or all(p.name in names for p in out.iterdir())


class _Saving(list):
    """The records of one seed; each appended record is saved as it finishes."""

    def __init__(self, store: PairStore, skip: dict):
        super().__init__()
        self.store, self.skip = store, skip

    def append(self, record) -> None:
        super().append(record)
        self.store.save(record, self.skip.get(record.row["estimator"]))


class PairStore:
    """The finished (estimator, seed) runs of one comparison, in ``folder``."""

    def __init__(self, folder: Path, settings: dict):
        self.folder, self.settings = Path(folder), settings
        (self.folder / PAIRS).mkdir(parents=True, exist_ok=True)

    @classmethod
    def open(cls, out: str | Path, settings: dict, *, resume: bool, overwrite: bool,
             output_files=()) -> PairStore:
        """The store for a comparison into ``out``: the interrupted one with the same
        settings (``resume``), or a new one; checks that ``out`` may be written."""
        out = Path(out)
        settings = json.loads(json.dumps(settings, sort_keys=True))
        partial = out.parent / f".{out.name}.partial"
        if out.exists() and not out.is_dir():
            raise FileExistsError(f"--out {str(out)!r} is a file; give a directory")
        names = {*output_files, MARKER, SETTINGS, PAIRS}
        if out.is_dir() and any(out.iterdir()):
            if not _replaceable(out, names):
                others = sorted(p.name for p in out.iterdir() if p.name not in names)[:3]
                raise FileExistsError(f"--out {str(out)!r} holds files that no comparison "
                                      f"wrote ({', '.join(others)}); it is not replaced: "
                                      f"choose another --out")
            if not (overwrite or resume):
                raise FileExistsError(f"output directory {str(out)!r} exists and is not "
                                      f"empty; pass --overwrite to replace it, --resume to "
                                      f"continue it, or choose another --out")
        if partial.is_dir():
            if resume:
                cls._check_settings(partial, settings, out)
                return cls(partial, settings)
            if not overwrite:
                done = len(list((partial / PAIRS).glob("*.json")))
                raise FileExistsError(f"an interrupted comparison into {str(out)!r} is in "
                                      f"{str(partial)!r} ({done} runs finished); pass --resume "
                                      f"to continue it, or --overwrite to start again")
            shutil.rmtree(partial)
        # built in a temporary sibling and renamed, so a kill never leaves a store
        # without its settings
        out.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(out.parent, prefix=f".tmp-{out.name}.partial-")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}.partial-", dir=out.parent))
        try:
            if resume and (out / MARKER).exists() and (out / PAIRS).is_dir():
                try:
                    cls._check_settings(out, settings, out)
                except ResumeError:
                    if not overwrite:
                        raise
                else:
                    shutil.copytree(out / PAIRS, tmp / PAIRS)
            write_atomic(tmp / SETTINGS, json.dumps(settings, indent=1, sort_keys=True))
            os.rename(tmp, partial)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(out.parent)
        return cls(partial, settings)

    @staticmethod
    def _check_settings(folder: Path, settings: dict, out: Path) -> None:
        saved = read_json(folder / SETTINGS, what="comparison settings", root=folder)
        if not isinstance(saved, dict):
            raise CheckpointError(f"{str(folder / SETTINGS)!r} is corrupt")
        diff = [k for k in sorted(set(saved) | set(settings)) if saved.get(k) != settings.get(k)]
        if diff:
            shown = "; ".join(f"--{k.replace('_', '-')} {settings.get(k)!r} differs from the "
                              f"saved {saved.get(k)!r}" for k in diff[:4])
            raise ResumeError(f"cannot resume the comparison into {str(out)!r}: {shown}; "
                              f"rerun with its settings, or pass --overwrite without --resume "
                              f"to start again")

    def _path(self, label: str, seed: int) -> Path:
        key = hashlib.sha256(label.encode()).hexdigest()[:16]
        return self.folder / PAIRS / f"{key}-s{seed}.json"

    def save(self, record, skip: str | None) -> None:
        """Save one finished run (atomically)."""
        row = record.row
        doc = {"estimator": row["estimator"], "seed": row["seed"], "row": row,
               "curves": record.curves, "gradients": record.gradients, "skip": skip}
        write_atomic(self._path(row["estimator"], row["seed"]), json.dumps(doc))

    def restore(self, records: list, label: str, seed: int, skip: dict) -> bool:
        """Append the saved run of (``label``, ``seed``) to ``records`` and restore its
        effect on ``skip``; False when it has not finished."""
        from .run import _RunRecord

        path = self._path(label, seed)
        if not path.exists():
            return False
        doc = read_json(path, what="finished comparison run", root=self.folder)
        if not (isinstance(doc, dict) and doc.get("estimator") == label
                and doc.get("seed") == seed and isinstance(doc.get("row"), dict)
                and isinstance(doc.get("curves"), list)
                and isinstance(doc.get("gradients"), list)):
            raise CheckpointError(f"{str(path)!r} is not the saved run of {label} seed {seed}; "
                                  f"delete it to run that pair again")
        list.append(records, _RunRecord(doc["row"], doc["curves"], doc["gradients"]))
        skip[label] = doc.get("skip")
        return True

    def collector(self, skip: dict) -> list:
        """A list for one seed's records that saves each record appended to it."""
        return _Saving(self, skip)

    def outputs(self) -> dict[str, Path]:
        """What the final output directory keeps of the store (settings, finished runs)."""
        return {SETTINGS: self.folder / SETTINGS, PAIRS: self.folder / PAIRS}

    def finish(self) -> None:
        """Remove the store once the output directory is complete."""
        shutil.rmtree(self.folder, ignore_errors=True)
