"""Bipartite energy models as Pyro distributions: the building block of RBM, DBN and DBM.

:class:`BernoulliRBMDistribution` and :class:`GaussianRBMDistribution` are Pyro
distributions over the visible vector ``v`` of an RBM, with the hidden layer summed
out: ``log p(v) = -F(v) - log Z``.  They implement
:class:`ppl_dgm.protocol.EnergyBased`: ``free_energy``, block-Gibbs ``gibbs`` and
``init_chains``, and ``unnormalised()`` (``log_prob = -F(v)``, what estimators use).
``log Z`` comes from a zero-argument callable given by the model, which caches it
(:class:`LogZCache`) until the parameters change.  ``sample()`` runs ``burn_in`` Gibbs
sweeps from random states, so a program that contains the site generates data too.

:class:`RBMLayer` holds the weights and biases of one bipartite layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import nn

from ppl_dgm import ais

__all__ = ["BernoulliRBMDistribution", "GaussianRBMDistribution", "LogZCache", "RBMLayer",
           "rbm_distribution"]


class RBMLayer(nn.Module):
    """Weights ``(visible, hidden)``, visible and hidden biases of one RBM.

    Weights start ``N(0, init_scale^2)`` (Hinton's practical guide: 0.01), biases 0."""

    def __init__(self, visible: int, hidden: int, *, init_scale: float = 0.01):
        super().__init__()
        if int(visible) < 1 or int(hidden) < 1:
            raise ValueError(f"an RBM layer needs positive sizes, got visible={visible}, "
                             f"hidden={hidden}")
        self.weight = nn.Parameter(init_scale * torch.randn(int(visible), int(hidden)))
        self.visible_bias = nn.Parameter(torch.zeros(int(visible)))
        self.hidden_bias = nn.Parameter(torch.zeros(int(hidden)))


class RBMDistribution(TorchDistribution):
    """``p(v) = exp(-F(v)) / Z`` of an RBM; see the module docstring.

    :param weight, visible_bias, hidden_bias: the RBM's parameters (differentiable).
    :param log_z: a zero-argument callable returning ``log Z`` as a float or 0-dim
        tensor; None for the unnormalised distribution (``log_prob = -F(v)``).
    :param burn_in: Gibbs sweeps of :meth:`sample` from random states.
    """

    arg_constraints: dict = {}
    has_rsample = False
    support = constraints.independent(constraints.boolean, 1)
    visible_kind = "bernoulli"

    def __init__(self, weight: torch.Tensor, visible_bias: torch.Tensor,
                 hidden_bias: torch.Tensor, *, log_z: Callable[[], object] | None = None,
                 burn_in: int = 200, batch_shape: Sequence[int] = ()):
        self.weight, self.visible_bias, self.hidden_bias = weight, visible_bias, hidden_bias
        self._log_z = log_z
        self.burn_in = int(burn_in)
        super().__init__(torch.Size(batch_shape), torch.Size([weight.shape[0]]),
                         validate_args=False)

    def _new(self, *, batch_shape=None, log_z="same") -> RBMDistribution:
        return type(self)(self.weight, self.visible_bias, self.hidden_bias,
                          log_z=self._log_z if log_z == "same" else log_z,
                          burn_in=self.burn_in,
                          batch_shape=self.batch_shape if batch_shape is None else batch_shape)

    # ---------------------------------------------------------------- EnergyBased
    @property
    def normalised(self) -> bool:
        return self._log_z is not None

    def unnormalised(self) -> RBMDistribution:
        return self._new(log_z=None)

    def expand(self, batch_shape, _instance=None) -> RBMDistribution:
        return self._new(batch_shape=torch.Size(batch_shape))

    def free_energy(self, value: torch.Tensor) -> torch.Tensor:
        return ais.free_energy(value.to(self.weight.dtype), self.weight, self.visible_bias,
                               self.hidden_bias, self.visible_kind)

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(v.to(self.weight.dtype) @ self.weight + self.hidden_bias)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """``E[v | h]``: probabilities (Bernoulli) or means (Gaussian)."""
        return torch.sigmoid(self.visible_bias + h @ self.weight.T)

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        return torch.bernoulli(self.visible_mean(h))

    @torch.no_grad()
    def gibbs(self, value: torch.Tensor, steps: int = 1) -> torch.Tensor:
        """``steps`` block-Gibbs sweeps ``v -> h -> v`` from ``value`` (no gradient)."""
        v = value.detach().to(self.weight.dtype)
        for _ in range(int(steps)):
            v = self.sample_visible(torch.bernoulli(self.hidden_probs(v)))
        return v

    @torch.no_grad()
    def init_chains(self, n: int) -> torch.Tensor:
        w = self.weight
        return torch.bernoulli(torch.full((int(n), w.shape[0]), 0.5, device=w.device,
                                          dtype=w.dtype))

    # ---------------------------------------------------------------- Distribution
    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        lp = -self.free_energy(value)
        if self._log_z is not None:
            log_z = self._log_z()
            lp = lp - (log_z if isinstance(log_z, torch.Tensor) else float(log_z))
        shape = torch.broadcast_shapes(lp.shape, self.batch_shape)
        return lp.expand(shape)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        v = self.gibbs(self.init_chains(shape.numel()), self.burn_in)
        return v.reshape(shape + self.event_shape)


class BernoulliRBMDistribution(RBMDistribution):
    """Binary visible units (the classic RBM)."""

    visible_kind = "bernoulli"


class GaussianRBMDistribution(RBMDistribution):
    """Real visible units with unit variance: ``v | h ~ N(b + W h, I)``."""

    visible_kind = "gaussian"
    support = constraints.independent(constraints.real, 1)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        return self.visible_bias + h @ self.weight.T

    def sample_visible(self, h: torch.Tensor) -> torch.Tensor:
        mean = self.visible_mean(h)
        return mean + torch.randn_like(mean)

    @torch.no_grad()
    def init_chains(self, n: int) -> torch.Tensor:
        b = self.visible_bias
        return b + torch.randn(int(n), b.shape[0], device=b.device, dtype=b.dtype)


_KINDS = {"bernoulli": BernoulliRBMDistribution, "gaussian": GaussianRBMDistribution}


def rbm_distribution(weight, visible_bias, hidden_bias, *, visible: str = "bernoulli",
                     log_z=None, burn_in: int = 200) -> RBMDistribution:
    """The RBM distribution class for ``visible`` ("bernoulli" or "gaussian")."""
    if visible not in _KINDS:
        raise ValueError(f"visible={visible!r}; choose one of {sorted(_KINDS)}")
    return _KINDS[visible](weight, visible_bias, hidden_bias, log_z=log_z, burn_in=burn_in)


class LogZCache:
    """``log Z`` of a model, recomputed only when its parameters change.

    The key is each parameter's storage and version counter (bumped by every in-place
    update: optimiser steps, ``load_state_dict``) plus the AIS settings."""

    def __init__(self):
        self._key = None
        self._value: ais.LogZ | None = None

    def get(self, params: Sequence[torch.Tensor], dist: RBMDistribution, *,
            limit: int = ais.ENUMERATION_LIMIT, num_temperatures: int = 10000,
            num_runs: int = 100, progress: bool | None = None,
            base_rate_steps: int = 200) -> ais.LogZ:
        key = (tuple((p.data_ptr(), p._version, p.dtype, str(p.device)) for p in params),
               limit, num_temperatures, num_runs)
        if key != self._key or self._value is None:
            self._value = compute_log_z(dist, limit=limit, num_temperatures=num_temperatures,
                                        num_runs=num_runs, progress=progress,
                                        base_rate_steps=base_rate_steps)
            self._key = key
        return self._value

    def __deepcopy__(self, memo):  # a copy of a model computes its own
        return LogZCache()


def can_enumerate(dist_or_shape, visible: str = "bernoulli",
                  limit: int = ais.ENUMERATION_LIMIT) -> bool:
    """Whether :func:`ppl_dgm.ais.log_z_exact` can enumerate an RBM of this shape."""
    n_vis, n_hid = dist_or_shape
    return (min(n_vis, n_hid) if visible == "bernoulli" else n_hid) <= limit


@torch.no_grad()
def compute_log_z(dist: RBMDistribution, *, limit: int = ais.ENUMERATION_LIMIT,
                  num_temperatures: int = 10000, num_runs: int = 100,
                  progress: bool | None = None, base_rate_steps: int = 200) -> ais.LogZ:
    """Exact ``log Z`` when the smaller layer has at most ``limit`` units, else AIS from
    a base-rate model whose visible marginals are those of ``num_runs`` Gibbs chains
    after ``base_rate_steps`` sweeps (any base model leaves AIS unbiased; a close one
    lowers its variance)."""
    W, b, c = dist.weight.detach(), dist.visible_bias.detach(), dist.hidden_bias.detach()
    kind = dist.visible_kind
    if can_enumerate(W.shape, kind, limit):
        return ais.log_z_exact(W, b, c, kind, limit=limit)
    v = dist.gibbs(dist.init_chains(num_runs), base_rate_steps)
    if kind == "gaussian":
        base = v.mean(0)
    else:
        base = ais.base_rate_logits(dist.visible_mean(torch.bernoulli(dist.hidden_probs(v)))
                                    .mean(0))
    return ais.ais_log_z(W, b, c, kind, num_temperatures=num_temperatures, num_runs=num_runs,
                         base_logits=base, progress=progress)
