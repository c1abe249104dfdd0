"""The command line under torchrun (two CPU processes, Gloo): ``ppl-dgm compare`` shares
its runs between the ranks and rank 0 writes the table of one process; ``ppl-dgm train``
trains data-parallel and rank 0 writes the run directory.  Slow: two launches."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

from ppl_dgm.compare import TIMING_COLUMNS, compare

SCRIPT = Path(sys.executable).parent / "ppl-dgm"
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()),
                                 reason="torch.distributed with the gloo backend is missing"),
              pytest.mark.skipif(not SCRIPT.exists(), reason="the ppl-dgm script is missing")]
QUICK = ["--steps", "20", "--eval-every", "10", "--curve-particles", "4", "--iwae-k", "4",
         "--eval-samples", "16", "--grad-draws", "3", "--batch-size", "20", "--device", "cpu"]


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "--max-restarts=0", str(SCRIPT), *args],
                          env={**env, "OMP_NUM_THREADS": "1"}, capture_output=True,
                          text=True, timeout=900)


def test_compare_under_torchrun_gives_the_table_of_one_process(tmp_path):
    est = "elbo,iwae:num_particles=3"
    out = tmp_path / "cmp"
    done = _torchrun("compare", "--model", "vae", "--model-opt", "z_dim=2", "--model-opt",
                     "hidden=8", "--estimators", est, "--data", "digits", "--seeds", "2",
                     "--no-plots", "--no-progress", "--out", str(out), *QUICK)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("| elbo") == 1      # rank 0 alone prints the table
    with open(out / "runs.csv") as f:
        rows = list(csv.DictReader(f))
    from ppl_dgm.data import load_digits

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = compare("vae", None, est, load_digits(), model_options={"z_dim": 2,
                      "hidden": (8,)}, seeds=2, steps=20, eval_every=10, curve_particles=4,
                      iwae_k=4, eval_samples=16, grad_draws=3, batch_size=20, device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert [(r["estimator"], int(r["seed"])) for r in rows] == \
        [(r["estimator"], r["seed"]) for r in one.runs]
    for got, want in zip(rows, one.runs):
        for k in ("elbo", "iwae", "is_logpx", "heldout", "grad_var_guide"):
            assert k not in TIMING_COLUMNS and float(got[k]) == pytest.approx(want[k],
                                                                             rel=1e-12), k


def test_train_under_torchrun_writes_one_run_directory(tmp_path):
    run = tmp_path / "run"
    done = _torchrun("train", "--model", "vae", "--model-opt", "z_dim=2", "--estimator",
                     "elbo", "--data", "digits", "--steps", "40", "--batch-size", "20",
                     "--log-every", "10", "--eval-every", "20", "--checkpoint-every", "20",
                     "--eval-samples", "10", "--device", "cpu", "--run-dir", str(run),
                     "--no-progress")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("test log-likelihood") == 1
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert "heldout_bound_k1" in rows[1]
    meta = json.loads((run / "checkpoints" / "step-00000040" / "meta.json").read_text())
    assert meta["meta"]["data_parallel"]["world_size"] == 2
    bad = _torchrun("train", "--model", "vae", "--estimator", "elbo", "--data", "digits",
                    "--steps", "2", "--batch-size", "21", "--device", "cpu", "--run-dir",
                    str(tmp_path / "bad"), "--no-progress")
    assert bad.returncode != 0 and "batch_size=21" in bad.stderr
