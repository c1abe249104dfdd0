"""Predictability minimisation: predictors, routing, independence measures, training on
data mixed from independent binary factors, and bad input."""

import math

import pytest
import torch
from ppl_dgm.guides import Discriminator, UnitPredictors
from ppl_dgm.models import FactorialCode, Generator
from pyro import poutine

from ppl_dgm.errors import IncompatibleEstimatorError
from ppl_dgm.estimators import PredictabilityMinimization
from ppl_dgm.estimators.pm import mean_abs_correlation, prediction_error, total_correlation
from ppl_dgm.train import fit

PROBS = (0.5, 0.3, 0.7, 0.4)


def factor_data(n, seed, x_dim=8, noise=0.1):
    """x = A b + noise with b_j ~ Bernoulli(PROBS_j) independent and a fixed random
    8 x 4 mixing matrix A; returns (x, b)."""
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(x_dim, len(PROBS), generator=torch.Generator().manual_seed(123))
    b = (torch.rand(n, len(PROBS), generator=g) < torch.tensor(PROBS)).float()
    return b @ mix.T + noise * torch.randn(n, x_dim, generator=g), b


def test_predictor_i_never_sees_unit_i():
    pred = UnitPredictors(code_dim=5, hidden=7)
    code = torch.rand(3, 5, requires_grad=True)
    out = pred.predict(code)
    for i in range(5):
        (g,) = torch.autograd.grad(out[:, i].sum(), code, retain_graph=True)
        assert bool((g[:, i] == 0).all()) and bool((g.abs().sum(0) > 0).sum() == 4)
    tr = poutine.trace(pred).get_trace(code)
    assert torch.equal(tr.nodes["code"]["fn"].mean, out)
    with pytest.raises(ValueError, match="at least 2"):
        UnitPredictors(code_dim=1)


def test_independence_measures():
    g = torch.Generator().manual_seed(0)
    indep = (torch.rand(20000, 3, generator=g) < 0.5).float()
    # plug-in TC of independent bits is O(2^m / n) small; copies carry H(b) = 1 bit each
    assert total_correlation(indep) < 0.005
    copies = indep[:, :1].repeat(1, 3)
    assert total_correlation(copies) == pytest.approx(2.0, abs=0.01)
    assert float(mean_abs_correlation(copies)) == pytest.approx(1.0)
    assert float(mean_abs_correlation(indep)) < 0.03  # 4.5 sd of a correlation at n=20000
    assert float(prediction_error(torch.zeros(2, 2), torch.ones(2, 2))) == 4.0


def test_routing_predictors_and_code():
    """The predictors' part reaches only the predictors; the code's (and the
    reconstruction's) parts only the code model."""
    torch.manual_seed(0)
    model = FactorialCode(x_dim=8, code_dim=4, hidden=(16,), likelihood="gaussian")
    guide = UnitPredictors(code_dim=4, hidden=8)
    x, _ = factor_data(32, 0)
    est = PredictabilityMinimization()
    for part, owner, other in (("predictors", guide, model), ("code", model, guide),
                               ("reconstruction", model, guide)):
        for m in (model, guide):
            m.zero_grad(set_to_none=True)
        est.surrogate(model, guide, x).parts[part].backward()
        assert any(p.grad is not None and bool(p.grad.abs().sum() > 0)
                   for p in owner.parameters()), part
        assert all(p.grad is None or bool((p.grad == 0).all()) for p in other.parameters()), part


def test_code_gradient_maximises_the_predictors_error():
    """The code's gradient is minus the gradient of sum (P_i(c_-i) - c_i)^2 through
    both the predicted unit and the predictors' inputs, with the predictors fixed."""
    torch.manual_seed(0)
    model = FactorialCode(x_dim=8, code_dim=3, hidden=(6,), likelihood="gaussian").double()
    guide = UnitPredictors(code_dim=3, hidden=5).double()
    x = factor_data(10, 0)[0].double()
    est = PredictabilityMinimization(reconstruction=0.0)
    est.surrogate(model, guide, x).parts["code"].backward()
    got = [p.grad.clone() for p in model.encoder.parameters()]
    code = model.encode(x)
    err = ((guide.predict(code) - code) ** 2).sum()
    ref = torch.autograd.grad(-err, list(model.encoder.parameters()))
    assert all(torch.allclose(a, b, rtol=1e-10, atol=1e-12) for a, b in zip(got, ref))


def test_pm_learns_a_factorial_code():
    """Four independent binary factors (probabilities 0.5, 0.3, 0.7, 0.4) mixed linearly
    into 8 noisy dimensions.  After 300 steps of PM (with the reconstruction term) the
    four code units on 5000 held-out points are close to independent: the total
    correlation of the binarised code falls from 0.39 bits to below 0.02 bits (the
    factors' own plug-in value is 0.002), the mean absolute correlation between units
    falls from 0.34 to below 0.15, and each factor is recovered by some unit with
    |correlation| > 0.9."""
    x, _ = factor_data(4000, 0)
    xt, bt = factor_data(5000, 1)
    torch.manual_seed(0)
    model = FactorialCode(x_dim=8, code_dim=4, hidden=(32,), likelihood="gaussian")
    guide = UnitPredictors(code_dim=4, hidden=16)
    with torch.no_grad():
        c0 = model.encode(xt)
    corr0, tc0 = float(mean_abs_correlation(c0)), total_correlation(c0)
    fit(model, guide, PredictabilityMinimization(), x, steps=300, batch_size=100, lr=1e-2,
        device="cpu", log_every=300)
    with torch.no_grad():
        c = model.encode(xt)
    corr, tc = float(mean_abs_correlation(c)), total_correlation(c)
    assert corr0 > 0.3 and tc0 > 0.3
    assert corr < 0.15 and corr < corr0 / 2
    assert tc < 0.02
    recovery = torch.corrcoef(torch.cat([c, bt], 1).T)[:4, 4:].abs().max(0).values
    assert bool((recovery > 0.9).all()), recovery
    # the factorial code makes independent units decodable into data-like samples
    samples = model.sample(2000)
    assert samples.shape == (2000, 8)
    assert float((samples.mean(0) - xt.mean(0)).abs().max()) < 0.2


def test_bad_input():
    x, _ = factor_data(10, 0)
    with pytest.raises(IncompatibleEstimatorError, match="needs a code model.*'z', 'x'"):
        fit(Generator(x_dim=8, output="identity"), UnitPredictors(code_dim=4),
            PredictabilityMinimization(), x, steps=2, batch_size=5, device="cpu")
    with pytest.raises(IncompatibleEstimatorError, match="unit predictors as the guide"):
        fit(FactorialCode(x_dim=8, likelihood="gaussian"), Discriminator(x_dim=8),
            PredictabilityMinimization(), x, steps=2, batch_size=5, device="cpu")
    with pytest.raises(ValueError, match="reconstruction"):
        PredictabilityMinimization(reconstruction=-1.0)
    with pytest.raises(ValueError, match="likelihood"):
        FactorialCode(likelihood="poisson")
    assert math.isfinite(total_correlation(torch.ones(5, 2)))
