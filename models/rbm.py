"""Restricted Boltzmann machines (Smolensky 1986; Hinton 2002) as Pyro programs.

The RBM's visible vector is the program's observed site ``"x"``, drawn from an
:class:`~ppl_dgm.models._bipartite.RBMDistribution` inside ``pyro.plate("data", n)``;
the hidden layer is summed out in the distribution, so the program has no latent
sites and its guide samples nothing (``ppl_dgm.guides.EmptyGuide``, registry name
``"empty"``).  ``log p(x) = -F(x) - log Z``:

* ``log Z`` is exact (enumeration of the smaller layer) when that layer has at most
  :data:`~ppl_dgm.ais.ENUMERATION_LIMIT` units, else an AIS estimate with its spread
  (:meth:`RBM.log_partition`), cached until the parameters change;
* the importance-sampling bounds of :func:`ppl_dgm.evaluate.evaluate` are then
  ``log p(x)`` itself (there is nothing to sample), exact or with the AIS ``log Z``.

Train it with contrastive divergence (``cd``, ``pcd``); likelihood estimators are
refused, since ``log Z`` carries no gradient.
"""

from __future__ import annotations

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm import ais
from ppl_dgm.nn import plate_size

from ._bipartite import LogZCache, RBMDistribution, RBMLayer, can_enumerate, rbm_distribution

__all__ = ["RBM"]


class RBM(PyroModule):
    """A Bernoulli-Bernoulli (or Gaussian-Bernoulli) restricted Boltzmann machine.

    :param x_dim: visible units.  :param hidden: hidden units.
    :param visible: ``"bernoulli"`` (binary data) or ``"gaussian"`` (real data with unit
        variance per unit: standardise it first).
    :param ais_temperatures, ais_runs: AIS settings for ``log Z`` when it cannot be
        enumerated.
    :param burn_in: Gibbs sweeps when the program generates data (``x=None``).
    :param sample_steps: Gibbs sweeps of the persistent chains per :meth:`sample` call.

    Example::

        model = RBM(x_dim=64, hidden=16)
        fit(model, EmptyGuide(), ContrastiveDivergence(k=1), load_digits(), steps=3000)
        model.log_prob(x)               # exact: 2^16 hidden states
        model.sample(64, mean=True)     # persistent block-Gibbs chains
    """

    default_guide = "empty"

    def __init__(self, x_dim: int = 64, hidden: int = 16, *, visible: str = "bernoulli",
                 ais_temperatures: int = 10000, ais_runs: int = 100, burn_in: int = 200,
                 sample_steps: int = 1000, init_scale: float = 0.01):
        super().__init__()
        if visible not in ais.VISIBLE_KINDS:
            raise ValueError(f"visible={visible!r}; choose one of {ais.VISIBLE_KINDS}")
        self.x_dim, self.hidden, self.visible = int(x_dim), int(hidden), visible
        self.likelihood = visible
        self.ais_temperatures, self.ais_runs = int(ais_temperatures), int(ais_runs)
        self.burn_in, self.sample_steps = int(burn_in), int(sample_steps)
        self.layers = PyroModule[nn.ModuleList]([RBMLayer(x_dim, hidden,
                                                          init_scale=init_scale)])
        self._log_z = LogZCache()
        self.register_buffer("chains", torch.zeros(0, self.x_dim), persistent=False)

    @property
    def layer(self) -> RBMLayer:
        return self.layers[0]

    def distribution(self, *, normalised: bool = True) -> RBMDistribution:
        """The RBM distribution over ``x`` (``log_prob = -F(x) - log Z``)."""
        layer = self.layer
        return rbm_distribution(layer.weight, layer.visible_bias, layer.hidden_bias,
                                visible=self.visible, burn_in=self.burn_in,
                                log_z=self._log_z_value if normalised else None)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        with pyro.plate("data", plate_size(x, batch_size)):
            return pyro.sample("x", self.distribution(), obs=x)

    # ---------------------------------------------------------------- likelihood
    @property
    def can_enumerate(self) -> bool:
        """Whether ``log Z`` is exact (the smaller binary layer has <= 20 units)."""
        return can_enumerate((self.x_dim, self.hidden), self.visible)

    def log_partition(self, *, progress: bool | None = None) -> ais.LogZ:
        """``log Z``: exact by enumeration when :attr:`can_enumerate`, else AIS with
        ``ais_temperatures`` x ``ais_runs`` (cached while the parameters are unchanged)."""
        return self._log_z.get(list(self.layer.parameters()), self.distribution(
            normalised=False), num_temperatures=self.ais_temperatures,
            num_runs=self.ais_runs, progress=progress)

    def _log_z_value(self) -> torch.Tensor:
        w = self.layer.weight
        return torch.tensor(self.log_partition().value, dtype=w.dtype, device=w.device)

    def free_energy(self, x: torch.Tensor) -> torch.Tensor:
        """``F(x)`` per row."""
        return self.distribution(normalised=False).free_energy(x)

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x) = -F(x) - log Z`` per row (exact or with the AIS ``log Z``)."""
        if x.dim() != 2 or x.shape[-1] != self.x_dim:
            raise ValueError(f"x must have shape (N, {self.x_dim}), got {tuple(x.shape)}")
        return -self.free_energy(x) - self.log_partition().value

    # ---------------------------------------------------------------- sampling
    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, steps: int | None = None) -> torch.Tensor:
        """``n`` states of persistent block-Gibbs chains (a device buffer), advanced by
        ``steps`` sweeps (default ``sample_steps``); ``mean=True`` returns ``E[x | h]``
        of the last sweep (smoother image grids)."""
        d = self.distribution(normalised=False)
        if self.chains.shape[0] != n:
            self.chains = d.init_chains(n).to(self.chains.dtype)
        v = d.gibbs(self.chains, (self.sample_steps if steps is None else steps) - 1)
        h = torch.bernoulli(d.hidden_probs(v))
        v_mean = d.visible_mean(h)
        self.chains = d.sample_visible(h).to(self.chains.dtype)
        return v_mean if mean else self.chains.clone()
