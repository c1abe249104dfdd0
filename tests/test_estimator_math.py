"""The estimators' pure math, called directly, and DReG-RWS against reweighted wake-sleep.

Monte Carlo comparisons use paired draws (both estimators on the same samples) and
``Z = 4.5`` standard errors of the paired difference per coordinate.
"""

import math

import pytest
import torch
from ppl_dgm.guides import GaussianEncoder
from ppl_dgm.models import ConjugateGaussian

from ppl_dgm.estimators import IWAE, DRegRWS, ReweightedWakeSleep
from ppl_dgm.estimators._weights import (
    dreg_factors,
    effective_sample_size,
    log_mean_exp,
    normalized_weights,
    weighted_log_w,
)
from ppl_dgm.estimators.elbo import elbo_objective
from ppl_dgm.estimators.iwae import iwae_bound, iwae_dreg_surrogate
from ppl_dgm.estimators.nvil import nvil_site_terms

Z = 4.5


def _log_w(seed=0, k=6, p=4):
    g = torch.Generator().manual_seed(seed)
    return (3.0 * torch.randn(k, p, generator=g, dtype=torch.float64)).requires_grad_(True)


def test_elbo_objective_is_the_particle_mean():
    log_w = _log_w()
    out = elbo_objective(log_w)
    assert torch.allclose(out, log_w.mean(0))
    out.sum().backward()
    assert torch.allclose(log_w.grad, torch.full_like(log_w, 1 / log_w.shape[0]))


def test_iwae_bound_matches_brute_force_and_is_stable():
    log_w = _log_w()
    brute = torch.log(torch.exp(log_w.detach()).mean(0))
    assert torch.allclose(iwae_bound(log_w), brute)
    shifted = log_w.detach() + 1000.0           # exp overflows; the bound must not
    assert torch.allclose(iwae_bound(shifted), brute + 1000.0)
    assert torch.allclose(log_mean_exp(log_w.detach(), 0), brute)
    # its gradient with respect to log w is the normalised weights
    iwae_bound(log_w).sum().backward()
    assert torch.allclose(log_w.grad, normalized_weights(log_w))


def test_iwae_bound_rises_with_k_to_log_mean():
    torch.manual_seed(0)
    log_w = torch.randn(2**16, dtype=torch.float64)
    # 2^16 / k points with k particles each
    bounds = [float(iwae_bound(log_w.reshape(k, -1)).mean()) for k in (1, 4, 64)]
    assert bounds[0] < bounds[1] < bounds[2] < 0.5 + 1e-9      # log E[w] = 1/2 for N(0, 1)


def test_dreg_surrogate_and_factors():
    log_w = _log_w(1)
    w = normalized_weights(log_w)
    assert torch.allclose(w.sum(0), torch.ones(w.shape[1], dtype=w.dtype))
    assert torch.allclose(dreg_factors(log_w, "iwae"), w)
    assert torch.allclose(dreg_factors(log_w, "rws"), 1 - w)
    assert not dreg_factors(log_w, "rws").requires_grad
    with pytest.raises(ValueError, match="target"):
        dreg_factors(log_w, "vimco")
    iwae_dreg_surrogate(log_w).sum().backward()
    assert torch.allclose(log_w.grad, w)              # the weights carry no gradient
    assert torch.allclose(weighted_log_w(log_w.detach()), (w * log_w.detach()).sum(0))
    ess = effective_sample_size(log_w)
    assert bool(((ess >= 1 - 1e-12) & (ess <= log_w.shape[0] + 1e-12)).all())


def test_nvil_site_terms_route_and_scale():
    signal = torch.tensor([[2.0, -1.0, 4.0]], dtype=torch.float64)
    log_q = torch.tensor([[0.5, 0.2, -0.3]], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    c, scale = torch.tensor(0.5, dtype=torch.float64), torch.tensor(2.0, dtype=torch.float64)
    terms = nvil_site_terms(signal, log_q, b, c, scale)
    expected = (signal - b.detach() - c) / scale
    assert torch.allclose(terms.learning, expected) and not terms.learning.requires_grad
    terms.score.sum().backward(retain_graph=True)
    assert torch.allclose(log_q.grad, expected) and b.grad is None
    log_q.grad = None
    terms.baseline_loss.sum().backward()
    assert log_q.grad is None
    assert torch.allclose(b.grad, -2 * (signal - c - b.detach()))
    plain = nvil_site_terms(signal, log_q, None, 0.0, 1.0)
    assert plain.baseline_loss is None and torch.allclose(plain.learning, signal)


# ----------------------------------------------------------------------------- DReG-RWS
@pytest.fixture
def conjugate():
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(1)
        model = ConjugateGaussian(x_dim=3, z_dim=2, noise_scale=0.7, seed=3)
        guide = GaussianEncoder(3, 2, hidden=())
        with torch.no_grad():
            for p in guide.parameters():
                p.normal_(0.0, 0.3)
        yield model, guide, model.sample(4)
    finally:
        torch.set_default_dtype(torch.float32)


def _grads(estimator, model, guide, x, seed):
    torch.manual_seed(seed)
    params = [*model.parameters(), *guide.parameters()]
    for p in params:
        p.grad = None
    estimator.surrogate(model, guide, x).total.backward()
    flat = [p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel())
            for p in params]
    n_model = sum(p.numel() for p in model.parameters())
    g = torch.cat(flat)
    return g[:n_model], g[n_model:]


@pytest.mark.parametrize("k", [2, 8])
def test_dreg_rws_has_the_wake_phi_update_in_expectation(conjugate, k):
    model, guide, x = conjugate
    dreg, rws = DRegRWS(num_particles=k), ReweightedWakeSleep(num_particles=k)
    diffs, var_dreg, var_rws = [], [], []
    for seed in range(1500):
        m_d, g_d = _grads(dreg, model, guide, x, seed)
        m_r, g_r = _grads(rws, model, guide, x, seed)
        # the same samples: the model's update is identical
        assert torch.allclose(m_d, m_r, atol=1e-10), seed
        diffs.append(g_d - g_r)
        var_dreg.append(g_d)
        var_rws.append(g_r)
    d = torch.stack(diffs)
    se = d.std(0) / math.sqrt(d.shape[0])
    assert bool((d.mean(0).abs() <= Z * se + 1e-12).all()), (d.mean(0).abs() / se).max()
    # the DReG form has no score term: its guide gradient varies less (Tucker et al.)
    assert float(torch.stack(var_dreg).var(0).sum()) < float(torch.stack(var_rws).var(0).sum())


def test_dreg_rws_refuses_discrete_latents_and_one_particle():
    with pytest.raises(ValueError, match="num_particles >= 2"):
        DRegRWS(num_particles=1)
    assert DRegRWS.needs_reparam and not DRegRWS.handles_discrete_latents


def test_iwae_dreg_loss_needs_no_gradient_machinery(conjugate):
    model, guide, x = conjugate
    est = IWAE(num_particles=4, dreg=True)
    with torch.no_grad():
        value = est.surrogate(model, guide, x).metrics["objective"]
    assert math.isfinite(float(value))
