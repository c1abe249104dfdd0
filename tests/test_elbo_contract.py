"""The ``pyro.infer.ELBO`` contract, kept by every estimator, with programs written the
ordinary Pyro way: ``loss`` needs no gradient machinery, ``differentiable_loss``'s value
is the loss (its gradient the estimator's), Pyro's keyword options are accepted, every
argument pattern of ``SVI.step`` reaches the programs, Pyro's validation is honoured, and
nothing depends on the names of sites and plates."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.distributions.testing.rejection_gamma import ShapeAugmentedGamma
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import constraints

from ppl_dgm import registry
from ppl_dgm.errors import IncompatibleEstimatorError
from ppl_dgm.estimators import ELBO, IWAE, NVIL, REINFORCE, VIMCO, ReweightedWakeSleep

Z = 4.5
X = (torch.rand(8, 4, generator=torch.Generator().manual_seed(0)) < 0.4).float()
LIKELIHOOD = sorted(n for n, c in registry.ESTIMATORS.items()
                    if c.needs_likelihood and n != "aavae" and not c.handles_energy_sites)


def _model(plate="data"):
    def model(x):
        w = pyro.param("w", lambda: 0.1 * torch.randn(2, 4))
        with pyro.plate(plate, x.shape[0]):
            h = pyro.sample("h", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("y", dist.Bernoulli(logits=h @ w).to_event(1), obs=x)
    return model


def _guide(plate="data"):
    def guide(x):
        a = pyro.param("a", lambda: 0.1 * torch.randn(4, 2))
        s = pyro.param("s", lambda: torch.ones(2), constraint=constraints.positive)
        with pyro.plate(plate, x.shape[0]):
            pyro.sample("h", dist.Normal(x @ a, s).to_event(1))
    return guide


def _sample_once(est, model, guide, x):
    torch.manual_seed(3)
    return est.loss(model, guide, x)


@pytest.mark.parametrize("name", LIKELIHOOD)
def test_loss_and_differentiable_loss_agree(name):
    model, guide = _model(), _guide()
    est = registry.build_estimator(name)
    torch.manual_seed(0)
    loss = est.loss(model, guide, X)              # no gradient machinery (DReG included)
    torch.manual_seed(0)
    value = est.differentiable_loss(model, guide, X)
    assert math.isfinite(loss) and value.requires_grad
    assert float(value) == pytest.approx(loss, rel=1e-6, abs=1e-6)


def test_iwae_dreg_loss_and_evaluate_loss():
    model, guide = _model(), _guide()
    est = IWAE(num_particles=4, dreg=True)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), est)
    assert math.isfinite(svi.step(X)) and math.isfinite(svi.evaluate_loss(X))


def test_the_loss_does_not_depend_on_site_or_plate_names():
    a = _sample_once(IWAE(num_particles=5), _model("data"), _guide("data"), X)
    pyro.clear_param_store()
    b = _sample_once(IWAE(num_particles=5), _model("obs"), _guide("obs"), X)
    assert a == pytest.approx(b, rel=1e-6)


def test_pyro_keyword_options_are_accepted():
    model, guide = _model(), _guide()
    for est in (IWAE(num_particles=10, vectorize_particles=True, max_plate_nesting=1),
                VIMCO(num_particles=4, max_plate_nesting=float("inf"),
                      strict_enumeration_warning=False),
                ELBO(num_particles=3, vectorize_particles=False, retain_graph=True,
                     ignore_jit_warnings=True, jit_options={}),
                REINFORCE(tail_adaptive_beta=-1.0)):
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), est)
        assert math.isfinite(svi.step(X))
    with pytest.raises(TypeError):
        ELBO(not_an_option=1)
    with pytest.raises(ValueError, match="vectorize_particles"):
        ELBO(vectorize_particles="yes")


def test_every_argument_pattern_reaches_the_programs():
    def model(x, weights, *, temperature=1.0):
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample("h", dist.Normal(0.0, 1.0))
            with pyro.poutine.scale(scale=weights / temperature):
                pyro.sample("obs", dist.Normal(h, 1.0), obs=x)

    def guide(x, weights, *, temperature=1.0):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(loc + 0.5 * x, 1.0))

    x, w = torch.randn(6), torch.full((6,), 0.5)
    for est in (ELBO(), IWAE(num_particles=3), REINFORCE(), VIMCO(num_particles=3)):
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), est)
        assert math.isfinite(svi.step(x, w))
        assert math.isfinite(svi.step(x, weights=w, temperature=2.0))
        assert math.isfinite(svi.step(x=x, weights=w))
    # the weights really scale the likelihood: doubling them moves the loss
    torch.manual_seed(0)
    a = ELBO().loss(model, guide, x, w)
    torch.manual_seed(0)
    b = ELBO().loss(model, guide, x, 2 * w)
    assert a != pytest.approx(b)


def test_nvil_does_not_take_the_first_argument_for_the_data():
    def model(idx, data):
        with pyro.plate("data", len(idx)):
            h = pyro.sample("h", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
            w = pyro.param("w", lambda: 0.1 * torch.randn(2, 4))
            pyro.sample("obs", dist.Bernoulli(logits=h @ w).to_event(1), obs=data[idx])

    def guide(idx, data):
        v = pyro.param("v", lambda: 0.1 * torch.randn(4, 2))
        with pyro.plate("data", len(idx)):
            pyro.sample("h", dist.Bernoulli(logits=data[idx] @ v).to_event(1))

    est = NVIL()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), est)
    idx = torch.tensor([0, 2, 5])
    assert math.isfinite(svi.step(idx, X))
    # the baseline reads the observed data of each point, not the index tensor
    assert est.aux.baselines["h"][0].in_features == 4


def test_no_trainable_parameter_reaching_the_loss_skips_the_backward():
    def model():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    def guide():
        pyro.sample("z", dist.Normal(0.0, 1.0))

    for est in (ELBO(), REINFORCE(), VIMCO(num_particles=3)):
        assert math.isfinite(est.loss_and_grads(model, guide))


def test_pyros_validation_of_sites_is_honoured():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
            pyro.sample("g", dist.Normal(0.0, 1.0))
            pyro.sample("obs", dist.Normal(0.0, 1.0).expand([4]).to_event(1), obs=x)

    def wrong_shape(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
            pyro.sample("g", dist.Normal(0.0, 1.0))

    def missing_site(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Normal(0.0, 1.0).expand([2]).to_event(1))

    with pytest.raises(ValueError, match="'h'"):
        ELBO().loss(model, wrong_shape, X)
    with pytest.warns(UserWarning, match="model but not guide"):
        ELBO().loss(model, missing_site, X)


def test_score_parts_of_a_partially_reparameterised_guide():
    """ShapeAugmentedGamma's rejection sampler needs a score-function correction; the
    ELBO's gradient then matches Pyro's Trace_ELBO (which uses score_parts too)."""
    x = torch.tensor([1.0, 3.0, 2.0, 5.0])

    def model(x):
        rate = pyro.sample("rate", dist.Gamma(2.0, 1.0))
        with pyro.plate("data", len(x)):
            pyro.sample("obs", dist.Poisson(rate), obs=x)

    def guide(x):
        alpha = pyro.param("alpha", torch.tensor(3.0), constraint=constraints.positive)
        pyro.sample("rate", ShapeAugmentedGamma(alpha, torch.tensor(1.0)))

    def draws(est, n):
        out = []
        for _ in range(n):
            alpha = pyro.get_param_store()._params["alpha"]
            alpha.grad = None
            est.loss_and_grads(model, guide, x)
            out.append(float(alpha.grad))
        t = torch.tensor(out)
        return float(t.mean()), float(t.std()) / math.sqrt(n)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ELBO().loss(model, guide, x)
        torch.manual_seed(0)
        (ma, sa), (mb, sb) = draws(ELBO(), 2000), draws(Trace_ELBO(), 2000)
    assert abs(ma - mb) <= Z * math.hypot(sa, sb), (ma, mb, sa, sb)


def test_reparameterised_only_estimators_refuse_at_every_entry_point():
    def model(x):
        with pyro.plate("data", x.shape[0]):
            h = pyro.sample("h", dist.Bernoulli(0.5 * torch.ones(2)).to_event(1))
            pyro.sample("obs", dist.Normal(h.sum(-1, keepdim=True), 1.0).to_event(1),
                        obs=x[:, :1])

    def guide(x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h", dist.Bernoulli(0.3 * torch.ones(2)).to_event(1))

    for entry in ("loss", "loss_and_grads", "differentiable_loss"):
        for est in (ELBO(), IWAE(num_particles=3)):
            with pytest.raises(IncompatibleEstimatorError, match="site 'h'.*REINFORCE"):
                getattr(est, entry)(model, guide, X)
    assert math.isfinite(ReweightedWakeSleep(num_particles=3).loss(model, guide, X))
