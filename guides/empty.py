"""The empty guide: for models without latent variables (NADE, MADE, ...)."""

from __future__ import annotations

import torch
from pyro.nn import PyroModule

__all__ = ["EmptyGuide"]


class EmptyGuide(PyroModule):
    """A guide that samples nothing, for a model whose only random site is the observed
    data.  With it, the ELBO, IWAE and importance-sampled ``log p(x)`` all equal the
    model's exact ``log p(x)``: training any likelihood estimator is maximum likelihood.

    Example::

        from ppl_dgm.guides import EmptyGuide
        from ppl_dgm.models import NADE
        fit(NADE(x_dim=64), EmptyGuide(), ELBO(), data, steps=3000)
    """

    @classmethod
    def from_model(cls, model, **options) -> EmptyGuide:
        if options:
            raise ValueError(f"the empty guide takes no options, got {sorted(options)}")
        return cls()

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> None:
        return None
