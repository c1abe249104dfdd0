"""Checkpoints from an untrusted source: every field bounded, no file outside the
checkpoint read, nothing applied before everything has been checked; stale temporary
directories cleaned; fallback to the previous intact checkpoint, said aloud."""

from __future__ import annotations

import json
import os
import time

import pytest
import torch

from ppl_dgm.checkpoints import (
    apply_checkpoint,
    find_checkpoint,
    latest_checkpoint,
    load_checkpoint,
    resume_checkpoint,
    save_checkpoint,
)
from ppl_dgm.errors import CheckpointError
from ppl_dgm.runfiles import read_metrics


def _setup(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    opt = torch.optim.Adam([{"params": net.parameters(), "name": "model"}], lr=1e-3)
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    return net, opt


@pytest.fixture()
def run(tmp_path):
    net, opt = _setup()
    for step in (10, 20):
        save_checkpoint(tmp_path, step, modules={"model": net}, optimizer=opt)
    return tmp_path


def _meta(run, step=20):
    return run / "checkpoints" / f"step-{step:08d}" / "meta.json"


def _edit_meta(run, edit, step=20):
    path = _meta(run, step)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _untouched(net, opt, ckpt):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt_before = json.dumps(opt.state_dict()["param_groups"])
    with pytest.raises(CheckpointError):
        apply_checkpoint(ckpt, {"model": net}, opt, restore_rng=True)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert json.dumps(opt.state_dict()["param_groups"]) == opt_before


@pytest.mark.parametrize("name, edit, message", [
    ("huge step", lambda d: d.update(step=10**15), "step"),
    ("negative step", lambda d: d.update(step=-1), "step"),
    ("float step", lambda d: d.update(step=20.0), "step"),
    ("step of another dir", lambda d: d.update(step=10), "directory is step-00000020"),
    ("sha256 list", lambda d: d.update(sha256=["a"]), "sha256"),
    ("sha256 of a foreign file", lambda d: d["sha256"].update({"../../etc/passwd": "0" * 64}),
     "sha256"),
    ("sizes huge", lambda d: d["sizes"].update({"weights.safetensors": 2**70}), "sizes"),
    ("optimizer path traversal",
     lambda d: d["optimizer"]["state"]["0"]["exp_avg"].update(tensor="../../etc/passwd"),
     "../../etc/passwd"),
    ("optimizer lr inf", lambda d: d["optimizer"]["param_groups"][0].update(lr=-1.0), "lr"),
    ("optimizer betas", lambda d: d["optimizer"]["param_groups"][0].update(betas=[2, 0]),
     "beta"),
    ("optimizer unknown pid", lambda d: d["optimizer"]["state"].update({"99": {}}), "99"),
    ("meta not a dict", lambda d: d.update(meta=[1]), "meta"),
])
def test_malformed_meta_fields_are_refused_by_name(run, name, edit, message):
    _edit_meta(run, edit)
    with pytest.raises(CheckpointError, match="meta.json|optimiser state") as e:
        load_checkpoint(run / "checkpoints" / "step-00000020")
    assert message in str(e.value), str(e.value)


@pytest.mark.parametrize("text", ['{"step": 1e400}', "[" * 100_000, '{"step": NaN}',
                                  "\xff\xfe", '{"step": 1' + "0" * 5000 + "}"])
def test_unparseable_meta_is_refused(run, text):
    _meta(run).write_bytes(text.encode("utf-8", "surrogateescape")
                           if isinstance(text, str) else text)
    with pytest.raises(CheckpointError, match="meta.json"):
        load_checkpoint(run / "checkpoints" / "step-00000020")


def test_symlinks_devices_fifos_and_big_files_are_refused_at_once(run, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    step = run / "checkpoints" / "step-00000020"
    weights = step / "weights.safetensors"
    good = weights.read_bytes()
    (outside / "w").write_bytes(good)
    cases = {"a symlink to an identical file outside": lambda: os.symlink(outside / "w", weights),
             "/dev/zero": lambda: os.symlink("/dev/zero", weights),
             "a FIFO": lambda: os.mkfifo(weights),
             "a bigger file": lambda: weights.write_bytes(good + b"\0" * 10),
             "a directory": lambda: weights.mkdir()}
    for what, make in cases.items():
        weights.unlink() if not weights.is_dir() else weights.rmdir()
        make()
        t0 = time.perf_counter()
        with pytest.raises(CheckpointError, match="weights.safetensors") as e:
            load_checkpoint(step)
        assert time.perf_counter() - t0 < 5, what
        assert "symlink" in str(e.value) or "regular file" in str(e.value) or \
            "corrupt or truncated" in str(e.value), (what, str(e.value))
    # a symlinked checkpoint directory or checkpoints folder is refused too
    weights.rmdir()
    weights.write_bytes(good)
    os.rename(step, outside / "step")
    os.symlink(outside / "step", step)
    with pytest.raises(CheckpointError, match="symlink|not a directory"):
        find_checkpoint(run, 20)


def test_bad_rng_and_optimizer_state_leave_modules_untouched(run):
    net, opt = _setup(seed=1)
    from safetensors.torch import load_file, save_file

    step = run / "checkpoints" / "step-00000020"
    rng = load_file(step / "rng.safetensors")
    save_file({"torch": rng["torch"][:100]}, step / "rng.safetensors")  # a short RNG state
    _edit_meta(run, lambda d: d["sha256"].update(
        {"rng.safetensors": __import__("hashlib").sha256(
            (step / "rng.safetensors").read_bytes()).hexdigest()}) or d["sizes"].update(
        {"rng.safetensors": (step / "rng.safetensors").stat().st_size}))
    _untouched(net, opt, load_checkpoint(step))
    # an optimiser state of the wrong shape, for a live model of the same weights
    other = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    other_opt = torch.optim.Adam([{"params": list(other.parameters())[:2], "name": "a"},
                                  {"params": list(other.parameters())[2:], "name": "b"}])
    _untouched(other, other_opt, load_checkpoint(run / "checkpoints" / "step-00000010"))


def test_fallback_to_the_previous_intact_checkpoint_is_said(run):
    (run / "checkpoints" / "step-00000020" / "weights.safetensors").write_bytes(b"junk")
    ckpt = find_checkpoint(run)
    assert ckpt.step == 10 and len(ckpt.skipped) == 1
    assert "step-00000020" in ckpt.skipped[0] and "corrupt" in ckpt.skipped[0]
    with pytest.warns(UserWarning, match="resuming from step-00000010; skipped step-00000020"):
        assert resume_checkpoint(run, True).step == 10
    assert find_checkpoint(run, step=10).step == 10
    with pytest.raises(CheckpointError, match="has no checkpoint at step 15; it has steps"):
        find_checkpoint(run, step=15)


def test_stale_tmp_directories_are_removed_by_the_next_save(run):
    net, opt = _setup()
    for i in range(3):  # what killed saves leave behind
        (run / "checkpoints" / f".tmp-killed{i}").mkdir()
        (run / "checkpoints" / f".tmp-killed{i}" / "weights.safetensors").write_bytes(b"x")
    save_checkpoint(run, 30, modules={"model": net}, optimizer=opt)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000020", "step-00000030"]
    assert latest_checkpoint(run).name == "step-00000030"


def test_failed_save_keeps_the_previous_checkpoint(run, monkeypatch):
    import errno

    import ppl_dgm.checkpoints as ck

    net, opt = _setup()

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ck, "save_file", full)
    with pytest.raises(CheckpointError, match="No space left on device; the previous "
                                              "checkpoint step-00000020 is intact"):
        save_checkpoint(run, 30, modules={"model": net}, optimizer=opt)
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step-00000010", "step-00000020"]  # no partial .tmp-* left
    assert load_checkpoint(run).step == 20


def test_metrics_torn_last_line_is_dropped_and_a_corrupt_line_named(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 10, "loss": 1.0}\n{"step": 20, "loss": NaN}\n{"step": 3')
    assert [r["step"] for r in read_metrics(path)] == [10, 20]
    path.write_text('{"step": 10}\n{"step": \n{"step": 30}\n')
    with pytest.raises(CheckpointError, match="metrics.jsonl', line 2, is corrupt"):
        read_metrics(path)
