"""MADE: masked autoencoder for distribution estimation (Germain, Gregor, Murray &
Larochelle 2015).

An MLP ``x -> h_1 -> ... -> h_L -> logits`` becomes an autoregressive model by
multiplying each weight matrix with a binary mask.  Every input ``d`` gets the degree
``m(d)``, its rank in an ordering ``o``; every hidden unit ``k`` of layer ``l`` a degree
``m^l(k)`` drawn uniformly from ``[min m^{l-1}, D - 2]`` (0-based ranks); a unit sees a
unit below it iff ``m^l(k) >= m^{l-1}(k')``, and output ``d`` sees hidden unit ``k`` of the
last layer iff ``m(d) > m^L(k)`` (optional direct input-output weights iff
``m(d) > m(d')``).  The logit of ``x_d`` then depends only on the inputs ranked before it,
so one pass gives the exact ``log p(x)`` (equation 1 of the paper with the masks of
equations 12-13).

Order-agnostic and connectivity-agnostic training (section 4): ``num_masks`` mask sets
are drawn at construction (random orderings when ``order_agnostic``, fresh hidden degrees
when ``connectivity_agnostic``); in training mode each call of the model uses one of them
drawn uniformly on the device, and in evaluation mode (``model.eval()``) the likelihood is
the uniform mixture over all of them, ``log (1/M) sum_m p_m(x)``: test-time averaging
over orderings.  A context ``z`` enters the first hidden layer and the output logits
through unmasked weights, which keeps the autoregressive property in ``x`` and makes MADE
the likelihood ``p(x | z)`` of a VAE decoder (:mod:`ppl_dgm.models.ar_vae`).

Example::

    from ppl_dgm.models import MADE

    model = MADE(x_dim=64, hidden=(500,), num_masks=8)   # order+connectivity agnostic
    model.eval()
    log_px = model.log_prob(x)            # ensemble over the 8 orderings, exact
    single = model.log_prob(x, mask=0)    # one ordering
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import pyro
import torch
from pyro.nn import PyroModule
from torch import nn
from torch.nn import functional as F

from ppl_dgm.nn import as_sizes, mlp, plate_size

from .autoregressive import AutoregressiveBernoulli, OrderMixture, bernoulli_log_prob, check_binary

__all__ = ["MADE", "MADENet", "made_masks"]

_ACTIVATIONS = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid}


def made_masks(order: torch.Tensor, hidden: Sequence[int], generator: torch.Generator,
               degrees: list[torch.Tensor] | None = None
               ) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
    """MADE's masks for one ordering: ``(layer_masks, direct_mask, hidden_degrees)``.

    ``layer_masks[l]`` has the shape ``(out, in)`` of layer ``l``'s weight (the last is the
    output layer); ``direct_mask`` is ``(D, D)``.  Hidden degrees are drawn from
    ``generator`` unless given (``degrees``: reuse them, connectivity fixed).
    """
    d = order.shape[0]
    rank = torch.argsort(order)
    if degrees is None:
        degrees, low = [], int(rank.min())
        for h in hidden:
            low = min(low, d - 2)
            deg = torch.randint(low, max(low, d - 2) + 1, (h,), generator=generator)
            degrees.append(deg)
            low = int(deg.min())
    below = [rank, *degrees]
    masks = [(below[i + 1].unsqueeze(-1) >= below[i]).float() for i in range(len(degrees))]
    masks.append((rank.unsqueeze(-1) > below[-1]).float())
    return masks, (rank.unsqueeze(-1) > rank).float(), degrees


class MADENet(nn.Module):
    """The masked network with a stack of ``num_masks`` mask sets:
    ``logits = net(x, context, mask=m)``, shape ``(..., D)``.

    :param x_dim: D.  :param hidden: hidden widths, e.g. ``(500,)`` or ``"300,300"``.
    :param num_masks: M mask sets (1: a single fixed ordering and connectivity).
    :param order_agnostic: random ordering per mask set (default: ``num_masks > 1``);
        otherwise every set uses the natural ordering ``0..D-1``.
    :param connectivity_agnostic: fresh hidden degrees per mask set (default:
        ``num_masks > 1``).  :param direct: masked direct input-to-output weights.
    :param context_dim: width of a context ``z`` (0: none); ``context_hidden`` are the
        widths of the (unmasked, tanh) network from it to the first hidden layer's and the
        output's shifts (``()``: linear).  :param mask_seed: seed of the orderings and
        degrees (the global random state is left alone).
    """

    def __init__(self, x_dim: int, hidden: Sequence[int] | int | str = (500,), *,
                 context_dim: int = 0, num_masks: int = 1, order_agnostic: bool | None = None,
                 connectivity_agnostic: bool | None = None, direct: bool = False,
                 activation: str = "relu", mask_seed: int = 0,
                 context_hidden: Sequence[int] | int | str = ()):
        super().__init__()
        sizes = as_sizes(hidden)
        d, m = int(x_dim), int(num_masks)
        if d < 1 or not sizes or min(sizes) < 1:
            raise ValueError(f"MADE needs x_dim >= 1 and one or more positive hidden widths, "
                             f"got x_dim={x_dim}, hidden={hidden!r}")
        if m < 1:
            raise ValueError(f"num_masks must be >= 1, got {num_masks}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is unknown; choose one of "
                             f"{sorted(_ACTIVATIONS)}")
        order_agnostic = m > 1 if order_agnostic is None else bool(order_agnostic)
        connectivity_agnostic = m > 1 if connectivity_agnostic is None \
            else bool(connectivity_agnostic)
        if m > 1 and not (order_agnostic or connectivity_agnostic):
            raise ValueError(f"num_masks={m} with order_agnostic=False and "
                             f"connectivity_agnostic=False would repeat one mask {m} times; "
                             f"set one of them True, or num_masks=1")
        self.x_dim, self.sizes, self.num_masks = d, sizes, m
        self.order_agnostic, self.connectivity_agnostic = order_agnostic, connectivity_agnostic
        self.context_dim = int(context_dim)
        self.activation = _ACTIVATIONS[activation]
        widths = (d, *sizes, d)
        self.layers = nn.ModuleList(nn.Linear(widths[i], widths[i + 1])
                                    for i in range(len(widths) - 1))
        self.direct = nn.Linear(d, d, bias=False) if direct else None
        self.context = (mlp(self.context_dim, as_sizes(context_hidden), sizes[0] + d)
                        if self.context_dim else None)

        g = torch.Generator().manual_seed(int(mask_seed))
        orders, sets, directs, fixed = [], [], [], None
        for _ in range(m):
            order = torch.randperm(d, generator=g) if order_agnostic else torch.arange(d)
            masks, direct_mask, degrees = made_masks(order, sizes, g, fixed)
            if not connectivity_agnostic:
                fixed = degrees
            orders.append(order), sets.append(masks), directs.append(direct_mask)
        self.register_buffer("orders", torch.stack(orders))               # (M, D)
        for i in range(len(self.layers)):
            self.register_buffer(f"mask{i}", torch.stack([s[i] for s in sets]))  # (M, out, in)
        self.register_buffer("direct_mask", torch.stack(directs))         # (M, D, D)

    def masks(self, mask: int | torch.Tensor = 0) -> list[torch.Tensor]:
        """The weight masks of mask set ``mask`` (an int or a 0-dim device tensor)."""
        return [getattr(self, f"mask{i}")[mask] for i in range(len(self.layers))]

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None, *,
                mask: int | torch.Tensor = 0) -> torch.Tensor:
        h = x
        masks = self.masks(mask)
        last = len(self.layers) - 1
        ctx_h = ctx_out = None
        if self.context is not None:
            if context is None:
                raise ValueError(f"this MADE net was built with context_dim={self.context_dim}:"
                                 f" pass context")
            ctx_h, ctx_out = self.context(context).split([self.sizes[0], self.x_dim], -1)
        for i, (layer, m) in enumerate(zip(self.layers, masks)):
            h = F.linear(h, layer.weight * m, layer.bias)
            if i == 0 and ctx_h is not None:
                h = h + ctx_h
            if i < last:
                h = self.activation(h)
        if self.direct is not None:
            h = h + F.linear(x, self.direct.weight * self.direct_mask[mask])
        return h if ctx_out is None else h + ctx_out

    def component(self, mask: int | torch.Tensor, context: torch.Tensor | None = None,
                  batch_shape: Sequence[int] = ()) -> AutoregressiveBernoulli:
        """The autoregressive distribution of mask set ``mask``."""
        return AutoregressiveBernoulli(partial(self, context=context, mask=mask),
                                       self.orders[mask], batch_shape,
                                       dtype=self.layers[0].weight.dtype)

    def distribution(self, context: torch.Tensor | None = None, batch_shape: Sequence[int] = (),
                     *, ensemble: bool = False):
        """``p(x [| context])``: one mask set drawn uniformly on the device (training,
        ``ensemble=False``), or the uniform mixture over all of them (``ensemble=True``)."""
        if self.num_masks == 1:
            return self.component(0, context, batch_shape)
        if ensemble:
            return OrderMixture([self.component(m, context, batch_shape)
                                 for m in range(self.num_masks)])
        pick = torch.randint(self.num_masks, (), device=self.orders.device)
        return self.component(pick, context, batch_shape)


class MADE(PyroModule):
    """MADE over ``x_dim`` binary values as a Pyro model with an exact likelihood.

    :param x_dim: D.  :param hidden: widths of the masked MLP.  :param num_masks: mask
        sets for order/connectivity-agnostic training (see :class:`MADENet` for
        ``order_agnostic``, ``connectivity_agnostic``, ``direct``, ``mask_seed``).

    No latents: train with the empty guide (``ppl-dgm train --model made``).  In
    training mode the site ``"x"`` uses one mask set drawn per call; in eval mode the
    mixture over all sets.  ``log_prob(x)`` is the exact ensemble ``log p(x)``,
    ``log_prob(x, mask=m)`` that of one ordering.
    """

    default_guide = "empty"

    def __init__(self, x_dim: int = 64, hidden: Sequence[int] | int | str = (500,),
                 num_masks: int = 1, order_agnostic: bool | None = None,
                 connectivity_agnostic: bool | None = None, direct: bool = False,
                 activation: str = "relu", mask_seed: int = 0):
        super().__init__()
        self.x_dim = int(x_dim)
        self.likelihood = "bernoulli"
        self.nets = PyroModule[nn.ModuleList]([MADENet(
            self.x_dim, hidden, num_masks=num_masks, order_agnostic=order_agnostic,
            connectivity_agnostic=connectivity_agnostic, direct=direct,
            activation=activation, mask_seed=mask_seed)])

    @property
    def net(self) -> MADENet:
        # reached through a PyroModule container: no pyro.module statement per step
        return self.nets[0]

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        with pyro.plate("data", plate_size(x, batch_size)):
            return pyro.sample("x", self.net.distribution(ensemble=not self.training), obs=x)

    def log_prob(self, x: torch.Tensor, *, mask: int | None = None) -> torch.Tensor:
        """Exact ``log p(x)`` per point: the mixture over all mask sets (``mask=None``)
        or mask set ``mask`` alone.  Differentiable."""
        check_binary(x, self.x_dim, type(self).__name__)
        net = self.net
        x = x.to(net.layers[0].weight.dtype)
        if mask is not None:
            if not 0 <= int(mask) < net.num_masks:
                raise ValueError(f"mask={mask} is out of range: this MADE has "
                                 f"{net.num_masks} mask sets (0..{net.num_masks - 1})")
            return bernoulli_log_prob(net(x, mask=int(mask)), x)
        lps = torch.stack([bernoulli_log_prob(net(x, mask=m), x) for m in range(net.num_masks)])
        return torch.logsumexp(lps, 0) - math.log(net.num_masks)

    @torch.no_grad()
    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor:
        """``n`` ancestral draws (from the ensemble: a mask set per draw); ``mean=True``
        returns the conditional probabilities the draws were made with."""
        x, probs = self.net.distribution(ensemble=True).ancestral((n,))
        return probs if mean else x
