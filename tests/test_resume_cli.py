"""``ppl-dgm train --resume``: the saved configuration is the truth; a changed option is
refused by name unless ``--override`` names it, and then the optimiser really uses it;
nothing is written before every check passed; a failed start leaves nothing."""

from __future__ import annotations

import json

import pytest
import torch
from cli_harness import TINY, assert_clear_refusal, run_cli, train_tiny

from ppl_dgm.checkpoints import find_checkpoint

# options that a resume must restore: an estimator option, particles, a group lr
SAVED = ["--estimator", "iwae", "--estimator-opt", "dreg=True", "--particles", "2",
         "--lr-guide", "3e-4", "--lr", "2e-3"]


@pytest.fixture()
def trained(tmp_path):
    run = tmp_path / "r"
    train_tiny(run, *SAVED)
    return run


def _weights(run):
    return find_checkpoint(run).weights


def test_resume_restores_every_saved_option_and_is_exact(tmp_path, trained):
    config = (trained / "config.json").read_bytes()
    ref = tmp_path / "ref"
    train_tiny(ref, *SAVED, "--steps", "40")
    # resumed without repeating any option: the saved ones apply
    assert run_cli("train", "--run-dir", trained, "--resume", "--steps", "40",
                   "--no-progress").code == 0
    saved = json.loads(config)
    now = json.loads((trained / "config.json").read_text())
    assert now["estimator_options"] == {"dreg": True, "num_particles": 2}
    assert now["lr_groups"] == {"guide": 3e-4} and now["lr"] == 2e-3
    assert {k: v for k, v in now.items() if k != "steps"} == \
        {k: v for k, v in saved.items() if k != "steps"}
    a, b = _weights(ref), _weights(trained)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    groups = {g["name"]: g["lr"] for g in find_checkpoint(trained).optimizer["param_groups"]}
    assert groups == {"model": 2e-3, "guide": 3e-4, "estimator": 2e-3} or \
        groups == {"model": 2e-3, "guide": 3e-4}


@pytest.mark.parametrize("argv, named", [
    (["--lr", "1e-4"], "--lr 0.0001 differs from the saved 0.002 (pass --override lr"),
    (["--lr-guide", "1e-4"], "--lr-guide 0.0001 differs from the saved 0.0003 (pass "
                             "--override lr-guide"),
    (["--seed", "3"], "--seed 3 differs from the saved 0"),
    (["--batch-size", "25"], "--batch-size 25 differs from the saved 20"),
    (["--model-opt", "z_dim=3"], "--model-opt z_dim=3 differs from the saved 2"),
    (["--particles", "3"], "--particles 3 differs from the saved 2"),
    (["--estimator", "elbo"], "--estimator elbo differs from the saved iwae"),
    (["--optim", "sgd"], "--optim sgd differs from the saved adam"),
    (["--data", "text"], "--data text differs from the saved digits"),
])
def test_a_changed_option_is_refused_by_name_and_nothing_written(trained, argv, named):
    before = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    result = run_cli("train", "--run-dir", trained, "--resume", "--steps", "40", *argv)
    assert_clear_refusal(result, named)
    after = {p: p.read_bytes() for p in trained.rglob("*") if p.is_file()}
    assert after == before
    assert run_cli("evaluate", trained, "--samples", "3", "--ks", "1").code == 0


def test_override_really_changes_the_optimiser(tmp_path, trained):
    start = _weights(trained)  # step 20, where both continue from
    plain = tmp_path / "plain"
    train_tiny(plain, *SAVED)
    assert run_cli("train", "--run-dir", plain, "--resume", "--steps", "40").code == 0
    result = run_cli("train", "--run-dir", trained, "--resume", "--steps", "40", "--lr", "1e-4",
                     "--lr-guide", "5e-5", "--override", "lr", "--override", "lr-guide")
    assert result.code == 0, result.err
    ckpt = find_checkpoint(trained)
    assert ckpt.step == 40
    groups = {g["name"]: g["lr"] for g in ckpt.optimizer["param_groups"]}
    assert groups["model"] == 1e-4 and groups["guide"] == 5e-5
    config = json.loads((trained / "config.json").read_text())
    assert config["lr"] == 1e-4 and config["lr_groups"] == {"guide": 5e-5}
    assert [(o["option"], o["step"], o["from"], o["to"]) for o in config["overrides"]] == [
        ("lr", 20, 2e-3, 1e-4), ("lr-guide", 20, 3e-4, 5e-5)]
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["lr"]) for r in rows] == [(10, 2e-3), (20, 2e-3), (30, 1e-4),
                                                   (40, 1e-4)]
    # the smaller rates moved the parameters much less than the saved ones did
    a, b = _weights(plain), ckpt.weights
    moved = sum(float((a[k] - start[k]).abs().sum()) for k in a)
    moved_less = sum(float((b[k] - start[k]).abs().sum()) for k in a)
    assert 0 < moved_less < 0.2 * moved, (moved_less, moved)
    # resumed again without options: the overridden rates are now the saved ones
    assert run_cli("train", "--run-dir", trained, "--resume", "--steps", "50").code == 0
    assert {g["name"]: g["lr"] for g in find_checkpoint(trained).optimizer["param_groups"]
            }["model"] == 1e-4


def test_from_step_and_fallback_are_said_aloud(trained):
    (trained / "checkpoints" / "step-00000020" / "optimizer.safetensors").write_bytes(b"x")
    result = run_cli("train", "--run-dir", trained, "--resume", "--steps", "30")
    assert result.code == 0, result.err
    assert "note: skipped the newer checkpoint step-00000020" in result.err
    assert "resuming" in result.out and "step-00000010" in result.out
    result = run_cli("train", "--run-dir", trained, "--resume", "--from-step", "7")
    assert_clear_refusal(result, "no checkpoint at step 7; it has steps [20, 30]")
    result = run_cli("train", "--run-dir", trained, "--resume", "--from-step", "20",
                     "--steps", "30")
    assert result.code == 0 and "from step-00000020" in result.out, result.err


@pytest.mark.parametrize("argv, named", [
    (["--model-opt", "zdim=2"], "unknown model option 'zdim' for vae; valid options: x_dim, "
                                "z_dim"),
    (["--guide-opt", "nope=1"], "unknown guide option 'nope' for gaussian"),
    (["--batch-size", "5000"], "--batch-size 5000 must be at most"),
    (["--checkpoint-every", "15"], "--checkpoint-every 15 is not a multiple of --log-every 10"),
    (["--from-step", "10"], "--from-step chooses the checkpoint to resume from; add --resume"),
    (["--estimator", "gan"], "gan"),
])
def test_a_failed_start_leaves_nothing(tmp_path, argv, named):
    run = tmp_path / "new"
    result = run_cli("train", "--run-dir", run, *TINY, *argv)
    assert_clear_refusal(result, named)
    assert not run.exists()
    train_tiny(run)  # and the next try is not blocked


def test_overwrite_replaces_only_a_run_directory(tmp_path, trained):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert_clear_refusal(run_cli("train", "--run-dir", mine, "--overwrite", *TINY),
                         "it is not one, so it is not deleted")
    assert (mine / "thesis.tex").exists()
    # an overwrite that fails its checks leaves the old run as it was
    assert_clear_refusal(run_cli("train", "--run-dir", trained, "--overwrite", *TINY,
                                 "--estimator", "gan"), "gan")
    assert find_checkpoint(trained).step == 20
