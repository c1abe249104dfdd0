"""The mean-field posterior of a deep Boltzmann machine, as a guide."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

__all__ = ["DBMMeanField"]


class DBMMeanField(PyroModule):
    """``q(h1 | x) q(h2 | x)``, factorised Bernoulli with the means of the DBM's
    mean-field fixed point (:meth:`~ppl_dgm.models.DBM.mean_field`; Salakhutdinov and
    Hinton 2009).  No parameters of its own: the means are recomputed from the model's
    current parameters at every call (the model is held by reference, not as a
    submodule).  ``mf-pcd`` uses the means as the data term; evaluation samples it as
    an importance-sampling proposal.

    :param iterations: fixed-point iterations (default: the model's).

    Example::

        guide = DBMMeanField.from_model(DBM(64, (32, 16)))
    """

    def __init__(self, model, *, iterations: int | None = None):
        super().__init__()
        if not hasattr(model, "mean_field"):
            raise ValueError(f"DBMMeanField needs a model with mean_field(x) (a DBM); got "
                             f"{type(model).__name__}")
        object.__setattr__(self, "_model", model)  # deliberately not a submodule
        self.iterations = iterations

    @classmethod
    def from_model(cls, model, **options) -> DBMMeanField:
        return cls(model, **options)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        if x is None:
            raise ValueError("DBMMeanField is an inference network: it needs observed x")
        mu1, mu2 = self._model.mean_field(x, self.iterations)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("h1", dist.Bernoulli(probs=mu1).to_event(1))
            pyro.sample("h2", dist.Bernoulli(probs=mu2).to_event(1))
