"""Deep Boltzmann machines with two hidden layers (Salakhutdinov and Hinton 2009).

The energy over binary ``x`` (D), ``h1`` (H1), ``h2`` (H2) is

    E(x, h1, h2) = -b.x - c1.h1 - c2.h2 - x W1 h1 - h1 W2 h2.

The graph is bipartite between ``h1`` and ``(x, h2)``: given ``h1``, ``x`` and ``h2`` are
independent.  So the DBM is an RBM whose "visible" layer is ``h1`` and whose "hidden"
layer is ``(x, h2)``, and as a Pyro program it factorises exactly::

    h1 ~ p(h1)                      (an RBM distribution: x and h2 summed out)
    h2 | h1 ~ Bernoulli(sigmoid(W2^T h1 + c2))
    x  | h1 ~ Bernoulli(sigmoid(W1 h1 + b))

``log Z`` of the DBM is that RBM's: exact when ``H1 <= 20`` (or ``D + H2 <= 20``), else
AIS (:meth:`DBM.log_partition`).  A block-Gibbs sweep of the RBM distribution is a full
sweep of the DBM (``(x, h2) | h1``, then ``h1 | (x, h2)``), which is what the persistent
chains of ``mf-pcd`` run.  :meth:`DBM.mean_field` gives the fixed point of the
mean-field posterior ``q(h1) q(h2)`` (the guide :class:`~ppl_dgm.guides.DBMMeanField`),
and :meth:`DBM.mean_field_bound` the variational lower bound on ``log p(x)`` of the
paper, ``-E(x, mu) + H(q) - log Z``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm import ais
from ppl_dgm.nn import as_sizes, plate_size

from ._bipartite import LogZCache, RBMDistribution, rbm_distribution

__all__ = ["DBM"]


class _DBMParameters(nn.Module):
    def __init__(self, d: int, h1: int, h2: int, init_scale: float):
        super().__init__()
        self.w1 = nn.Parameter(init_scale * torch.randn(d, h1))
        self.w2 = nn.Parameter(init_scale * torch.randn(h1, h2))
        self.b = nn.Parameter(torch.zeros(d))
        self.c1 = nn.Parameter(torch.zeros(h1))
        self.c2 = nn.Parameter(torch.zeros(h2))


def _entropy(mu: torch.Tensor) -> torch.Tensor:
    mu = mu.clamp(1e-7, 1 - 1e-7)
    return -(mu * mu.log() + (1 - mu) * (1 - mu).log()).sum(-1)


class DBM(PyroModule):
    """A two-hidden-layer deep Boltzmann machine over binary data.

    :param x_dim: visible units.  :param layers: ``(H1, H2)``.
    :param mean_field_iterations: fixed-point iterations of :meth:`mean_field`.
    :param ais_temperatures, ais_runs: AIS settings for ``log Z``.

    Example::

        model = DBM(x_dim=64, layers=(32, 16))
        fit(model, DBMMeanField.from_model(model), MeanFieldPCD(num_chains=100),
            load_digits(), steps=3000, lr=1e-3)
        model.mean_field_bound(x)           # variational lower bound, log Z by AIS
    """

    default_guide = "dbm-mean-field"

    def __init__(self, x_dim: int = 64, layers=(32, 16), *, mean_field_iterations: int = 10,
                 ais_temperatures: int = 10000, ais_runs: int = 100, burn_in: int = 200,
                 sample_steps: int = 1000, init_scale: float = 0.01):
        super().__init__()
        sizes = as_sizes(layers)
        if len(sizes) != 2 or any(h < 1 for h in sizes):
            raise ValueError(f"layers={layers!r}: this DBM has exactly two hidden layers, "
                             f"e.g. layers=(32, 16)")
        self.x_dim, self.layer_sizes = int(x_dim), sizes
        self.likelihood = "bernoulli"
        self.latent_dims = {"h1": sizes[0], "h2": sizes[1]}
        self.mean_field_iterations = int(mean_field_iterations)
        self.ais_temperatures, self.ais_runs = int(ais_temperatures), int(ais_runs)
        self.burn_in, self.sample_steps = int(burn_in), int(sample_steps)
        self.params = PyroModule[nn.ModuleList]([_DBMParameters(self.x_dim, *sizes,
                                                                init_scale)])
        self._log_z = LogZCache()
        self.register_buffer("chains", torch.zeros(0, sizes[0]), persistent=False)

    @property
    def p(self) -> _DBMParameters:
        return self.params[0]

    def h1_distribution(self, *, normalised: bool = True) -> RBMDistribution:
        """``p(h1)``: the RBM with visible ``h1`` and hidden ``(x, h2)``."""
        p = self.p
        return rbm_distribution(torch.cat([p.w1.T, p.w2], 1), p.c1, torch.cat([p.b, p.c2]),
                                burn_in=self.burn_in,
                                log_z=self._log_z_value if normalised else None)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        p = self.p
        with pyro.plate("data", plate_size(x, batch_size)):
            h1 = pyro.sample("h1", self.h1_distribution())
            pyro.sample("h2", dist.Bernoulli(logits=h1 @ p.w2 + p.c2).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=h1 @ p.w1.T + p.b).to_event(1),
                               obs=x)

    # ---------------------------------------------------------------- inference
    def energy(self, x, h1, h2) -> torch.Tensor:
        """``E(x, h1, h2)`` per row (also at mean-field values)."""
        p = self.p
        return -(x @ p.b + h1 @ p.c1 + h2 @ p.c2 + ((x @ p.w1) * h1).sum(-1)
                 + ((h1 @ p.w2) * h2).sum(-1))

    @torch.no_grad()
    def mean_field(self, x: torch.Tensor, iterations: int | None = None):
        """Fixed point ``(mu1, mu2)`` of ``mu1 = sigmoid(W1^T x + W2 mu2 + c1)``,
        ``mu2 = sigmoid(W2^T mu1 + c2)``, started bottom-up (``mu2`` from
        ``sigmoid(W1^T x + c1)``)."""
        p = self.p
        x = x.to(p.w1.dtype)
        up = x @ p.w1 + p.c1
        mu2 = torch.sigmoid(torch.sigmoid(up) @ p.w2 + p.c2)
        mu1 = torch.sigmoid(up)
        for _ in range(self.mean_field_iterations if iterations is None else iterations):
            mu1 = torch.sigmoid(up + mu2 @ p.w2.T)
            mu2 = torch.sigmoid(mu1 @ p.w2 + p.c2)
        return mu1, mu2

    @torch.no_grad()
    def mean_field_bound(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) >= -E(x, mu) + H(q) - log Z`` per row (Salakhutdinov and Hinton
        2009, eq. 5), with ``log Z`` exact or by AIS."""
        mu1, mu2 = self.mean_field(x)
        x = x.to(mu1.dtype)
        return (-self.energy(x, mu1, mu2) + _entropy(mu1) + _entropy(mu2)
                - self.log_partition().value)

    # ---------------------------------------------------------------- log Z, samples
    def log_partition(self, *, progress: bool | None = None) -> ais.LogZ:
        """``log Z`` of the DBM (exact or AIS, cached while the parameters hold)."""
        return self._log_z.get(list(self.p.parameters()), self.h1_distribution(
            normalised=False), num_temperatures=self.ais_temperatures,
            num_runs=self.ais_runs, progress=progress)

    def _log_z_value(self) -> torch.Tensor:
        w = self.p.w1
        return torch.tensor(self.log_partition().value, dtype=w.dtype, device=w.device)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, steps: int | None = None) -> torch.Tensor:
        """``n`` draws of ``x`` from persistent Gibbs chains (a device buffer) over
        ``h1``, advanced ``steps`` sweeps; ``mean=True`` gives ``P(x = 1 | h1)``."""
        d = self.h1_distribution(normalised=False)
        if self.chains.shape[0] != n:
            self.chains = d.init_chains(n).to(self.chains.dtype)
        self.chains = d.gibbs(self.chains, self.sample_steps if steps is None else steps)
        p = self.p
        probs = torch.sigmoid(self.chains @ p.w1.T + p.b)
        return probs if mean else torch.bernoulli(probs)


