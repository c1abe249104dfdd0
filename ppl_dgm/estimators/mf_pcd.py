"""Deep Boltzmann machine learning: mean-field data term, persistent chains for the
model term (Salakhutdinov and Hinton 2009)."""

from __future__ import annotations

from typing import ClassVar

from ._gibbs import PersistentChains
from .base import Estimator

__all__ = ["MeanFieldPCD"]


class MeanFieldPCD(PersistentChains, Estimator):
    """Variational learning of a DBM: ``E_q[dE]`` under a mean-field guide minus
    ``E_p[dE]`` from persistent Gibbs chains.

    The guide is a factorised (mean-field) posterior ``q(h | x)`` whose site means
    ``mu`` are the fixed point of the mean-field equations (e.g.
    :class:`~ppl_dgm.guides.DBMMeanField`).  The data term is the program's log density
    without ``log Z`` evaluated at the guide's *means* (``-E(x, mu)``: exact for the
    DBM's energy, which is linear in each layer given the others); the model term is
    ``n * mean_c F(h1_c)`` over persistent chains of the energy-based site (for the
    DBM, the marginal of ``h1`` with ``x`` and ``h2`` summed out, so each chain step is
    a full block-Gibbs sweep of the DBM).  The gradient is the data term minus the
    model term of Salakhutdinov and Hinton (2009), Algorithm 1.  The guide has no
    parameters of its own (it is recomputed from the model's).

    :param num_chains: persistent chains ("fantasy particles"; 100 in the paper).
    :param k: Gibbs sweeps per step.

    Example::

        model = DBM(x_dim=64, layers=(32, 16))
        fit(model, DBMMeanField.from_model(model), MeanFieldPCD(num_chains=100),
            load_digits(), steps=3000, lr=1e-3)
    """

    name: ClassVar[str] = "mf-pcd"
    mean_field: ClassVar[bool] = True
