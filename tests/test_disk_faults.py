"""Disk full and a read-only run directory: a clear two-line message, exit 2, and the
previous checkpoint intact (it loads, and the run resumes from it once there is room).

Where the test may mount a filesystem (root in a container with CAP_SYS_ADMIN) it uses a
small real tmpfs, filled up or remounted read-only; elsewhere it simulates ENOSPC and EROFS
at the writes."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cli_harness import assert_clear_refusal, run_cli, train_tiny

from ppl_dgm.checkpoints import find_checkpoint


def _mount(path: Path, *opts: str) -> bool:
    if not shutil.which("mount") or os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(opts), "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.fixture(params=["tmpfs", "simulated"])
def disk(tmp_path, request):
    """A folder on a 4 MiB tmpfs (where one can be mounted), or a plain folder where the
    checkpoint writes fail (simulated)."""
    where = tmp_path / "disk"
    real = request.param == "tmpfs" and _mount(where, "size=4m")
    if request.param == "tmpfs" and not real:
        pytest.skip("cannot mount a tmpfs here; the simulated variant runs instead")
    yield where, real
    if real:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill(where: Path) -> Path:
    filler = where / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (65536, 1):  # up to the last byte
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as e:
                    assert e.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)
    return filler


def _simulate(monkeypatch, err: int):
    import ppl_dgm.checkpoints as ck

    def fail(*args, **kwargs):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(ck, "save_file", fail)


def test_disk_full_is_a_clear_message_and_the_checkpoint_survives(disk, monkeypatch):
    where, real = disk
    run = where / "run"
    train_tiny(run, "--steps", "10")
    filler = _fill(where) if real else _simulate(monkeypatch, errno.ENOSPC)
    result = run_cli("train", "--run-dir", run, "--resume", "--steps", "20")
    assert_clear_refusal(result, "No space left on device")
    assert str(run) in result.err, result.err  # names the file that could not be written
    assert find_checkpoint(run).step == 10  # intact and loadable
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".tmp-")]
    assert run_cli("evaluate", run, "--samples", "2", "--ks", "1").code == 0
    if real:
        filler.unlink()
    else:
        monkeypatch.undo()
    result = run_cli("train", "--run-dir", run, "--resume", "--steps", "20")
    assert result.code == 0, result.err
    assert find_checkpoint(run).step == 20


def test_read_only_run_directory(disk, monkeypatch):
    where, real = disk
    run = where / "run"
    train_tiny(run, "--steps", "10")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    if real:
        assert subprocess.run(["mount", "-o", "remount,ro", str(where)]).returncode == 0
    else:
        _simulate(monkeypatch, errno.EROFS)
    result = run_cli("train", "--run-dir", run, "--resume", "--steps", "20")
    assert_clear_refusal(result, "Read-only file system", "read-only")
    assert find_checkpoint(run).step == 10
    if real:  # the simulation fails only the checkpoint writes
        assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    # reading a read-only run works
    assert run_cli("evaluate", run, "--samples", "2", "--ks", "1").code == 0
