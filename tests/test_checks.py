"""Bad input fails before training, with messages that name the problem."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from ppl_dgm.guides import GaussianEncoder
from ppl_dgm.models import VAE
from pyro.nn import PyroModule

from ppl_dgm import registry
from ppl_dgm.data import Dataset, check_data, load_digits
from ppl_dgm.errors import (
    DataError,
    IncompatibleEstimatorError,
    SiteMismatchError,
    UnknownNameError,
)
from ppl_dgm.estimators import ELBO, IWAE
from ppl_dgm.train import fit


@pytest.fixture(scope="module")
def digits():
    return load_digits()


def _pair(x_dim=64):
    model = VAE(x_dim, 4, hidden=(16,))
    return model, GaussianEncoder.from_model(model, hidden=(16,))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_nan_or_inf_in_data(digits, bad):
    x = digits.train.clone()
    x[7, 3] = bad
    model, guide = _pair()
    with pytest.raises(DataError, match=r"(NaN|infinite).*rows.*\[7\]"):
        fit(model, guide, ELBO(), x, steps=5)


def test_non_binary_data_for_bernoulli(digits):
    x = digits.train * 0.5
    model, guide = _pair()
    with pytest.raises(DataError, match="Bernoulli.*binary"):
        fit(model, guide, ELBO(), x, steps=5)


def test_data_width_differs_from_model(digits):
    model, guide = _pair(x_dim=100)
    with pytest.raises(DataError, match=r"shape \(64,\).*\(100,\).*x_dim=64"):
        fit(model, guide, ELBO(), digits.train, steps=5)


def test_wrong_rank_data():
    with pytest.raises(DataError, match="num_points, num_features"):
        check_data(torch.zeros(3, 8, 8))


class TwoLatentModel(PyroModule):
    def __init__(self):
        super().__init__()
        self.x_dim = 64
        self.register_buffer("zero", torch.zeros(2))

    def forward(self, x=None, batch_size=None):
        n = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Normal(self.zero, 1.0).to_event(1))
            w = pyro.sample("w", dist.Normal(self.zero, 1.0).to_event(1))
            logits = (z.sum(-1, keepdim=True) + w.sum(-1, keepdim=True)).expand(*z.shape[:-1], 64)
            pyro.sample("x", dist.Bernoulli(logits=logits).to_event(1), obs=x)


class ExtraSiteGuide(PyroModule):
    def __init__(self):
        super().__init__()
        self.loc = torch.nn.Parameter(torch.zeros(2))

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            for name in ("z", "w", "extra"):
                pyro.sample(name, dist.Normal(self.loc, 1.0).to_event(1))


def test_guide_misses_a_model_latent(digits):
    model = TwoLatentModel()
    guide = GaussianEncoder(64, 2, hidden=())
    with pytest.raises(SiteMismatchError, match=r"does not sample.*\['w'\]"):
        fit(model, guide, ELBO(), digits.train, steps=5)


def test_guide_samples_an_extra_site(digits):
    with pytest.raises(SiteMismatchError, match=r"\['extra'\].*not have"):
        fit(TwoLatentModel(), ExtraSiteGuide(), ELBO(), digits.train, steps=5)


class DiscreteModel(PyroModule):
    def __init__(self):
        super().__init__()
        self.x_dim = 64
        self.logits = torch.nn.Parameter(torch.zeros(64))
        self.register_buffer("p_h", torch.full((3,), 0.5))

    def forward(self, x=None, batch_size=None):
        n = x.shape[0] if x is not None else batch_size
        with pyro.plate("data", n):
            h = pyro.sample("h", dist.Bernoulli(self.p_h).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.logits + h.sum(-1, keepdim=True))
                        .to_event(1), obs=x)


class DiscreteGuide(PyroModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Linear(64, 3)

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Bernoulli(logits=self.net(x)).to_event(1))


@pytest.mark.parametrize("estimator", [ELBO(), IWAE()], ids=["elbo", "iwae"])
def test_discrete_latent_under_reparameterised_estimator(digits, estimator):
    with pytest.raises(IncompatibleEstimatorError, match=r"site 'h'.*Bernoulli.*discrete") as e:
        fit(DiscreteModel(), DiscreteGuide(), estimator, digits.train, steps=5)
    assert "Use an estimator that handles discrete latents" in str(e.value)


@pytest.mark.parametrize("kind", ["model", "guide", "estimator"])
def test_unknown_names_list_valid_ones(kind):
    with pytest.raises(UnknownNameError) as e:
        registry.resolve(kind, "no-such-thing")
    for name in {"model": registry.MODELS, "guide": registry.GUIDES,
                 "estimator": registry.ESTIMATORS}[kind]:
        assert name in str(e.value)


def test_user_file_class_not_found(tmp_path):
    f = tmp_path / "mine.py"
    f.write_text("class Other:\n    pass\n")
    with pytest.raises(UnknownNameError, match="Other"):
        registry.resolve("model", f"{f}:Missing")


def test_batch_size_larger_than_data(digits):
    model, guide = _pair()
    with pytest.raises(ValueError, match="batch_size"):
        fit(model, guide, ELBO(), Dataset("tiny", digits.train[:10], digits.test[:0], True),
            steps=5, batch_size=100)
