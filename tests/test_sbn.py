"""Sigmoid belief net and Helmholtz recognition network: programs, exact densities."""

import itertools
import math

import pytest
import torch
from ppl_dgm.guides import HelmholtzGuide
from ppl_dgm.models import SigmoidBeliefNet
from ppl_dgm.models.sbn import TooManyLatentsError, make_synthetic
from pyro import poutine

from ppl_dgm.evaluate import evaluate, exact_log_prob
from ppl_dgm.registry import build_guide, build_model, default_guide


def _traces(model, guide, x):
    gt = poutine.trace(guide).get_trace(x)
    mt = poutine.trace(poutine.replay(model, trace=gt)).get_trace(x)
    gt.compute_log_prob(), mt.compute_log_prob()
    return mt, gt


@pytest.mark.parametrize("layers", [(3,), (2, 3), (2, 1, 2)], ids=str)
def test_program_densities_match_log_joint(layers):
    model = SigmoidBeliefNet(x_dim=5, layers=layers).double()
    guide = HelmholtzGuide.from_model(model, hidden=(4,)).double()
    x = torch.bernoulli(torch.full((7, 5), 0.5, dtype=torch.float64))
    mt, gt = _traces(model, guide, x)
    latents = {s: gt.nodes[s]["value"] for s in model.sites}
    assert [n for n in gt.nodes if n.startswith("h")] == list(model.sites)
    for s, h in zip(model.sites, layers):
        assert latents[s].shape == (7, h)
    log_p = sum(mt.nodes[s]["log_prob"] for s in (*model.sites, "x"))
    log_q = sum(gt.nodes[s]["log_prob"] for s in model.sites)
    torch.testing.assert_close(log_p, model.log_joint(x, latents))
    torch.testing.assert_close(log_q, guide.log_prob(x, latents))


def test_model_generates_and_samples():
    model = SigmoidBeliefNet(x_dim=6, layers=(4, 2))
    tr = poutine.trace(model).get_trace(None, batch_size=3)
    assert tr.nodes["x"]["value"].shape == (3, 6)
    assert tr.nodes["h2"]["value"].shape == (3, 2)
    x, latents = model.sample(10, return_latents=True)
    assert x.shape == (10, 6) and set(latents) == {"h1", "h2"}
    assert bool(((x == 0) | (x == 1)).all())
    mean = model.sample(5, mean=True)
    assert bool(((mean > 0) & (mean < 1)).all())


def test_exact_log_prob_is_normalised_and_matches_brute_force():
    torch.manual_seed(1)
    model = SigmoidBeliefNet.random(4, (2, 2), weight_scale=1.5, seed=3).double()
    all_x = torch.tensor(list(itertools.product([0.0, 1.0], repeat=4)), dtype=torch.float64)
    lp = model.log_prob(all_x)
    # sums to one over every possible data vector
    assert abs(float(torch.logsumexp(lp, 0))) < 1e-10
    # matches a direct sum of log_joint over all 16 configurations
    brute = []
    for bits in itertools.product([0.0, 1.0], repeat=4):
        b = torch.tensor(bits, dtype=torch.float64)
        brute.append(model.log_joint(all_x, {"h1": b[:2].expand(16, 2),
                                              "h2": b[2:].expand(16, 2)}))
    torch.testing.assert_close(lp, torch.logsumexp(torch.stack(brute), 0))
    # chunking changes nothing
    torch.testing.assert_close(lp, model.log_prob(all_x, block_elements=3))
    # the posterior is normalised and consistent with Bayes' rule
    post = model.posterior(all_x[:3])
    torch.testing.assert_close(post.sum(-1), torch.ones(3, dtype=torch.float64))


def test_exact_log_prob_at_the_limit_and_beyond():
    model = SigmoidBeliefNet(x_dim=3, layers=(12, 8))
    assert model.num_latents == 20 and model.can_enumerate
    lp = model.log_prob(torch.tensor([[0.0, 1.0, 1.0]]))
    assert lp.shape == (1,) and bool(torch.isfinite(lp).all())
    big = SigmoidBeliefNet(x_dim=3, layers=(12, 9))
    assert not big.can_enumerate
    with pytest.raises(TooManyLatentsError, match=r"H=21 latent units.*limit of 20") as e:
        big.log_prob(torch.zeros(1, 3))
    assert "importance_log_likelihood" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_evaluate_reports_exact_only_when_enumerable():
    model = SigmoidBeliefNet(x_dim=5, layers=(3,))
    guide = HelmholtzGuide.from_model(model)
    x = torch.bernoulli(torch.full((4, 5), 0.5))
    res = evaluate(model, guide, x, num_samples=200, ks=(1, 5), repeats=1)
    assert "exact" in res.summary and res.per_point["exact"].shape == (4,)
    # the bound ladder sits below the exact value
    assert res.summary["elbo"] <= res.summary["exact"] + 1e-5
    big = SigmoidBeliefNet(x_dim=5, layers=(21,))
    assert exact_log_prob(big, x) is None
    res = evaluate(big, HelmholtzGuide.from_model(big), x, num_samples=50, ks=(1,), repeats=1)
    assert "exact" not in res.summary


def test_synthetic_data_is_reproducible_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a = make_synthetic(x_dim=8, layers=(3,), num_train=50, num_test=10, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())
    b = make_synthetic(x_dim=8, layers=(3,), num_train=50, num_test=10, seed=5)
    assert torch.equal(a.train, b.train) and torch.equal(a.test, b.test)
    assert a.train.shape == (50, 8) and a.test.shape == (10, 8)
    for p, q in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(p, q)
    # the known parameters explain the data better than a fresh net does
    fresh = SigmoidBeliefNet(x_dim=8, layers=(3,))
    assert a.model.log_prob(a.test).mean() > fresh.log_prob(a.test).mean()


def test_guide_from_model_and_registry():
    model = build_model("sbn", x_dim=64, options={"layers": "10,5"})
    assert model.latent_dims == {"h1": 10, "h2": 5}
    assert default_guide("sbn") == "helmholtz"
    guide = build_guide("helmholtz", model, options={"hidden": 32})
    assert guide.sites == ("h1", "h2") and guide.layer_sizes == (10, 5)
    assert guide.nets[0][0].in_features == 64 and guide.nets[1][-1].out_features == 5
    with pytest.raises(ValueError, match="latent_dims"):
        HelmholtzGuide.from_model(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="needs observed x"):
        guide(None)
    with pytest.raises(ValueError, match="layers"):
        SigmoidBeliefNet(x_dim=4, layers=())


def test_no_pyro_params_registered_per_step():
    import pyro
    model = SigmoidBeliefNet(x_dim=5, layers=(3, 2))
    guide = HelmholtzGuide.from_model(model)
    _traces(model, guide, torch.zeros(2, 5))
    assert len(pyro.get_param_store()) == 0
    assert math.isclose(sum(p.numel() for p in model.parameters()),
                        3 * 5 + 5 + 2 * 3 + 3 + 2)
