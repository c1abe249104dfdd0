"""The Helmholtz machine example: a smoke run by default, the quality bar as slow tests."""

import math

import pytest
from examples_loader import load_example

from ppl_dgm.cli import main as cli_main


def test_helmholtz_example_smoke():
    res = load_example("helmholtz_machine").main(
        ["--steps", "10", "--trace-every", "5", "--pyro"])
    assert set(res) == {"ws", "rws-k5-wake", "pyro-rws-k5"}
    for r in res.values():
        assert math.isfinite(r["test_nll"]) and len(r["trace"]) == 2
        assert 1.0 <= r["ess_batch"] <= r["ess_per_point"] + 1e-6 <= 5.0 + 1e-6


@pytest.mark.parametrize("estimator", ["ws", "rws"])
def test_cli_trains_sbn(tmp_path, capsys, estimator):
    rc = cli_main(["train", "--model", "sbn", "--model-opt", "layers=12",
                   "--estimator", estimator, "--steps", "20", "--run-dir", str(tmp_path / "r"),
                   "--no-progress", "--eval-every", "0", "--eval-samples", "20"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    assert "test log-likelihood (exact)" in out.out


@pytest.mark.slow
def test_helmholtz_quality_on_digits():
    """12-latent SBN, 3000 steps of 100, Adam 3e-3, exact test NLL: RWS (K=5) <= 20.0
    nats; wake-sleep trains stably (no read-out more than 0.5 nats above the best
    before it) and ends within 1 nat of RWS; Pyro's batch-normalised RWS is worse."""
    res = load_example("helmholtz_machine").main(["--pyro"])
    rws, ws, pyro_rws = res["rws-k5-wake"], res["ws"], res["pyro-rws-k5"]
    assert rws["test_nll"] <= 20.0
    nll = [v for _, v in ws["trace"]]
    assert all(v <= min(nll[:i]) + 0.5 for i, v in enumerate(nll) if i)
    assert ws["test_nll"] <= rws["test_nll"] + 1.0
    assert pyro_rws["test_nll"] > rws["test_nll"]
