"""Deep belief nets (Hinton, Osindero and Teh 2006) as Pyro programs.

A DBN with ``layers=(H1, ..., HL)`` over ``D`` binary visibles is a stack of RBMs
``l = 0 .. L-1`` between layers ``l`` and ``l + 1`` (layer 0 is ``x``).  As a
generative model the top two layers form an undirected RBM and the layers below are
directed sigmoid belief layers::

    h_{L-1} ~ p_RBM(h_{L-1})            (h_L summed out: the site is an RBM distribution)
    h_l | h_{l+1} ~ Bernoulli(sigmoid(W_l h_{l+1} + b_l))    for l = L-2, ..., 1
    x | h_1 ~ Bernoulli(sigmoid(W_0 h_1 + b_0))

with latent sites ``"h1"`` .. ``"h{L-1}"`` inside ``pyro.plate("data", n)``.  Each RBM
also has hidden biases ``c_l``; below the top they serve the greedy stage and the tied
recognition weights ``q(h_{l+1} | h_l) = sigmoid(W_l^T h_l + c_l)`` (the bottom-up pass,
:class:`~ppl_dgm.guides.DBNGuide`).

Training: ``greedy`` (each RBM by CD on the recognition states of the layer below,
:meth:`DBN.layer_rbm` / :meth:`DBN.layer_input`), then ``updown`` (wake-sleep with CD at
the top RBM).  ``log Z`` of the top RBM is exact or AIS (:meth:`DBN.log_partition`), so
the importance-sampled bounds of :func:`ppl_dgm.evaluate.evaluate` are variational
lower bounds on ``log p(x)`` with that ``log Z``.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

from ppl_dgm import ais
from ppl_dgm.nn import as_sizes, plate_size

from ._bipartite import LogZCache, RBMDistribution, RBMLayer, rbm_distribution

__all__ = ["DBN"]


class DBN(PyroModule):
    """A deep belief net: top RBM prior, sigmoid belief layers below.

    :param x_dim: visible units.  :param layers: hidden widths bottom-up, at least two
        (the top two layers form the RBM), e.g. ``(32, 16)`` or ``"100,50,20"``.
    :param ais_temperatures, ais_runs: AIS settings for the top RBM's ``log Z``.

    Example::

        model = DBN(x_dim=64, layers=(32, 16))
        guide = DBNGuide.from_model(model)
        for layer in range(model.num_rbms):                    # greedy stage
            fit(model, guide, GreedyLayerwise(layer=layer), data, steps=1000)
        fit(model, guide, UpDown(k=1), data, steps=3000)        # fine-tuning
    """

    default_guide = "dbn"

    def __init__(self, x_dim: int = 64, layers=(32, 16), *, ais_temperatures: int = 10000,
                 ais_runs: int = 100, burn_in: int = 200, sample_steps: int = 1000,
                 init_scale: float = 0.01):
        super().__init__()
        sizes = as_sizes(layers)
        if len(sizes) < 2 or any(h < 1 for h in sizes):
            raise ValueError(f"layers={layers!r}: a DBN needs at least two positive hidden "
                             f"widths, bottom-up (the top two layers form its RBM), e.g. "
                             f"layers=(32, 16); for one hidden layer use the model 'rbm'")
        self.x_dim, self.layer_sizes = int(x_dim), sizes
        self.likelihood = "bernoulli"
        dims = (self.x_dim, *sizes)
        self.num_rbms = len(sizes)
        self.rbms = PyroModule[nn.ModuleList](
            [RBMLayer(dims[i], dims[i + 1], init_scale=init_scale) for i in range(len(sizes))])
        self.sites = tuple(f"h{i + 1}" for i in range(len(sizes) - 1))
        self.latent_dims = dict(zip(self.sites, sizes[:-1]))
        self.ais_temperatures, self.ais_runs = int(ais_temperatures), int(ais_runs)
        self.burn_in, self.sample_steps = int(burn_in), int(sample_steps)
        self._log_z = LogZCache()
        self.register_buffer("chains", torch.zeros(0, sizes[-2]), persistent=False)

    # ---------------------------------------------------------------- structure
    def layer_rbm(self, layer: int) -> RBMDistribution:
        """RBM ``layer`` (0 next to the data) as an unnormalised energy distribution."""
        r = self.rbms[layer]
        return rbm_distribution(r.weight, r.visible_bias, r.hidden_bias, burn_in=self.burn_in)

    @torch.no_grad()
    def layer_input(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Binary recognition states feeding RBM ``layer``: ``x`` passed up through the
        tied weights of the RBMs below, ``h_{l+1} ~ sigmoid(W_l^T h_l + c_l)``."""
        h = x
        for i in range(layer):
            r = self.rbms[i]
            h = torch.bernoulli(torch.sigmoid(h.to(r.weight.dtype) @ r.weight + r.hidden_bias))
        return h

    def top_distribution(self, *, normalised: bool = True) -> RBMDistribution:
        r = self.rbms[self.num_rbms - 1]
        return rbm_distribution(r.weight, r.visible_bias, r.hidden_bias, burn_in=self.burn_in,
                                log_z=self._log_z_value if normalised else None)

    def layer_logits(self, layer: int, above: torch.Tensor) -> torch.Tensor:
        """Logits of ``p(h_layer | h_{layer+1})`` (``layer`` 0 is ``x``)."""
        r = self.rbms[layer]
        return above @ r.weight.T + r.visible_bias

    # ---------------------------------------------------------------- program
    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        with pyro.plate("data", plate_size(x, batch_size)):
            h = pyro.sample(self.sites[-1], self.top_distribution())
            for i in range(len(self.sites) - 1, 0, -1):
                h = pyro.sample(self.sites[i - 1], dist.Bernoulli(
                    logits=self.layer_logits(i, h)).to_event(1))
            return pyro.sample("x", dist.Bernoulli(logits=self.layer_logits(0, h)).to_event(1),
                               obs=x)

    # ---------------------------------------------------------------- log Z, samples
    def log_partition(self, *, progress: bool | None = None) -> ais.LogZ:
        """``log Z`` of the top RBM (exact or AIS, cached while its parameters hold)."""
        top = self.rbms[self.num_rbms - 1]
        return self._log_z.get(list(top.parameters()), self.top_distribution(normalised=False),
                               num_temperatures=self.ais_temperatures, num_runs=self.ais_runs,
                               progress=progress)

    def _log_z_value(self) -> torch.Tensor:
        w = self.rbms[0].weight
        return torch.tensor(self.log_partition().value, dtype=w.dtype, device=w.device)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False, steps: int | None = None) -> torch.Tensor:
        """``n`` draws: persistent Gibbs chains of the top RBM (a device buffer, advanced
        ``steps`` sweeps), then a top-down pass; ``mean=True`` gives ``P(x = 1 | h_1)``."""
        top = self.top_distribution(normalised=False)
        if self.chains.shape[0] != n:
            self.chains = top.init_chains(n).to(self.chains.dtype)
        self.chains = top.gibbs(self.chains, self.sample_steps if steps is None else steps)
        h = self.chains
        for i in range(len(self.sites) - 1, 0, -1):
            h = torch.bernoulli(torch.sigmoid(self.layer_logits(i, h)))
        probs = torch.sigmoid(self.layer_logits(0, h))
        return probs if mean else torch.bernoulli(probs)
