"""The posterior-collapse example (examples/sentence_vae.py): a smoke run, and (slow) the
result the README reports: the plain ELBO collapses, annealing with word dropout does not."""

import pytest
from examples_loader import load_example


def test_example_runs_with_tiny_arguments(capsys):
    results = load_example("sentence_vae").main([
        "--steps", "4", "--batch-size", "16", "--samples", "4", "--test", "8", "--hidden",
        "8", "--z-dim", "2", "--configs", "plain,anneal+dropout"])
    assert set(results) == {"plain", "anneal+dropout"}
    assert len(results["plain"]["samples"]) == 5 and len(results["plain"]["homotopy"]) == 7
    assert "KL" in capsys.readouterr().out


@pytest.mark.slow
def test_posterior_collapse_without_the_tricks_and_not_with_them():
    r = load_example("sentence_vae").main([
        "--steps", "3000", "--samples", "200", "--test", "200", "--quiet",
        "--configs", "plain,anneal+dropout"])
    plain, tricks = r["plain"], r["anneal+dropout"]
    assert plain["kl"] < 0.5 and plain["active_units"] <= 1
    assert tricks["kl"] > 3.0 and tricks["active_units"] >= 3
    # the latent code carries information the decoder then uses: better reconstruction
    assert tricks["reconstruction"] > plain["reconstruction"] + 2.0
