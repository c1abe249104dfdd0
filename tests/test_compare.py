"""compare(): fairness, determinism, skipped and failed pairs, user models, outputs, CLI."""

import csv
import json
import math
import textwrap

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from test_gradvar import CoinGuide, CoinModel, ScoreFunction
from torch import nn

from ppl_dgm import registry
from ppl_dgm.cli import main
from ppl_dgm.compare import OUTPUT_FILES, TIMING_COLUMNS, EstimatorSpec, compare, parse_estimators
from ppl_dgm.data import Dataset
from ppl_dgm.errors import UnknownNameError
from ppl_dgm.estimators import ELBO, IWAE
from ppl_dgm.estimators.base import Estimator, LossParts
from ppl_dgm.nn import plate_size

TINY_VAE = {"z_dim": 2, "hidden": (8,)}
QUICK = dict(steps=20, eval_every=10, curve_particles=4, iwae_k=4, eval_samples=16,
             grad_draws=3, batch_size=20, device="cpu")


def _binary_data(n_train=120, n_test=30, dim=6, seed=0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(dim, generator=g) * 0.8 + 0.1
    x = torch.bernoulli(probs.expand(n_train + n_test, dim), generator=g)
    return Dataset("toy", x[:n_train], x[n_train:], binary=True)


def _coin_data(n=60) -> Dataset:
    g = torch.Generator().manual_seed(1)
    z = torch.bernoulli(torch.full((n, 1), 0.5), generator=g)
    x = 1.5 * z + torch.randn(n, 1, generator=g)
    return Dataset("coin", x[:40], x[40:], binary=False)


def _strip_timing(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_COLUMNS} for r in rows]


class NotALikelihood(Estimator):
    """Stands in for a GAN-type estimator: it declares it needs no likelihood."""

    name = "toy-gan"
    needs_likelihood = False

    def surrogate(self, model, guide, x):  # pragma: no cover - never run by compare
        raise AssertionError("compare must not train a needs_likelihood=False estimator")


class Diverges(Estimator):
    """An estimator whose loss is NaN: its run fails, the comparison goes on."""

    name = "toy-nan"
    handles_discrete_latents = True
    needs_reparam = False

    def surrogate(self, model, guide, x):
        tr = self.traces(model, guide, x)
        bad = tr.log_w.sum() * float("nan")
        return LossParts({"nan": bad}, {"objective": bad.detach()})


# ------------------------------------------------------------------ estimator lists
def test_parse_estimators_names_options_and_particles():
    specs = parse_estimators("elbo,iwae:num_particles=5:dreg=True", particles=3)
    assert [s.label for s in specs] == ["elbo", "iwae:num_particles=5:dreg=True"]
    assert specs[0].options == {"num_particles": 3} and specs[0].particles_from_default
    assert specs[1].options == {"num_particles": 5, "dreg": True}
    assert isinstance(specs[1].build(), IWAE) and specs[1].build().dreg
    every = parse_estimators("all")
    assert [s.label for s in every] == list(registry.ESTIMATORS)
    mixed = parse_estimators([ELBO, EstimatorSpec("k10", "iwae", {"num_particles": 10})])
    assert [s.label for s in mixed] == ["ELBO", "k10"]


@pytest.mark.parametrize("spec, error, match", [
    ("", ValueError, "empty"),
    ([], ValueError, "empty"),
    ("elbo,,iwae", ValueError, "empty entry"),
    ("elbo,no-such-estimator", UnknownNameError, "no-such-estimator"),
    ("iwae:num_particles", ValueError, "key=value"),
    ("elbo,elbo", ValueError, "more than once"),
])
def test_parse_estimators_rejects_bad_lists(spec, error, match):
    with pytest.raises(error, match=match):
        parse_estimators(spec)


@pytest.mark.parametrize("kwargs, match", [
    ({"steps": 0}, "steps must be a positive integer"),
    ({"seeds": 0}, "seeds must be >= 1"),
    ({"seeds": [1, 1]}, "repeat"),
    ({"grad_draws": 1}, "grad_draws"),
    ({"estimators": "iwae:num_particles=0"}, "num_particles"),
])
def test_compare_rejects_bad_arguments_before_training(kwargs, match):
    args = {**QUICK, "estimators": "elbo", **kwargs}
    estimators = args.pop("estimators")
    with pytest.raises(ValueError, match=match):
        compare("vae", None, estimators, _binary_data(), model_options=TINY_VAE, **args)


