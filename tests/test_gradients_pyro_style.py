"""Estimator gradients against analytic ones, on programs written the ordinary Pyro way.

1. The ELBO family with non-reparameterised sites, a subsampled plate and
   ``poutine.scale``: a Normal-Normal model whose expected ELBO has a closed form, so
   its gradient with respect to every parameter is exact.  The mean of R gradient draws
   must lie within Z = 4.5 standard errors of it, coordinate by coordinate (Pyro's own
   ``test_subsample_gradient`` uses 1000 particles and a fixed precision of 0.333; the
   tolerance here is derived from the Monte Carlo error of the draws instead).
2. Score-function estimators on a model whose large plate of local non-reparameterised
   sites (200,000 x 2) sits beside global non-reparameterised sites: the learning signal
   of each local site must hold only its own slice's downstream costs, as Pyro's
   ``TraceGraph_ELBO`` does, or the gradient of the local guide parameter drowns in the
   other slices' and the global sites' costs.
"""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.testing.fakes import NonreparameterizedNormal
from pyro.infer import TraceGraph_ELBO

from ppl_dgm.estimators import ELBO, NVIL, REINFORCE

Z = 4.5
N, B, SCALE = 6, 2, 0.5
X = torch.tensor([0.3, -1.2, 2.0, 0.7, -0.4, 1.5], dtype=torch.float64)


def _programs(reparameterised: bool):
    Q = dist.Normal if reparameterised else NonreparameterizedNormal

    def model(x):
        prior = pyro.param("prior_loc", torch.tensor(0.2, dtype=torch.float64))
        with pyro.plate("data", N, subsample_size=B) as idx:
            z = pyro.sample("z", dist.Normal(prior, 1.0))
            with poutine.scale(scale=SCALE):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x[idx])

    def guide(x):
        a = pyro.param("a", torch.tensor(0.4, dtype=torch.float64))
        c = pyro.param("c", torch.tensor(-0.1, dtype=torch.float64))
        log_sd = pyro.param("log_sd", torch.tensor(-0.3, dtype=torch.float64))
        with pyro.plate("data", N, subsample_size=B) as idx:
            pyro.sample("z", Q(a * x[idx] + c, log_sd.exp()))

    return model, guide


def _exact_grads(names):
    """The gradient of the full-data expected ELBO (closed form for Normal-Normal)."""
    store = pyro.get_param_store()
    p = {n: store[n].detach().clone().requires_grad_(True) for n in names}
    m = p["a"] * X + p["c"]
    var = torch.exp(2 * p["log_sd"])
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    lik = -half_log_2pi - 0.5 * ((X - m) ** 2 + var)
    prior = -half_log_2pi - 0.5 * ((m - p["prior_loc"]) ** 2 + var)
    entropy = 0.5 * torch.log(2 * math.pi * math.e * var)
    elbo = (SCALE * lik + prior + entropy).sum()
    grads = torch.autograd.grad(elbo, [p[n] for n in names])
    return torch.stack([-g for g in grads])        # of the loss


def _draws(est, model, guide, names, n):
    store = pyro.get_param_store()
    out = []
    for _ in range(n):
        for name in names:
            store[name].grad = None
        loss = est.differentiable_loss(model, guide, X)
        grads = torch.autograd.grad(loss, [store._params[k] for k in names],
                                    allow_unused=True)
        out.append(torch.stack([torch.zeros(()) if g is None else g for g in grads]))
    return torch.stack(out)


@pytest.mark.parametrize("estimator,reparameterised", [
    (lambda: ELBO(num_particles=8), True),
    (lambda: REINFORCE(num_particles=8, baseline=None), False),
    (lambda: REINFORCE(num_particles=8), False),
    (lambda: NVIL(num_particles=8, variance_normalization=False), False),
], ids=["elbo-reparam", "reinforce", "reinforce-ema", "nvil-no-normalisation"])
def test_subsampled_scaled_gradient_matches_the_closed_form(estimator, reparameterised):
    torch.set_default_dtype(torch.float64)
    try:
        model, guide = _programs(reparameterised)
        est = estimator()
        est.loss(model, guide, X)                 # creates the parameters
        names = ["prior_loc", "a", "c", "log_sd"]
        draws = _draws(est, model, guide, names, 1500)
        exact = _exact_grads(names)
        mean, se = draws.mean(0), draws.std(0) / math.sqrt(draws.shape[0])
        assert bool(((mean - exact).abs() <= Z * se + 1e-9).all()), \
            ((mean - exact) / se, mean, exact)
    finally:
        torch.set_default_dtype(torch.float32)


# ---------------------------------------------------------------------- local and global
M = 200_000
_g = torch.Generator().manual_seed(0)
XL = torch.randn(M, 2, generator=_g)


def local_global_model(x):
    for j in range(3):                           # global nuisance sites
        pyro.sample(f"g{j}", dist.Normal(0.0, 1.0))
    with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", 2, dim=-1):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def local_global_guide(x):
    phi = pyro.param("phi", torch.tensor(0.25))
    for j in range(3):
        pyro.sample(f"g{j}", NonreparameterizedNormal(pyro.param(f"m{j}", torch.tensor(0.5)),
                                                      1.0))
    with pyro.plate("rows", x.shape[0], dim=-2), pyro.plate("cols", 2, dim=-1):
        pyro.sample("z", NonreparameterizedNormal(phi, 1.0))


def _phi_grad(est, draws):
    phi = pyro.get_param_store()._params["phi"]
    out = []
    for _ in range(draws):
        phi.grad = None
        est.loss_and_grads(local_global_model, local_global_guide, XL)
        out.append(float(phi.grad) / XL.numel())   # per local site
    return torch.tensor(out)


@pytest.mark.parametrize("estimator", [lambda: REINFORCE(baseline=None),
                                        lambda: NVIL(variance_normalization=False),
                                        lambda: TraceGraph_ELBO()],
                         ids=["reinforce", "nvil", "pyro-tracegraph"])
def test_local_signals_beside_global_sites(estimator):
    """d(-ELBO)/d phi per local site is exactly 2 phi - mean(x) (about 0.5): the score
    term of each z holds its own slice's costs, not the other 399,999 nor the globals'."""
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    est = estimator()
    est.loss(local_global_model, local_global_guide, XL)
    exact = 2 * 0.25 - float(XL.mean())
    draws = _phi_grad(est, 6)
    mean, se = float(draws.mean()), float(draws.std()) / math.sqrt(len(draws))
    assert abs(mean - exact) <= Z * se + 1e-4, (mean, exact, se)
    assert abs(mean - exact) < 0.06          # the tolerance Pyro's TraceGraph_ELBO meets
