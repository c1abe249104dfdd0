"""RBM, DBN and DBM through the command line: train, evaluate (method on each line),
sample, list, compare with exact NLL and gradient variance, --init-from."""

from __future__ import annotations

import json

import pytest

from ppl_dgm.cli import main


def _run(capsys, *argv):
    rc = main(list(argv))
    out = capsys.readouterr()
    assert rc == 0, out.err
    return out.out


def test_list_shows_the_undirected_models_and_estimators(capsys):
    out = _run(capsys, "list")
    for name in ("rbm", "dbn", "dbm", "cd", "pcd", "mf-pcd", "greedy", "updown"):
        assert f"  {name} " in out, name
    assert "energy sites" in out


def test_rbm_train_evaluate_sample(tmp_path, capsys):
    run = str(tmp_path / "rbm")
    out = _run(capsys, "train", "--model", "rbm", "--model-opt", "hidden=8", "--estimator",
               "cd", "--steps", "30", "--lr", "1e-2", "--run-dir", run, "--no-progress",
               "--eval-every", "0", "--eval-samples", "5", "--device", "cpu")
    assert "test log-likelihood (exact)" in out and "(used above)" in out
    out = _run(capsys, "evaluate", run, "--samples", "5", "--ks", "1", "--device", "cpu")
    assert "log p(x) = -F(x) - log Z (log Z exact)" in out
    assert "log Z: " in out and "exact: enumeration of 2^8 states" in out
    out = _run(capsys, "evaluate", run, "--samples", "5", "--ks", "1", "--json")
    assert json.loads(out)["log_z_method"] == "exact"
    out = _run(capsys, "sample", run, "--n", "16")
    assert (tmp_path / "rbm" / "samples.png").is_file()


def test_rbm_refusals_on_the_command_line(tmp_path, capsys):
    rc = main(["train", "--model", "rbm", "--estimator", "elbo", "--steps", "1",
               "--run-dir", str(tmp_path / "r"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "'cd'" in err and "'pcd'" in err


def test_dbn_greedy_then_updown_with_init_from(tmp_path, capsys):
    common = ["--model", "dbn", "--model-opt", "layers=8,4", "--steps", "20",
              "--no-progress", "--eval-every", "0", "--eval-samples", "5", "--device", "cpu"]
    g0, g1, up = (str(tmp_path / n) for n in ("g0", "g1", "up"))
    _run(capsys, "train", *common, "--estimator", "greedy", "--estimator-opt", "layer=0",
         "--run-dir", g0)
    _run(capsys, "train", *common, "--estimator", "greedy", "--estimator-opt", "layer=1",
         "--run-dir", g1, "--init-from", g0)
    _run(capsys, "train", *common, "--estimator", "updown", "--run-dir", up, "--init-from", g1)
    out = _run(capsys, "evaluate", up, "--samples", "10", "--ks", "1,5")
    assert "ELBO (log Z exact)" in out and "log p(x), IS K=10 (log Z exact)" in out


def test_dbm_evaluate_names_ais(tmp_path, capsys):
    run = str(tmp_path / "dbm")
    _run(capsys, "train", "--model", "dbm", "--model-opt", "layers=24,4", "--model-opt",
         "ais_temperatures=200", "--model-opt", "ais_runs=10", "--estimator", "mf-pcd",
         "--steps", "10", "--run-dir", run, "--no-progress", "--eval-every", "0",
         "--eval-samples", "5", "--device", "cpu")
    with pytest.warns(UserWarning, match="AIS"):
        out = _run(capsys, "evaluate", run, "--samples", "5", "--ks", "1")
    assert "ELBO (log Z by AIS)" in out and "AIS, 200 temperatures x 10 runs" in out


def test_compare_cd_pcd_on_a_small_rbm(tmp_path, capsys):
    out = _run(capsys, "compare", "--model", "rbm", "--model-opt", "hidden=6", "--estimators",
               "cd,pcd:num_chains=50", "--steps", "40", "--lr", "1e-2", "--grad-draws", "5",
               "--eval-samples", "5", "--iwae-k", "2", "--curve-particles", "2",
               "--out", str(tmp_path / "cmp"), "--no-progress",
               "--device", "cpu")
    runs = json.loads((tmp_path / "cmp" / "results.json").read_text())["runs"]
    assert "cd" in out and "pcd" in out and len(runs) == 2
    assert (tmp_path / "cmp" / "gradients.png").is_file()   # a guide without parameters
    for r in runs:
        assert r["status"] == "ok", r
        assert r["exact_logpx"] == pytest.approx(r["is_logpx"], abs=1e-4)
        assert r["grad_var_model"] > 0
