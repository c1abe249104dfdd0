"""A tiny two-layer sigmoid belief net and its recognition network, for exact checks.

``h2 (2 bits) -> h1 (2 bits) -> x (3 bits)``: 16 latent states and 8 data points, so
every expectation the wake-sleep estimators target can be computed by enumeration.
The guide runs ``x -> h1 -> h2``, so scoring it on a dream needs the dreamed ``h1``.
Shared by tests/test_wake_sleep.py and tests/test_rws.py (not a test module).
"""

from __future__ import annotations

import itertools

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm.nn import plate_size

D2, D1, DX = 2, 2, 3


def _bits(n: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=n)))


H2, H1, X = _bits(D2), _bits(D1), _bits(DX)


class TinySBN(PyroModule):
    """p(h2) p(h1 | h2) p(x | h1), all factorised Bernoulli layers."""

    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.top = nn.Parameter(torch.randn(D2, generator=g))
        self.W1 = nn.Parameter(1.5 * torch.randn(D2, D1, generator=g))
        self.b1 = nn.Parameter(torch.randn(D1, generator=g))
        self.Wx = nn.Parameter(2.0 * torch.randn(D1, DX, generator=g))
        self.bx = nn.Parameter(torch.randn(DX, generator=g))

    def forward(self, x=None, batch_size=None):
        n = plate_size(x, batch_size)
        with pyro.plate("data", n):
            h2 = pyro.sample("h2", dist.Bernoulli(logits=self.top.expand(n, D2)).to_event(1))
            h1 = pyro.sample("h1", dist.Bernoulli(logits=h2 @ self.W1 + self.b1).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=h1 @ self.Wx + self.bx).to_event(1),
                               obs=x)

    def log_joint(self) -> torch.Tensor:
        """``log p(h2, h1, x)`` for every configuration, shape ``(4, 4, 8)``."""
        lp2 = dist.Bernoulli(logits=self.top).log_prob(H2).sum(-1)                  # (4h2,)
        # (4h1, 4h2) and (8x, 4h1)
        lp1 = dist.Bernoulli(logits=H2 @ self.W1 + self.b1).log_prob(H1[:, None]).sum(-1)
        lpx = dist.Bernoulli(logits=H1 @ self.Wx + self.bx).log_prob(X[:, None]).sum(-1)
        return lp2[:, None, None] + lp1.T[:, :, None] + lpx.T[None, :, :]

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        lj = self.log_joint().reshape(16, 8)
        return torch.logsumexp(lj, 0)[x_index(x)]


class TinyGuide(PyroModule):
    """q(h1 | x) q(h2 | h1)."""

    def __init__(self, seed: int = 1):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.V1 = nn.Parameter(torch.randn(DX, D1, generator=g))
        self.c1 = nn.Parameter(torch.randn(D1, generator=g))
        self.V2 = nn.Parameter(torch.randn(D1, D2, generator=g))
        self.c2 = nn.Parameter(torch.randn(D2, generator=g))

    def forward(self, x, batch_size=None):
        with pyro.plate("data", x.shape[0]):
            h1 = pyro.sample("h1", dist.Bernoulli(logits=x @ self.V1 + self.c1).to_event(1))
            pyro.sample("h2", dist.Bernoulli(logits=h1 @ self.V2 + self.c2).to_event(1))

    def log_q(self) -> torch.Tensor:
        """``log q(h2, h1 | x)`` for every configuration, shape ``(4, 4, 8)``."""
        # (4h1, 8x) and (4h2, 4h1)
        lq1 = dist.Bernoulli(logits=X @ self.V1 + self.c1).log_prob(H1[:, None]).sum(-1)
        lq2 = dist.Bernoulli(logits=H1 @ self.V2 + self.c2).log_prob(H2[:, None]).sum(-1)
        return lq2[:, :, None] + lq1[None, :, :]


def x_index(x: torch.Tensor) -> torch.Tensor:
    """Row of ``X`` for each data point (x as bits, first bit most significant)."""
    powers = 2 ** torch.arange(DX - 1, -1, -1, dtype=x.dtype)
    return (x @ powers).long()


def flat_grad(scalar: torch.Tensor, params) -> torch.Tensor:
    """The gradient of ``scalar`` as one vector; unreached parameters give zeros."""
    params = list(params)
    grads = torch.autograd.grad(scalar, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for p, g in zip(params, grads)])


def assert_mc_close(draws: torch.Tensor, exact: torch.Tensor, *, z: float = 5.0,
                    other_se: torch.Tensor | None = None, min_signal: float = 5.0) -> None:
    """The mean of ``draws (R, P)`` equals ``exact (P,)`` within ``z`` Monte Carlo
    standard errors per coordinate (combined with ``other_se`` when ``exact`` is itself
    an estimate).  Also asserts that the check is sharp: some coordinate of ``exact``
    lies more than ``min_signal`` standard errors from zero, so a wrong gradient fails.
    """
    draws = draws.double()
    exact = exact.double()
    mean = draws.mean(0)
    se = draws.std(0) / draws.shape[0] ** 0.5
    if other_se is not None:
        se = (se**2 + other_se.double() ** 2).sqrt()
    err = (mean - exact).abs()
    tol = z * se + 1e-6
    assert (err <= tol).all(), (
        f"Monte Carlo mean differs from the target by up to {(err / (se + 1e-12)).max():.2f} "
        f"standard errors\nmean   {mean}\ntarget {exact}\nse     {se}")
    assert (exact.abs() > min_signal * se).any(), "the check is not sharp: SEs swamp the target"


def correlated_conjugate():
    """A linear-Gaussian model whose posterior has correlation -0.7: a diagonal guide
    fitted by the inclusive KL (wake-sleep, RWS) has the marginal variances diag(S),
    twice the 1 / diag(S^-1) that the exclusive KL (the ELBO) would give."""
    from ppl_dgm.models import ConjugateGaussian

    model = ConjugateGaussian(x_dim=4, z_dim=2, noise_scale=1.0)
    with torch.no_grad():
        model.W.copy_(torch.tensor([[1.0, 0.8], [0.9, 1.0], [0.7, 0.9], [0.6, 0.4]]))
    return model


def fit_guide_only(model, guide, est, x, *, steps: int, lr: float) -> None:
    """Train only the guide (the model held fixed), with a stepwise learning-rate decay."""
    model.requires_grad_(False)
    opt = torch.optim.Adam(guide.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda t: 1.0 if t < 0.6 * steps else (0.1 if t < 0.85 * steps else 0.02))
    with pyro.validation_enabled(False):
        for _ in range(steps):
            opt.zero_grad()
            est.surrogate(model, guide, x).total.backward()
            opt.step()
            sched.step()


def posterior_errors(model, guide, n: int = 500) -> tuple[float, torch.Tensor, float]:
    """On ``n`` points from the model's marginal: the largest error of the guide's mean
    in posterior standard deviations, the relative error of its variance averaged
    over points (per dimension), and the largest per-point relative variance error."""
    with torch.no_grad():
        xt = model.marginal().sample((n,))
        mean, cov = model.posterior(xt)
        d = guide.distribution(xt).base_dist
        var = cov.diagonal()
        mean_err = float(((d.loc - mean).abs() / var.sqrt()).max())
        avg_var_err = (d.scale**2).mean(0) / var - 1
        max_var_err = float((d.scale**2 / var - 1).abs().max())
    return mean_err, avg_var_err, max_var_err
