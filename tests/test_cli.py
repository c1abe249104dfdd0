import json

import pytest

from ppl_dgm.cli import main, parse_options

USER_MODEL = '''
import pyro, pyro.distributions as dist, torch
from pyro.nn import PyroModule

class TinyModel(PyroModule):
    """A user's own model: one latent, a linear decoder."""
    def __init__(self, x_dim=64, z_dim=2):
        super().__init__()
        self.x_dim, self.latent_dims = x_dim, {"z": z_dim}
        self.dec = torch.nn.Linear(z_dim, x_dim)
        self.register_buffer("zero", torch.zeros(z_dim))

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", x.shape[0] if x is not None else batch_size):
            z = pyro.sample("z", dist.Normal(self.zero, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.dec(z)).to_event(1), obs=x)

class TinyGuide(PyroModule):
    def __init__(self, x_dim=64, z_dim=2):
        super().__init__()
        self.net = torch.nn.Linear(x_dim, 2 * z_dim)

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            loc, s = self.net(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, torch.nn.functional.softplus(s)).to_event(1))
'''


def test_train_evaluate_sample_list(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", "--steps", "60", "--log-every", "20", "--eval-every", "0",
            "--eval-samples", "50", "--run-dir", "r", "--no-progress",
            "--model-opt", "hidden=32", "--guide-opt", "hidden=(32,)", "--particles", "2",
            "--estimator", "iwae", "--estimator-opt", "dreg=True"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "test log-likelihood (importance sampling, K=50)" in out
    cfg = json.loads((tmp_path / "r" / "config.json").read_text())
    assert cfg["estimator_options"] == {"dreg": True, "num_particles": 2}
    assert main(["evaluate", "r", "--samples", "100", "--ks", "1,5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["step"] == 60 and res["elbo"] <= res["iwae_5"] + 0.5
    assert main(["sample", "r", "--n", "16"]) == 0
    assert (tmp_path / "r" / "samples.png").stat().st_size > 1000
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("vae", "gaussian", "elbo", "iwae"):
        assert name in out
    # the same run directory is refused without --resume/--overwrite
    assert main(args) == 2
    assert "already exists" in capsys.readouterr().err


def test_user_model_and_guide_from_files(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(USER_MODEL)
    assert main(["train", "--model", "mine.py:TinyModel", "--guide", "mine.py:TinyGuide",
                 "--steps", "30", "--log-every", "10", "--eval-samples", "20",
                 "--run-dir", "u", "--no-progress"]) == 0
    capsys.readouterr()
    # a run that names a Python file is not imported without --trust-code
    assert main(["evaluate", "u", "--samples", "20", "--ks", "1"]) == 2
    assert "--trust-code" in capsys.readouterr().err
    assert main(["evaluate", "u", "--samples", "20", "--ks", "1", "--trust-code"]) == 0
    assert "log p(x), IS K=20" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["train", "--estimator", "nope"], "unknown estimator 'nope'; registered estimators: "),
    (["train", "--model", "nope"], "unknown model 'nope'"),
    (["train", "--data", "nope"], "unknown data 'nope'"),
    (["evaluate", "missing-dir"], "not a run directory"),
])
def test_errors_are_one_clear_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_options():
    assert parse_options(["a=1", "b=0.5", "c=x", "d=200,200", "e=True"], "model") == {
        "a": 1, "b": 0.5, "c": "x", "d": [200, 200], "e": True}
    with pytest.raises(ValueError, match="key=value"):
        parse_options(["novalue"], "model")


def test_an_estimator_file_naming_a_plain_class_is_refused(tmp_path, monkeypatch, capsys):
    """A user's --estimator class that is not an Estimator: exit 2 saying what to
    subclass (it used to reach an internal AttributeError)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "est.py").write_text("class M:\n    pass\n")
    assert main(["train", "--estimator", "est.py:M", "--steps", "5", "--run-dir", "r"]) == 2
    err = capsys.readouterr().err
    assert "not an estimator" in err and "Estimator" in err and len(err.splitlines()) <= 2
    assert not (tmp_path / "r").exists()
