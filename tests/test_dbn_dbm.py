"""Deep belief nets and deep Boltzmann machines as Pyro programs, on tiny models checked
by enumeration in float64; greedy, up-down and mean-field PCD training."""

from __future__ import annotations

import pytest
import torch
from ppl_dgm.guides import DBMMeanField, DBNGuide, EmptyGuide
from ppl_dgm.models import DBM, DBN, RBM
from pyro import poutine

from ppl_dgm.data import load_digits
from ppl_dgm.errors import IncompatibleEstimatorError
from ppl_dgm.estimators import GreedyLayerwise, MeanFieldPCD, UpDown, WakeSleep
from ppl_dgm.evaluate import evaluate
from ppl_dgm.train import fit

D = torch.float64


def _states(n: int) -> torch.Tensor:
    codes = torch.arange(2 ** n)
    return ((codes.unsqueeze(-1) >> torch.arange(n)) & 1).to(D)


def _randomise(module, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def _log_joint(model, x, latents):
    cond = poutine.condition(model, data=latents)
    tr = poutine.trace(cond).get_trace(x)
    return sum(site["fn"].log_prob(site["value"]) for site in tr.nodes.values()
               if site["type"] == "sample")


# --------------------------------------------------------------------------- DBM
def test_dbm_program_is_the_boltzmann_distribution():
    """log p(x, h1, h2) of the program = -E(x, h1, h2) - log Z, with Z summed over all
    2^(3+2+2) states by brute force; the model's own log Z is exact and equal."""
    model = _randomise(DBM(3, (2, 2)).double())
    x, h1, h2 = _states(3), _states(2), _states(2)
    grid = torch.cartesian_prod(torch.arange(8), torch.arange(4), torch.arange(4))
    xs, h1s, h2s = x[grid[:, 0]], h1[grid[:, 1]], h2[grid[:, 2]]
    with torch.no_grad():
        energy = model.energy(xs, h1s, h2s)
        log_z = float(torch.logsumexp(-energy, 0))
        assert model.log_partition().value == pytest.approx(log_z, abs=1e-10)
        lj = _log_joint(model, xs, {"h1": h1s, "h2": h2s})
        assert torch.allclose(lj, -energy - log_z, atol=1e-10)
        # the mean-field bound is a lower bound on the exact log p(x)
        log_px = torch.logsumexp((-energy - log_z).reshape(8, 16), 1)
        assert torch.all(model.mean_field_bound(x) <= log_px + 1e-9)
        assert torch.all(model.mean_field_bound(x) >= log_px - 1.0)


def test_dbm_mean_field_data_term_is_minus_the_energy_at_the_means():
    """The program's unnormalised log density at the guide's means is -E(x, mu1, mu2)
    (the softplus terms of the h1-marginal cancel), so mf-pcd's data term is the
    paper's mean-field data term."""
    model = _randomise(DBM(4, (3, 2)).double(), seed=1)
    guide = DBMMeanField.from_model(model)
    x = _states(4)[[3, 9, 14]]
    est = MeanFieldPCD(num_chains=10)
    est.prepare(model, guide, x)
    parts = est.surrogate(model, guide, x).parts
    mu1, mu2 = model.mean_field(x)
    params = list(model.parameters())
    got = torch.autograd.grad(parts["data"], params)
    want = torch.autograd.grad(model.energy(x, mu1, mu2).sum(), params)
    for g, w in zip(got, want):
        assert torch.allclose(g, w, atol=1e-10)


def test_dbm_trains_with_mean_field_pcd_and_reports_an_ais_bound():
    data = load_digits()
    torch.manual_seed(0)
    model = DBM(64, (24, 8), ais_temperatures=300, ais_runs=20)
    guide = DBMMeanField.from_model(model)
    fit(model, guide, MeanFieldPCD(num_chains=50), data, steps=200, lr=3e-3, device="cpu")
    with pytest.warns(UserWarning, match="AIS"):
        ev = evaluate(model, guide, data.test, num_samples=20, ks=(1,), repeats=1)
    assert model.log_partition().method == "ais"
    assert -ev.summary["is"] < 30.0


# --------------------------------------------------------------------------- DBN
def test_dbn_program_is_normalised_and_the_guide_starts_tied():
    model = _randomise(DBN(3, (2, 3)).double())
    x, h1 = _states(3), _states(2)
    grid = torch.cartesian_prod(torch.arange(8), torch.arange(4))
    with torch.no_grad():
        lj = _log_joint(model, x[grid[:, 0]], {"h1": h1[grid[:, 1]]})
    assert float(torch.logsumexp(lj, 0)) == pytest.approx(0.0, abs=1e-10)
    guide = DBNGuide.from_model(model)
    r = model.rbms[0]
    assert torch.allclose(guide.layer_logits(0, x), x @ r.weight + r.hidden_bias)
    guide.untie()
    with torch.no_grad():
        r.weight.add_(1.0)                         # the untied guide keeps its copy
    assert not torch.allclose(guide.layer_logits(0, x), x @ r.weight + r.hidden_bias)


def test_greedy_trains_only_its_layer_and_updown_routes_gradients():
    data = load_digits()
    torch.manual_seed(0)
    model = DBN(64, (16, 8))
    guide = DBNGuide.from_model(model)
    top = [p.detach().clone() for p in model.rbms[1].parameters()]
    fit(model, guide, GreedyLayerwise(layer=0), data, steps=20, lr=1e-2, device="cpu")
    assert all(torch.equal(a, b) for a, b in zip(top, model.rbms[1].parameters()))
    x = data.train[:20]
    est = UpDown(k=1)
    est.prepare(model, guide, x)                   # unties the guide
    assert float(guide.untied) == 1.0
    parts = est.surrogate(model, guide, x).parts
    g_params, m_params = list(guide.parameters()), list(model.parameters())
    for name, reaches, spared in (("sleep_guide", g_params, m_params),
                                  ("data", m_params, g_params), ("model", m_params, g_params)):
        grads = torch.autograd.grad(parts[name], reaches + spared, allow_unused=True,
                                    retain_graph=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads[:len(reaches)]), name
        assert all(g is None or g.abs().sum() == 0 for g in grads[len(reaches):]), name


def test_dbn_refusals():
    data = load_digits()
    model = DBN(64, (16, 8))
    with pytest.raises(IncompatibleEstimatorError, match="'h1'.*energy-based.*updown"):
        fit(model, DBNGuide.from_model(model), WakeSleep(), data, steps=1)
    with pytest.raises(IncompatibleEstimatorError, match="stack of RBMs"):
        fit(RBM(64, 8), EmptyGuide(), GreedyLayerwise(), data, steps=1)
    with pytest.raises(ValueError, match="layers 0..1"):
        fit(model, DBNGuide.from_model(model), GreedyLayerwise(layer=2), data, steps=1)
    with pytest.raises(ValueError, match="at least two"):
        DBN(64, (16,))