# ------------------------------------------------------------------ the comparison
def test_same_seed_same_table_and_fair_start():
    data = _binary_data()
    kw = dict(model_options=TINY_VAE, seeds=2, **QUICK)
    a = compare("vae", None, "elbo,iwae:num_particles=3", data, **kw)
    b = compare("vae", None, "elbo,iwae:num_particles=3", data, **kw)
    assert [r["status"] for r in a.runs] == ["ok"] * 4, [r["reason"] for r in a.runs]
    assert _strip_timing(a.runs) == _strip_timing(b.runs)
    assert _strip_timing(a.curves) == _strip_timing(b.curves)
    assert a.gradients == b.gradients
    assert a.to_markdown(timing=False) == b.to_markdown(timing=False)
    # within a seed every estimator starts from the same parameters: same start values
    for seed in (0, 1):
        starts = {(c["estimator"]) : c["heldout"] for c in a.curves
                  if c["seed"] == seed and c["step"] == 0}
        assert len(set(starts.values())) == 1, starts
        grad_start = [g["total_variance"] for g in a.gradients
                      if g["seed"] == seed and g["snapshot"] == "start" and g["group"] == "model"]
        assert len(grad_start) == 2
    # different seeds start differently
    assert a.curves[0]["heldout"] != [c for c in a.curves if c["seed"] == 1][0]["heldout"]
    for r in a.runs:
        assert all(math.isfinite(r[k]) for k in ("elbo", "iwae", "is_logpx", "heldout"))
        assert r["ms_per_step"] > 0 and r["peak_mem_mb"] > 0
    summary = {s["estimator"]: s for s in a.summary()}
    assert summary["elbo"]["seeds"] == 2 and math.isfinite(summary["elbo"]["is_logpx_ci"])
    snaps = {(g["estimator"], g["seed"], g["snapshot"]) for g in a.gradients}
    assert len(snaps) == 2 * 2 * 3


def test_incompatible_and_failing_pairs_are_reported_not_raised():
    result = compare(CoinModel, CoinGuide,
                     [ScoreFunction, "elbo", NotALikelihood, Diverges, "vimco"],
                     _coin_data(), seeds=1, particles=1, **{**QUICK, "batch_size": 10})
    status = {r["estimator"]: r for r in result.runs}
    assert status["vimco"]["status"] == "skipped"
    assert "num_particles >= 2" in status["vimco"]["reason"]
    assert status["ScoreFunction"]["status"] == "ok"
    assert status["elbo"]["status"] == "skipped"
    assert "reparameterised" in status["elbo"]["reason"] and "'z'" in status["elbo"]["reason"]
    assert status["NotALikelihood"]["status"] == "skipped"
    assert "needs_likelihood" in status["NotALikelihood"]["reason"]
    assert status["Diverges"]["status"] == "failed"
    assert status["Diverges"]["reason"].split(":")[0].endswith("Error")  # type and message
    table = result.to_markdown()
    assert "| ScoreFunction |" in table
    assert "**elbo** skipped" in table and "**Diverges** failed" in table


class FactorModel(PyroModule):
    """A user's model, written here: ``z ~ N(0, I_2)``, ``x | z ~ Bernoulli(sigmoid(W z + b))``."""

    def __init__(self, x_dim: int):
        super().__init__()
        self.decoder = nn.Linear(2, x_dim)

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", plate_size(x, batch_size)):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)


class FactorGuide(PyroModule):
    def __init__(self, x_dim: int):
        super().__init__()
        self.encoder = nn.Linear(x_dim, 4)

    def forward(self, x, batch_size=None):
        loc, raw = self.encoder(x).chunk(2, -1)
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Normal(loc, nn.functional.softplus(raw) + 1e-3)
                               .to_event(1))


