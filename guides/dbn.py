"""The recognition network of a deep belief net: the bottom-up pass."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from torch import nn

__all__ = ["DBNGuide"]


class _Recognition(nn.Module):
    def __init__(self, below: int, above: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(below, above))
        self.bias = nn.Parameter(torch.zeros(above))


class DBNGuide(PyroModule):
    """``q(h_1 | x) ... q(h_{L-1} | h_{L-2})``, factorised Bernoulli layers, bottom up.

    Tied at first: layer ``l`` uses the model's RBM weights and hidden biases,
    ``q(h_{l+1} | h_l) = sigmoid(W_l^T h_l + c_l)`` (detached), as after greedy training
    (Hinton, Osindero and Teh 2006).  :meth:`untie` copies them into the guide's own
    parameters, which the up-down algorithm then trains (its sleep phase); the
    ``untied`` flag is a buffer, so checkpoints keep the state.  The guide holds its
    model by reference, not as a submodule.

    Example::

        guide = DBNGuide.from_model(DBN(64, (32, 16)))
    """

    def __init__(self, model):
        super().__init__()
        if not hasattr(model, "rbms") or not hasattr(model, "sites"):
            raise ValueError(f"DBNGuide needs a DBN-like model (rbms, sites); got "
                             f"{type(model).__name__}")
        object.__setattr__(self, "_model", model)  # deliberately not a submodule
        self.sites = tuple(model.sites)
        self.layers = PyroModule[nn.ModuleList](
            [_Recognition(model.rbms[i].weight.shape[0], model.rbms[i].weight.shape[1])
             for i in range(len(self.sites))])
        self.register_buffer("untied", torch.zeros(()))

    @classmethod
    def from_model(cls, model, **options) -> DBNGuide:
        return cls(model, **options)

    def layer_logits(self, layer: int, below: torch.Tensor) -> torch.Tensor:
        own, tied = self.layers[layer], self._model.rbms[layer]
        use = self.untied > 0
        weight = torch.where(use, own.weight, tied.weight.detach())
        bias = torch.where(use, own.bias, tied.hidden_bias.detach())
        return below @ weight + bias

    @torch.no_grad()
    def untie(self) -> None:
        """Copy the tied recognition weights into the guide's own parameters (once)."""
        if bool(self.untied > 0):
            return
        for own, tied in zip(self.layers, self._model.rbms):
            own.weight.copy_(tied.weight)
            own.bias.copy_(tied.hidden_bias)
        self.untied.fill_(1.0)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        if x is None:
            raise ValueError("DBNGuide is a recognition network: it needs observed x")
        below = x
        with pyro.plate("data", x.shape[0]):
            for i, site in enumerate(self.sites):
                below = pyro.sample(site, dist.Bernoulli(
                    logits=self.layer_logits(i, below)).to_event(1))
        return below
