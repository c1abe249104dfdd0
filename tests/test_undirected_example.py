"""The undirected-models example runs end to end (tiny settings; numbers not asserted)."""

import math
import warnings

from examples_loader import load_example


def test_undirected_example_smoke(capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # AIS with 50 temperatures warns, as it should
        rows = load_example("undirected_digits").main(
            ["--epochs", "1", "--no-baselines", "--ais-temperatures", "50", "--ais-runs", "5",
             "--eval-samples", "5", "--sklearn-lrs", "0.1", "--dbn-layers", "16,8",
             "--dbm-layers", "16,8"])
    labels = [r["model"] for r in rows]
    assert any("sklearn" in s for s in labels) and any("up-down" in s for s in labels)
    assert all(math.isfinite(r["nll"]) for r in rows)
    assert "test NLL" in capsys.readouterr().out
