"""``compare(..., jobs=N)`` / ``ppl-dgm compare --jobs N``: the runs in worker processes
give the table of one process (timing and memory columns aside)."""

from __future__ import annotations

import pytest
import torch

from ppl_dgm.cli import main
from ppl_dgm.compare import TIMING_COLUMNS, compare
from ppl_dgm.compare.parallel import _propagate_check_failures, available_cores, plan_jobs
from ppl_dgm.compare.run import _RunRecord
from ppl_dgm.compare.spec import parse_estimators

TINY_VAE = {"z_dim": 2, "hidden": (8,)}
QUICK = dict(steps=20, eval_every=10, curve_particles=4, iwae_k=4, eval_samples=16,
             grad_draws=3, batch_size=20, device="cpu")


def _data():
    g = torch.Generator().manual_seed(0)
    return (torch.rand(120, 6, generator=g) < 0.3).float()


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


def test_jobs_2_gives_the_table_of_jobs_1():
    kw = dict(model_options=TINY_VAE, seeds=2, **QUICK)
    est = "elbo,iwae:num_particles=3"
    parallel = compare("vae", None, est, _data(), jobs=2, **kw)
    threads = torch.get_num_threads()
    one = compare("vae", None, est, _data(), **kw)
    assert torch.get_num_threads() == threads   # one thread during the runs only
    assert [r["status"] for r in parallel.runs] == ["ok"] * 4
    assert [(r["estimator"], r["seed"]) for r in parallel.runs] == \
        [(r["estimator"], r["seed"]) for r in one.runs]
    # bit for bit: jobs=1 runs on one thread, as every worker does
    assert _strip(parallel.runs) == _strip(one.runs)
    assert _strip(parallel.curves) == _strip(one.curves)
    assert parallel.gradients == one.gradients
    assert parallel.to_markdown(timing=False) == one.to_markdown(timing=False)
    assert parallel.config == one.config
    assert all(r["peak_mem_mb"] > 0 for r in parallel.runs)


def test_a_failed_check_reports_every_later_seed_as_in_one_process():
    specs = parse_estimators("elbo,iwae", particles=None)

    class Cfg:
        seeds = (0, 1, 2)

    def rec(label, seed, status="ok"):
        return _RunRecord({"estimator": label, "seed": seed, "status": status}, [], [])

    results = [(0, rec("elbo", 0), None), (1, rec("iwae", 0), None),
               (2, rec("elbo", 1), None), (3, rec("iwae", 1, "failed"), "check failed: boom"),
               (4, rec("elbo", 2), None), (5, rec("iwae", 2), None)]
    records = _propagate_check_failures(results[::-1], specs, Cfg)
    assert [(r.row["estimator"], r.row["seed"], r.row["status"]) for r in records] == [
        ("elbo", 0, "ok"), ("iwae", 0, "ok"), ("elbo", 1, "ok"), ("iwae", 1, "failed"),
        ("elbo", 2, "ok"), ("iwae", 2, "failed")]
    assert records[-1].row["reason"] == "check failed: boom"


def test_plan_jobs_clamps_and_refuses():
    assert plan_jobs(2, 10).workers == 2 and plan_jobs(2, 10).note is None
    plan = plan_jobs(8, 3)
    assert plan.workers == 3 and "jobs=8 is more than the 3 runs" in plan.note
    assert plan_jobs("auto", 1000).workers == available_cores()
    assert plan_jobs("3", 10).workers == 3
    for bad in (0, -1, "zero", True, 1.5):
        with pytest.raises(ValueError, match="jobs="):
            plan_jobs(bad, 4)


def test_cli_jobs_bad_and_clamped(tmp_path, capsys):
    common = ["compare", "--model", "vae", "--model-opt", "z_dim=2", "--model-opt",
              "hidden=8", "--estimators", "elbo", "--data", "digits", "--steps", "4",
              "--eval-every", "2", "--curve-particles", "2", "--iwae-k", "2",
              "--eval-samples", "4", "--grad-draws", "0", "--no-plots", "--no-progress",
              "--device", "cpu"]
    assert main([*common, "--jobs", "0", "--out", str(tmp_path / "a")]) == 2
    assert "jobs=0 must be a positive number" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()
    assert main([*common, "--jobs", "5", "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "note: jobs=5 is more than the 1 runs to do; using 1 worker process" in out
    assert (tmp_path / "b" / "runs.csv").exists()
