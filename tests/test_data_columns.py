"""Programs with several data arguments (covariates and responses, ``model(x, y)``, the
form of Pyro's regression tutorial): ``fit(..., (x, y), data_arg=(0, 1))`` minibatches
the tensors together."""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.nn import PyroModule, PyroSample

from ppl_dgm.errors import DataError, ParticleWarning
from ppl_dgm.estimators import ELBO, IWAE
from ppl_dgm.programs import Columns, ProgramCall
from ppl_dgm.train import fit


class Regression(PyroModule):
    """Bayesian linear regression as Pyro's tutorial writes it."""

    def __init__(self, d):
        super().__init__()
        self.linear = PyroModule[torch.nn.Linear](d, 1)
        self.linear.weight = PyroSample(dist.Normal(0., 1.).expand([1, d]).to_event(2))
        self.linear.bias = PyroSample(dist.Normal(0., 10.).expand([1]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", dist.Uniform(0., 2.))
        mean = self.linear(x).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, sigma), obs=y)
        return mean


def test_minibatched_regression_recovers_the_weights():
    """Rows of x and y stay paired across shuffled minibatches: the posterior mean of the
    weights lands on the true ones (a misaligned pairing would give weights near 0).
    With 2000 points and noise 0.1 the posterior sd of each weight is ~0.0025; the
    guide's mean after 1500 steps of Adam is within 0.05."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, generator=g)
    w = torch.tensor([1.5, -2.0, 0.5])
    y = x @ w + 0.3 + 0.1 * torch.randn(2000, generator=g)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = Regression(3)
    guide = AutoDiagonalNormal(model)
    res = fit(model, guide, ELBO(), (x, y), data_arg=(0, 1), steps=1500, batch_size=200,
              lr=0.03, log_every=500)
    med = guide.median()
    assert torch.allclose(med["linear.weight"].flatten(), w, atol=0.05)
    assert abs(float(med["linear.bias"]) - 0.3) < 0.05
    assert res.history[-1]["elbo"] > res.history[0]["elbo"]
    pyro.clear_param_store()


def test_keyword_slot_and_heldout_bound_per_point():
    """A local-latent model called ``model(x, y=y)`` with an encoder guide: the tuple
    data_arg places y by keyword, the held-out IWAE bound is computed per point."""
    enc, dec = torch.nn.Linear(6, 4), torch.nn.Linear(6, 2)

    def model(x, y):
        pyro.module("dec", dec)
        with pyro.plate("rows", x.shape[0]):
            z = pyro.sample("z", dist.Normal(torch.zeros(2), 1.).to_event(1))
            pyro.sample("y", dist.Normal(dec(torch.cat([x, z], -1)), 1.).to_event(1), obs=y)

    def guide(x, y):
        pyro.module("enc", enc)
        with pyro.plate("rows", x.shape[0]):
            h = enc(torch.cat([x, y], -1))
            pyro.sample("z", dist.Normal(h[..., :2], h[..., 2:].exp()).to_event(1))

    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(300, 4, generator=g), torch.randn(300, 2, generator=g)
    pyro.clear_param_store()
    with pytest.warns(ParticleWarning):  # torch.cat([x, z]): particles one by one
        res = fit(model, guide, IWAE(num_particles=3), (x, y), data_arg=(0, "y"),
                  steps=40, batch_size=50, log_every=20, eval_every=20,
                  eval_data=(x[:60], y[:60]), eval_particles=2)
    assert "heldout_bound_k2" in res.history[-1]
    pyro.clear_param_store()


def test_bad_columns_are_refused_by_name():
    x, y = torch.randn(10, 2), torch.randn(9)
    with pytest.raises(DataError, match="one first"):
        fit(Regression(2), AutoDiagonalNormal(Regression(2)), ELBO(), (x, y),
            data_arg=(0, 1), steps=1)
    with pytest.raises(DataError, match="places 2"):
        fit(Regression(2), AutoDiagonalNormal(Regression(2)), ELBO(), (x,),
            data_arg=(0, 1), steps=1)
    with pytest.raises(DataError, match=r"training data\[1\] contains NaN"):
        fit(Regression(2), AutoDiagonalNormal(Regression(2)), ELBO(),
            (x, torch.full((10,), float("nan"))), data_arg=(0, 1), steps=1)
    with pytest.raises(DataError, match="data_arg"):
        fit(Regression(2), AutoDiagonalNormal(Regression(2)), ELBO(), (x, x[:, 0]),
            steps=1)
    with pytest.raises(ValueError, match="twice"):
        ProgramCall(data_arg=(0, 0))


def test_columns_bind_in_order():
    call = ProgramCall(args=("a",), data_arg=(2, 0, "y"))
    c = Columns((torch.zeros(3), torch.ones(3), torch.full((3,), 2.)))
    args, kwargs = call.bind(c[1:])
    assert args[0].eq(1).all() and args[1] == "a" and args[2].eq(0).all()
    assert kwargs["y"].eq(2).all() and len(args[0]) == 2