def test_user_model_defined_here_runs_through_compare(tmp_path):
    data = _binary_data()
    result = compare(lambda: FactorModel(data.x_dim), lambda m: FactorGuide(data.x_dim),
                     ["elbo", IWAE], data, seeds=[3], **QUICK)
    assert [r["status"] for r in result.runs] == ["ok", "ok"]
    run = result.runs[0]
    assert run["seed"] == 3 and run["estimator_class"] == "ELBO"
    assert math.isfinite(run["is_logpx"]) and math.isfinite(run["grad_var_guide"])
    paths = result.save(tmp_path)
    assert sorted(p.name for p in paths) == sorted(OUTPUT_FILES)
    doc = json.loads((tmp_path / "results.json").read_text())
    assert doc["config"]["estimators"] == ["elbo", "IWAE"] and doc["runs"][1]["status"] == "ok"
    with open(tmp_path / "curves.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 10, 20] * 2
    for name in ("curves_steps.png", "gradients.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_time_to_target_is_first_crossing():
    result = compare("vae", None, "elbo", _binary_data(), model_options=TINY_VAE, seeds=1,
                     **QUICK)
    (run,) = result.runs
    best = max(c["heldout"] for c in result.curves if c["step"] > 0)
    assert result.target == pytest.approx(best)  # default: the lowest best value
    assert run["time_to_target_s"] is not None
    easy = result.with_target(-1e9)
    assert easy.runs[0]["steps_to_target"] == 10  # the first curve point after the start
    unreachable = result.with_target(1e9)
    assert unreachable.runs[0]["time_to_target_s"] is None
    assert "not reached" in unreachable.to_markdown()
    assert result.runs[0]["time_to_target_s"] is not None  # the original is unchanged


# ------------------------------------------------------------------ command line
def _npz(tmp_path):
    data = _binary_data()
    path = tmp_path / "toy.npz"
    np.savez(path, train=data.train.numpy(), test=data.test.numpy())
    return str(path)


CLI_QUICK = ["--steps", "10", "--eval-every", "5", "--curve-particles", "4", "--iwae-k", "4",
             "--eval-samples", "16", "--grad-draws", "3", "--batch-size", "20", "--device",
             "cpu", "--no-progress", "--model-opt", "z_dim=2", "--model-opt", "hidden=8"]


def test_cli_compare_writes_table_files_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--model", "vae", "--estimators", "elbo,iwae:num_particles=3",
               "--data", _npz(tmp_path), "--seeds", "2", "--out", str(out), *CLI_QUICK])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| elbo | 2 |" in captured.out and "| iwae:num_particles=3 | 2 |" in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUT_FILES, "complete.json",
                                                           "pairs", "settings.json"])


def test_cli_compare_user_files_without_registration(tmp_path, capsys):
    user = tmp_path / "coin.py"
    user.write_text(textwrap.dedent("""
        import pyro, pyro.distributions as dist, torch
        from pyro.nn import PyroModule
        from torch import nn

        class Coin(PyroModule):
            def __init__(self):
                super().__init__()
                self.loc = nn.Parameter(torch.zeros(6))
            def forward(self, x=None, batch_size=None):
                n = x.shape[0] if x is not None else batch_size
                with pyro.plate("data", n):
                    z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))
                    logits = self.loc + z.sum(-1, keepdim=True)
                    return pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)

        class CoinGuide(PyroModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Linear(6, 4)
            def forward(self, x, batch_size=None):
                loc, raw = self.net(x).chunk(2, -1)
                with pyro.plate("data", x.shape[0]):
                    return pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))
    """))
    out = tmp_path / "cmp"
    rc = main(["compare", "--model", f"{user}:Coin", "--guide", f"{user}:CoinGuide",
               "--estimators", "elbo,iwae", "--data", _npz(tmp_path), "--out", str(out),
               *CLI_QUICK[:-4]])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "| elbo | 1 |" in captured.out and "| iwae | 1 |" in captured.out


