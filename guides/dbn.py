"""The recognition network of a deep belief net: the bottom-up pass."""

from __future__ import annotations

import torch

from .helmholtz import HelmholtzGuide

__all__ = ["DBNGuide"]


class DBNGuide(HelmholtzGuide):
    """``q(h_1 | x) ... q(h_{L-1} | h_{L-2})``: a linear Helmholtz recognition network
    whose weights start tied to the DBN's.

    Tied, layer ``l`` uses the model's RBM weights and hidden biases,
    ``q(h_{l+1} | h_l) = sigmoid(W_l^T h_l + c_l)`` (detached), as after greedy training
    (Hinton, Osindero and Teh 2006).  :meth:`untie` copies them into the guide's own
    linear layers, which the up-down algorithm then trains (its sleep phase); the
    ``untied`` flag is a buffer, so checkpoints keep the state.  The guide holds its
    model by reference, not as a submodule.

    Example::

        guide = DBNGuide.from_model(DBN(64, (32, 16)))
    """

    def __init__(self, model):
        if not hasattr(model, "rbms") or not hasattr(model, "sites"):
            raise ValueError(f"DBNGuide needs a DBN-like model (rbms, sites); got "
                             f"{type(model).__name__}")
        super().__init__(model.x_dim, tuple(model.latent_dims.values()),
                         sites=tuple(model.sites))
        object.__setattr__(self, "_model", model)  # deliberately not a submodule
        self.register_buffer("untied", torch.zeros(()))

    @classmethod
    def from_model(cls, model, **options) -> DBNGuide:
        return cls(model, **options)

    def layer_logits(self, layer: int, below: torch.Tensor) -> torch.Tensor:
        own, tied = self.nets[layer][0], self._model.rbms[layer]
        use = self.untied > 0
        weight = torch.where(use, own.weight.T, tied.weight.detach())
        bias = torch.where(use, own.bias, tied.hidden_bias.detach())
        return below @ weight + bias

    @torch.no_grad()
    def untie(self) -> None:
        """Copy the tied recognition weights into the guide's own parameters (once)."""
        if bool(self.untied > 0):
            return
        for i in range(len(self.sites)):
            own, tied = self.nets[i][0], self._model.rbms[i]
            own.weight.copy_(tied.weight.T)
            own.bias.copy_(tied.hidden_bias)
        self.untied.fill_(1.0)
