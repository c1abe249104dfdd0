"""Data-parallel training under torchrun (two CPU processes, Gloo): the parameters equal
a single-process run on the same global batch, NVIL's running moments agree on both
ranks (one launch, in the fast suite), and a run killed on one rank resumes to the
uninterrupted result (two more launches: slow).

The single-process reference computes each global batch's loss shard by shard, drawing
shard ``r``'s random numbers from rank ``r``'s stream (the only way one process can
draw the random numbers the ranks drew); the loss of the global batch is the sum of the
shards' losses, and NVIL's running moments fold in the whole global batch's signals.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pyro
import pytest
import torch
import torch.distributed as dist

from ppl_dgm.checks import check_setup
from ppl_dgm.distributed import DataParallel, ShardScale, rank_seed
from ppl_dgm.estimators._score import RunningMoments
from ppl_dgm.programs import trainables
from ppl_dgm.train import _epoch_order, fit, make_optimizer

sys.path.insert(0, str(Path(__file__).parent))
import dp_programs as dpp  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 600   # a loaded 2-core machine: generous

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                reason="torch.distributed with the gloo backend is missing")


def _torchrun(out: Path, *scenarios: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "--max-restarts=0",
                           str(ROOT / "tests" / "dp_programs.py"), str(out), *scenarios],
                          env=env, capture_output=True, text=True, timeout=TIMEOUT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One launch: the VAE (ELBO), an uninterrupted NVIL run with checkpoints, and the
    refusal of a batch size the world size does not divide."""
    out = tmp_path_factory.mktemp("dp")
    done = _torchrun(out, "vae", "sbn", "badbatch")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def resumed(runs):
    """Two more launches (slow): an NVIL run killed on rank 1 at step 30, then its resume."""
    first = _torchrun(runs, "sbn-killed")
    assert first.returncode != 0, "rank 1 was to die at step 30"
    assert not (runs / "sbn-killed-rank0.pt").exists()
    ckpts = runs / "run-resumed" / "checkpoints"
    assert max(int(p.name.split("-")[1]) for p in ckpts.iterdir()) < dpp.STEPS
    second = _torchrun(runs, "sbn-resume")
    assert second.returncode == 0, second.stderr[-3000:]
    return runs


def _load(out: Path, scenario: str) -> list[dict]:
    return [torch.load(out / f"{scenario}-rank{r}.pt") for r in range(2)]


def reference(name: str, world: int = 2) -> dict:
    """One process, global batch ``dpp.BATCH``: shard ``r`` of every batch with rank
    ``r``'s random numbers; the loss is the global batch's (the shards' sum)."""
    model, guide, est = dpp.build(name)
    x = dpp.data()
    b, n = dpp.BATCH // world, x.shape[0]
    check_setup(model, guide, est, x[:b])
    modules = {**trainables(model, guide, (x[:b],)), "estimator": est}
    opt = make_optimizer(modules, lr=dpp.LR, device=torch.device("cpu"))
    streams = []
    for r in range(world):
        torch.manual_seed(rank_seed(dpp.SEED, r))
        streams.append(torch.get_rng_state())
    pending: dict[int, tuple] = {}
    update = RunningMoments.update_

    def record(self, values):  # NVIL reads the moments of before the step: fold in later
        pending.setdefault(id(self), (self, []))[1].append(values.detach().reshape(-1))

    RunningMoments.update_ = record
    try:
        with pyro.validation_enabled(False):
            for step in range(dpp.STEPS):
                order = _epoch_order(n, dpp.SEED, step // (n // dpp.BATCH))
                i = step % (n // dpp.BATCH)
                xb = x[order[i * dpp.BATCH:(i + 1) * dpp.BATCH]]
                opt.zero_grad(set_to_none=True)
                for r in range(world):
                    torch.set_rng_state(streams[r])
                    est.surrogate(model, guide, xb[r * b:(r + 1) * b]).total.backward()
                    streams[r] = torch.get_rng_state()
                for m, values in pending.values():
                    update(m, torch.cat(values))
                pending.clear()
                opt.step()
    finally:
        RunningMoments.update_ = update
    return dpp.state(model, guide, est)


def _assert_close(a: dict, b: dict, atol: float, rtol: float = 1e-5) -> None:
    assert set(a) == set(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=rtol, msg=lambda m, k=k: f"{k}: {m}")


def test_vae_elbo_equals_one_process_on_the_global_batch(runs):
    ranks = _load(runs, "vae")
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    # same float operations up to the order of two gradient additions
    _assert_close(ranks[0], reference("vae"), atol=1e-5)


def test_sbn_nvil_equals_one_process_and_moments_agree(runs):
    ranks = _load(runs, "sbn")
    moments = [k for k in ranks[0] if ".moments." in k]
    assert len(moments) == 6, moments    # mean, var and count of both layers
    for k in ranks[0]:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
    assert int(ranks[0][moments[0].rsplit(".", 1)[0] + ".count"]) == dpp.STEPS
    # The baseline networks' regression loss is a sum over the local points that the
    # data plate's scale does not reach: the ranks' average gradient is 1/2 of the
    # global batch's, which Adam's scale invariance undoes up to its eps (1e-8).
    _assert_close(ranks[0], reference("sbn"), atol=2e-5)


@pytest.mark.slow
def test_killed_run_resumes_every_rank_to_the_uninterrupted_result(resumed):
    runs = resumed
    resumed, uninterrupted = _load(runs, "sbn-resume"), _load(runs, "sbn")
    for r in range(2):
        for k in uninterrupted[r]:
            assert torch.equal(resumed[r][k], uninterrupted[r][k]), (r, k)
    steps = [int(p.name.split("-")[1]) for p in (runs / "run-resumed" / "checkpoints").iterdir()]
    assert max(steps) == dpp.STEPS


def test_torchrun_refuses_a_batch_the_world_size_does_not_divide(runs):
    for r in range(2):
        text = (runs / f"badbatch-rank{r}.txt").read_text()
        assert "batch_size=21" in text and "WORLD_SIZE=2" in text and "batch_size=20" in text


# ------------------------------------------------------------------ one process
def test_shard_scale_scales_only_the_data_plate():
    def model():
        pyro.sample("g", pyro.distributions.Normal(0.0, 1.0))
        with pyro.plate("data", 3):
            pyro.sample("x", pyro.distributions.Normal(0.0, 1.0), obs=torch.zeros(3))

    with ShardScale("data", 2.0):
        tr = pyro.poutine.trace(model).get_trace()
    assert tr.nodes["g"]["scale"] == 1.0 and tr.nodes["x"]["scale"] == 2.0


def test_batch_not_divisible_by_the_world_size_is_refused_by_name():
    dp = DataParallel.__new__(DataParallel)
    dp.size = 2
    with pytest.raises(ValueError, match=r"batch_size=101 .*WORLD_SIZE=2.*batch_size=100"):
        dp.local_batch(101)
    assert dp.local_batch(100) == 50


def test_distributed_true_without_torchrun_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model, guide, est = dpp.build("vae")
    with pytest.raises(ValueError, match="torchrun"):
        fit(model, guide, est, dpp.data(), steps=1, batch_size=10, device="cpu",
            distributed=True)


def test_rank_seeds_differ_and_rank_zero_keeps_the_seed():
    assert rank_seed(5, 0) == 5
    assert len({rank_seed(5, r) for r in range(8)}) == 8
    assert rank_seed(5, 1) != rank_seed(6, 1)