@pytest.mark.parametrize("args, match", [
    (["--estimators", ""], "estimator list is empty"),
    (["--estimators", "elbo,nope"], "unknown estimator 'nope'"),
    (["--estimators", "elbo", "--steps", "0"], "argument --steps: must be >= 1"),
    (["--estimators", "elbo", "--seeds", "x"], "--seeds"),
])
def test_cli_compare_bad_input(tmp_path, capsys, args, match):
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", _npz(tmp_path), "--out", str(out), *CLI_QUICK, *args])
    err = capsys.readouterr().err
    assert rc == 2 and match in err, err
    assert not out.exists()  # nothing was written


def test_cli_compare_refuses_non_empty_out_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "table.md").write_text("stale")
    argv = ["compare", "--estimators", "elbo", "--data", _npz(tmp_path), "--out", str(out),
            "--no-plots", *CLI_QUICK]
    for extra in ([], ["--overwrite"]):  # a folder with other files is never replaced
        assert main([*argv, *extra]) == 2
        assert "holds files that no comparison wrote (notes.txt)" in capsys.readouterr().err
        assert (out / "table.md").read_text() == "stale"
    (out / "notes.txt").unlink()
    assert main(argv) == 2
    assert "not empty" in capsys.readouterr().err and (out / "table.md").read_text() == "stale"
    assert main([*argv, "--overwrite"]) == 0
    assert "| elbo |" in (out / "table.md").read_text()
    assert not (out / "gradients.png").exists()


# ------------------------------------------------------------------ literature (slow)
@pytest.mark.slow
def test_sbn_on_digits_reproduces_the_literature_ordering():
    """VIMCO, RWS and NVIL beat plain REINFORCE (no baseline) in held-out log p(x)
    (exact, the SBN enumerates), and NVIL's guide gradient has lower variance than
    REINFORCE's with or without its moving-average baseline."""
    from ppl_dgm.data import load_digits

    result = compare("sbn", None, "reinforce:baseline=None,reinforce,nvil,vimco,rws",
                     load_digits(), steps=1500, seeds=2, eval_samples=500, grad_draws=50,
                     device="cpu")
    s = {row["estimator"]: row for row in result.summary()}
    assert all(row["seeds"] == 2 for row in s.values()), result.to_markdown()
    plain = s["reinforce:baseline=None"]
    for better in ("vimco", "rws", "nvil"):
        assert s[better]["exact_logpx_mean"] > plain["exact_logpx_mean"], result.to_markdown()
    for reinforce in ("reinforce", "reinforce:baseline=None"):
        assert s["nvil"]["grad_var_guide_mean"] < s[reinforce]["grad_var_guide_mean"]


@pytest.mark.slow
def test_vae_on_digits_iwae_bound_at_least_elbo():
    from ppl_dgm.data import load_digits

    result = compare("vae", None, "elbo,iwae", load_digits(), steps=1500, seeds=2,
                     eval_samples=500, grad_draws=20, device="cpu")
    assert all(r["status"] == "ok" for r in result.runs)
    for r in result.runs:  # the ladder of each trained model: ELBO <= IWAE-50 <= IS
        assert r["elbo"] <= r["iwae"] <= r["is_logpx"] + 0.05
    s = {row["estimator"]: row for row in result.summary()}
    assert s["iwae"]["iwae_mean"] >= s["elbo"]["elbo_mean"]


def test_text_data_passes_its_vocabulary_to_the_model(tmp_path):
    """compare builds a text model with the corpus's vocab_size (a corpus whose
    vocabulary is not the model's default size), as `ppl-dgm train` does."""
    from ppl_dgm.text import load_text

    words = [f"w{i}" for i in range(300)]  # more words than the default vocab_size
    lines = [" ".join(words[(5 * i + k) % 300] for k in range(4)) for i in range(300)]
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    data = load_text(tmp_path / "corpus.txt", max_len=6, max_vocab=400, min_count=1)
    assert len(data.vocab) > 208  # the model's default vocab_size
    res = compare("sentence-vae", None, "elbo", data, steps=4, seeds=1, batch_size=10,
                  model_options={"z_dim": 2, "embed_dim": 8, "hidden_dim": 8},
                  eval_every=2, curve_particles=2, iwae_k=2, eval_samples=4, grad_draws=0)
    assert [r["status"] for r in res.runs] == ["ok"], res.runs
