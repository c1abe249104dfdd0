"""NADE: the neural autoregressive distribution estimator (Larochelle & Murray 2011).

For binary ``x`` in an ordering ``o`` the model is

    p(x) = prod_k p(x_{o_k} | x_{o_<k}),
    h_k = sigmoid(c + W[:, o_<k] x_{o_<k}),
    p(x_{o_k} = 1 | x_{o_<k}) = sigmoid(b_{o_k} + V_{o_k} . h_k),

with the input weights ``W`` shared across the ``D`` conditionals, so all ``D`` hidden
vectors come from one cumulative sum: ``log p(x)`` costs ``O(D H)``.  A context ``z``
(a VAE's latent) shifts the hidden and output biases, ``c + U z`` and ``b + R z``, which
makes NADE the likelihood ``p(x | z)`` of a decoder (:mod:`ppl_dgm.models.ar_vae`).

:class:`NADE` is the Pyro model: the observed site ``"x"`` is an
:class:`~ppl_dgm.models.autoregressive.AutoregressiveBernoulli`, so ``log_prob`` is exact
and the model trains by maximum likelihood with any likelihood estimator and the empty
guide (there are no latents).

Example::

    from ppl_dgm.data import load_digits
    from ppl_dgm.estimators import ELBO
    from ppl_dgm.guides import EmptyGuide
    from ppl_dgm.models import NADE
    from ppl_dgm.train import fit

    data = load_digits()
    model = NADE(x_dim=64, hidden=100)
    fit(model, EmptyGuide(), ELBO(), data, steps=3000)
    nll = -model.log_prob(data.test).mean()
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import as_sizes, mlp, plate_size

from .autoregressive import AutoregressiveBernoulli, bernoulli_log_prob, check_binary

__all__ = ["NADE", "NADENet", "make_order"]

_ACTIVATIONS = {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu}


def make_order(x_dim: int, order: Sequence[int] | str | None, seed: int = 0) -> torch.Tensor:
    """An ordering of ``0..x_dim-1``: ``None`` or ``"natural"`` is the identity,
    ``"random"`` a permutation drawn from ``seed``, or an explicit permutation."""
    if order is None or order == "natural":
        return torch.arange(x_dim)
    if order == "random":
        return torch.randperm(x_dim, generator=torch.Generator().manual_seed(seed))
    if isinstance(order, str):
        raise ValueError(f"order={order!r}: give 'natural', 'random' or a permutation")
    perm = torch.as_tensor(list(order), dtype=torch.long)
    if perm.shape != (x_dim,) or not torch.equal(perm.sort().values, torch.arange(x_dim)):
        raise ValueError(f"order must be a permutation of 0..{x_dim - 1}, got {list(order)}")
    return perm


class NADENet(nn.Module):
    """The NADE conditionals as one network: ``logits = net(x, context)``, shape
    ``(..., D)``, where logit ``o_k`` sees only ``x_{o_<k}`` (and the context).

    :param x_dim: D.  :param hidden: H, the width of every hidden vector ``h_k``.
    :param context_dim: width of a context ``z`` that shifts the biases (0: none), through
        an unmasked tanh network with widths ``context_hidden`` (``()``: linear).
    :param order: ordering (see :func:`make_order`).  :param activation: of ``h_k``.
    """

    def __init__(self, x_dim: int, hidden: int = 100, *, context_dim: int = 0,
                 order: Sequence[int] | str | None = None, order_seed: int = 0,
                 activation: str = "sigmoid", context_hidden: Sequence[int] | int | str = ()):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; choose one of "
                             f"{sorted(_ACTIVATIONS)}")
        if int(x_dim) < 1 or int(hidden) < 1:
            raise ValueError(f"x_dim and hidden must be positive, got {x_dim} and {hidden}")
        d, h = int(x_dim), int(hidden)
        self.x_dim, self.hidden, self.context_dim = d, h, int(context_dim)
        self.activation = _ACTIVATIONS[activation]
        self.W = nn.Parameter(torch.randn(h, d) / d ** 0.5)
        self.c = nn.Parameter(torch.zeros(h))
        self.V = nn.Parameter(torch.randn(d, h) / h ** 0.5)
        self.b = nn.Parameter(torch.zeros(d))
        self.context = (mlp(self.context_dim, as_sizes(context_hidden), h + d)
                        if self.context_dim else None)
        order = make_order(d, order, order_seed)
        self.register_buffer("order", order)
        self.register_buffer("rank", torch.argsort(order))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        xo = x[..., self.order].unsqueeze(-2)                       # (..., 1, D)
        contrib = xo * self.W[:, self.order]                        # (..., H, D)
        # exclusive cumulative sum: position k holds sum_{j<k} (exactly; no x_k in it)
        pre = F.pad(torch.cumsum(contrib[..., :-1], -1), (1, 0)) + self.c.unsqueeze(-1)
        b = self.b
        if self.context is not None:
            if context is None:
                raise ValueError("this NADE net was built with context_dim="
                                 f"{self.context_dim}: pass context")
            shift_h, shift_b = self.context(context).split([self.hidden, self.x_dim], -1)
            pre = pre + shift_h.unsqueeze(-1)
            b = b + shift_b
        h = self.activation(pre)                                    # (..., H, D)
        logits_o = (h * self.V[self.order].T).sum(-2)               # (..., D) in order
        return logits_o[..., self.rank] + b

    def distribution(self, context: torch.Tensor | None = None, batch_shape: Sequence[int] = (),
                     *, ensemble: bool = False) -> AutoregressiveBernoulli:
        """``p(x [| context])`` as a distribution (``ensemble`` is accepted for the same
        call as :meth:`MADENet.distribution`; NADE has one ordering)."""
        fn = self if context is None else partial(self, context=context)
        return AutoregressiveBernoulli(fn, self.order, batch_shape, dtype=self.W.dtype)


class NADE(PyroModule):
    """NADE over ``x_dim`` binary values as a Pyro model with an exact likelihood.

    :param x_dim: D (64 for 8x8 digits).  :param hidden: H.
    :param order: ``None``/``"natural"``, ``"random"`` (from ``order_seed``) or a
        permutation.  :param activation: ``"sigmoid"`` (the paper's), ``"tanh"``, ``"relu"``.

    No latents: train with the empty guide (``default_guide = "empty"``), e.g.
    ``ppl-dgm train --model nade --estimator elbo``.  ``log_prob(x)`` is exact;
    ``sample(n)`` is ancestral (``mean=True`` returns the conditional probabilities the
    draw was made with, for image grids).
    """

    default_guide = "empty"

    def __init__(self, x_dim: int = 64, hidden: int = 100,
                 order: Sequence[int] | str | None = None, order_seed: int = 0,
                 activation: str = "sigmoid"):
        super().__init__()
        self.x_dim = int(x_dim)
        self.likelihood = "bernoulli"
        self.nets = PyroModule[nn.ModuleList]([NADENet(
            self.x_dim, hidden, order=order, order_seed=order_seed, activation=activation)])

    @property
    def net(self) -> NADENet:
        # reached through a PyroModule container: no pyro.module statement per step
        return self.nets[0]

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        with pyro.plate("data", plate_size(x, batch_size)):
            return pyro.sample("x", self.net.distribution(), obs=x)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact ``log p(x)`` per data point, shape ``(N,)`` (differentiable)."""
        check_binary(x, self.x_dim, type(self).__name__)
        x = x.to(self.net.W.dtype)
        return bernoulli_log_prob(self.net(x), x)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        x, probs = self.net.distribution().ancestral((n,))
        return probs if mean else x
