"""MMD^2 statistics (biased V, unbiased U) against closed forms, and GMMN training."""

import math

import pytest
import torch
from ppl_dgm.guides import Discriminator
from ppl_dgm.models import Generator
from pyro import poutine

from ppl_dgm.estimators import MMD
from ppl_dgm.estimators.mmd import GMMN_MNIST_SIGMAS
from ppl_dgm.kernels import gaussian_kernel, median_distance, mmd2
from ppl_dgm.train import StepFunction, fit

SIGMAS = (0.5, 1.0, 2.0)


def expected_kernel(mu, var, sigmas=SIGMAS):
    """E k(X, Y) for X - Y ~ N(mu, var) in 1-D: sum_s s/sqrt(s^2+var) exp(-mu^2/(2(s^2+var)))."""
    return sum(s / math.sqrt(s * s + var) * math.exp(-mu * mu / (2 * (s * s + var)))
               for s in sigmas)


def test_kernel_matches_direct_formula():
    a, b = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    k = gaussian_kernel(a, b, SIGMAS)
    d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
    direct = sum(torch.exp(-d2 / (2 * s * s)) for s in SIGMAS)
    assert torch.allclose(k, direct, atol=1e-12)
    assert torch.isclose(median_distance(torch.tensor([[0.0], [1.0], [3.0]])), torch.tensor(2.0))
    assert len(GMMN_MNIST_SIGMAS) == 6 and math.isclose(GMMN_MNIST_SIGMAS[0] ** 2, 2.0)


def test_statistics_on_identical_and_small_samples():
    x = torch.randn(10, 2)
    assert float(mmd2(x, x, SIGMAS)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        mmd2(x[:1], x, SIGMAS, unbiased=True)


def test_unbiased_and_biased_means_match_closed_forms():
    """P = N(0, 1), Q = N(1, 1.5^2) in 1-D.  Over R = 400 draws of n = m = 20 points,
    the mean U-statistic equals the population MMD^2 and the mean V-statistic equals
    MMD^2 + (k(0) - E k(X,X'))/n + (k(0) - E k(Y,Y'))/m, within 4.5 standard errors."""
    g = torch.Generator().manual_seed(0)
    s_p, s_q, mu = 1.0, 1.5, 1.0
    exx = expected_kernel(0.0, 2 * s_p**2)
    eyy = expected_kernel(0.0, 2 * s_q**2)
    exy = expected_kernel(mu, s_p**2 + s_q**2)
    population = exx + eyy - 2 * exy
    n = m = 20
    k0 = float(len(SIGMAS))
    v_mean = population + (k0 - exx) / n + (k0 - eyy) / m
    u, v = [], []
    for _ in range(400):
        x = torch.randn(n, 1, generator=g, dtype=torch.float64) * s_p
        y = mu + torch.randn(m, 1, generator=g, dtype=torch.float64) * s_q
        u.append(float(mmd2(x, y, SIGMAS, unbiased=True)))
        v.append(float(mmd2(x, y, SIGMAS)))
    u, v = torch.tensor(u), torch.tensor(v)
    se_u, se_v = u.std() / 20.0, v.std() / 20.0
    assert abs(float(u.mean()) - population) < 4.5 * float(se_u)
    assert abs(float(v.mean()) - v_mean) < 4.5 * float(se_v)
    # the bias of V is many standard errors away, so the test can tell them apart
    assert (v_mean - population) > 6 * float(se_v)


def test_surrogate_is_mmd_of_generated_and_real_batches():
    torch.manual_seed(0)
    gen = Generator(x_dim=2, z_dim=2, hidden=(8,), output="identity").double()
    x = torch.randn(6, 2, dtype=torch.float64)
    z = torch.randn(6, 2, dtype=torch.float64)
    for unbiased in (False, True):
        est = MMD(sigmas=SIGMAS, unbiased=unbiased)
        parts = est.surrogate(poutine.condition(gen, data={"z": z}), None, x)
        ref = mmd2(gen.generate(z), x, SIGMAS, unbiased=unbiased)
        assert torch.isclose(parts.total, ref)
        assert torch.isclose(parts.metrics["objective"], -ref)
    # the default bandwidths follow the median distance of the real batch
    est = MMD(median_multiples=(1.0,))
    assert torch.allclose(est.bandwidths(x).double(), median_distance(x))


def test_bad_options():
    with pytest.raises(ValueError, match="positive"):
        MMD(sigmas=[1.0, -2.0])
    with pytest.raises(ValueError, match="num_generated"):
        MMD(num_generated=1)


@pytest.mark.parametrize("unbiased", [False, True], ids=["V", "U"])
def test_gmmn_moves_generator_to_mixture(unbiased):
    """GMMN on a 3-component 2-D mixture: MMD^2 (fixed bandwidths, 1000 samples vs 1000
    held-out points) falls by a factor of at least 20 in 200 steps (measured: 128x V,
    125x U)."""
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([[0.0, 1.0], [-0.87, -0.5], [0.87, -0.5]])

    def mixture(n):
        return centers[torch.randint(0, 3, (n,), generator=g)] + 0.3 * torch.randn(
            n, 2, generator=g)

    data, held = mixture(1024), mixture(1000)
    torch.manual_seed(0)
    gen = Generator(x_dim=2, z_dim=2, hidden=(32, 32), output="identity")
    sig = [0.25, 0.5, 1.0, 2.0]
    with torch.no_grad():
        before = float(mmd2(gen.sample(1000), held, sig, unbiased=True))
    fit(gen, Discriminator(x_dim=2, hidden=(4,)), MMD(unbiased=unbiased), data, steps=200,
        batch_size=128, lr=3e-3, device="cpu", log_every=200)
    with torch.no_grad():
        after = float(mmd2(gen.sample(1000), held, sig, unbiased=True))
    assert after < before / 20, (before, after)


def test_mmd_leaves_the_guide_untouched():
    gen, disc = Generator(x_dim=2, z_dim=2, output="identity"), Discriminator(x_dim=2)
    opt = torch.optim.Adam([{"params": list(gen.parameters()), "name": "model"},
                            {"params": list(disc.parameters()), "name": "guide"}])
    before = [p.detach().clone() for p in disc.parameters()]
    StepFunction(gen, disc, MMD(), opt)(torch.randn(16, 2), 0)
    assert all(torch.equal(a, b) for a, b in zip(before, disc.parameters()))
