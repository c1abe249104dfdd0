"""Gradient variance and SNR: Welford's algebra, and a closed form on one Bernoulli."""

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.estimators.base import Estimator, LossParts
from ppl_dgm.gradvar import Welford, gradient_stats
from ppl_dgm.nn import plate_size


class CoinModel(PyroModule):
    """``z ~ Bernoulli(1/2)``, ``x | z ~ N(theta z, 1)`` (data shape (n, 1))."""

    def __init__(self, theta: float = 0.3):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor(theta))
        self.register_buffer("prior", torch.tensor(0.5))

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", plate_size(x, batch_size)):
            z = pyro.sample("z", dist.Bernoulli(self.prior))
            return pyro.sample("x", dist.Normal((self.theta * z).unsqueeze(-1), 1.0).to_event(1),
                               obs=x)


class CoinGuide(PyroModule):
    """``q(z) = Bernoulli(sigmoid(phi))``."""

    def __init__(self, phi: float = 0.4):
        super().__init__()
        self.phi = nn.Parameter(torch.tensor(phi))

    def forward(self, x=None, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("z", dist.Bernoulli(logits=self.phi))


class ScoreFunction(Estimator):
    """Plain REINFORCE: guide gradient ``l grad log q`` with ``l = log p - log q``; model
    gradient ``grad log p``.  Counts its calls in a buffer (to test state isolation)."""

    name = "toy-score-function"
    handles_discrete_latents = True
    needs_reparam = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.aux.register_buffer("calls", torch.zeros(()))

    def surrogate(self, model, guide, x):
        tr = self.traces(model, guide, x)
        signal = tr.log_w.detach()
        self.aux.calls.add_(1)
        objective = tr.scale * tr.log_w.mean(0).sum()
        loss = -(tr.scale * (signal * tr.log_q + tr.log_p).mean(0).sum())
        return LossParts({"score": loss}, {"objective": objective.detach()})


def _two_point(p: float, g1: float, g0: float):
    """Mean, variance and fourth central moment of g1 w.p. p, g0 w.p. 1 - p."""
    d = g1 - g0
    mean = p * g1 + (1 - p) * g0
    var = p * (1 - p) * d**2
    mu4 = p * (1 - p) * (1 - 3 * p + 3 * p**2) * d**4
    return mean, var, mu4


def test_welford_matches_direct_mean_and_variance():
    g = torch.Generator().manual_seed(1)
    draws = torch.randn(257, 13, generator=g, dtype=torch.float64) * 3 + 1e4
    w = Welford(13)
    for row in draws:
        w.update(row)
    assert w.count == 257
    torch.testing.assert_close(w.mean, draws.mean(0), rtol=0, atol=1e-9)
    torch.testing.assert_close(w.variance, draws.var(0), rtol=1e-10, atol=0)


def test_welford_rejects_wrong_size_and_needs_two_draws():
    w = Welford(3)
    w.update(torch.ones(3))
    assert torch.isnan(w.variance).all()
    with pytest.raises(ValueError, match="size 3"):
        w.update(torch.ones(4))


def test_reinforce_gradient_variance_matches_closed_form():
    theta, phi, x0 = 0.3, 0.4, 1.0
    model, guide, est = CoinModel(theta), CoinGuide(phi), ScoreFunction()
    x = torch.tensor([[x0]])
    n = 1500
    stats = gradient_stats(model, guide, est, x, num_draws=n, seed=3)

    s = 1 / (1 + math.exp(-phi))
    log_normal = lambda v, loc: -0.5 * (v - loc) ** 2 - 0.5 * math.log(2 * math.pi)  # noqa: E731
    l1 = log_normal(x0, theta) + math.log(0.5) - math.log(s)
    l0 = log_normal(x0, 0.0) + math.log(0.5) - math.log(1 - s)
    # gradients of the loss (minus the surrogate objective) for z = 1 and z = 0
    exact = {"guide": _two_point(s, -l1 * (1 - s), l0 * s),
             "model": _two_point(s, -(x0 - theta), 0.0)}
    for group, (mean, var, mu4) in exact.items():
        st = stats[group]
        assert st.num_draws == n and st.num_elements == 1
        se_var = math.sqrt((mu4 - var**2) / n)
        se_mean = math.sqrt(var / n)
        assert abs(st.total_variance - var) < 5 * se_var, (group, st.total_variance, var)
        assert abs(st.mean_norm - abs(mean)) < 5 * se_mean, (group, st.mean_norm, mean)
        assert st.mean_variance == st.total_variance
        assert st.snr == pytest.approx(st.mean_norm / math.sqrt(st.total_variance))
        assert st.mean_snr == pytest.approx(st.snr)


def test_gradient_stats_leaves_estimator_state_and_rng_untouched():
    model, guide, est = CoinModel(), CoinGuide(), ScoreFunction()
    x = torch.tensor([[1.0], [0.0]])
    rng = torch.get_rng_state()
    a = gradient_stats(model, guide, est, x, num_draws=5, seed=7)
    assert float(est.aux.calls) == 0
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.theta.grad is None and guide.phi.grad is None
    b = gradient_stats(model, guide, est, x, num_draws=5, seed=7)
    assert a == b  # seeded draws are reproducible


def test_unused_parameters_have_zero_variance_and_undefined_snr():
    class GuideOnly(ScoreFunction):
        name = "toy-guide-only"

        def surrogate(self, model, guide, x):
            tr = self.traces(model, guide, x)
            loss = -(tr.log_w.detach() * tr.log_q).sum()
            return LossParts({"score": loss}, {"objective": tr.log_w.sum().detach()})

    stats = gradient_stats(CoinModel(), CoinGuide(), GuideOnly(), torch.tensor([[1.0]]),
                           num_draws=10, seed=0)
    assert stats["model"].total_variance == 0.0
    assert math.isnan(stats["model"].snr)
    assert stats["guide"].total_variance > 0


def test_gradient_stats_rejects_too_few_draws():
    with pytest.raises(ValueError, match="num_draws"):
        gradient_stats(CoinModel(), CoinGuide(), ScoreFunction(), torch.tensor([[1.0]]),
                       num_draws=1)
