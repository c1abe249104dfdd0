"""The guide of a model without latent sites (an RBM over its data)."""

from __future__ import annotations

import torch
from pyro.nn import PyroModule

__all__ = ["NoLatents"]


class NoLatents(PyroModule):
    """Samples nothing: the guide of a model whose only sample site is its data (an
    :class:`~ppl_dgm.models.RBM`, whose hidden units are summed out in the
    distribution).  Every bound of :func:`ppl_dgm.evaluate.evaluate` is then the
    model's ``log p(x)`` itself.

    Example::

        fit(RBM(64, 16), NoLatents(), ContrastiveDivergence(), load_digits(), steps=3000)
    """

    @classmethod
    def from_model(cls, model, **options) -> NoLatents:
        return cls(**options)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> None:
        return None
