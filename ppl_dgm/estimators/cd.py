"""Contrastive divergence, CD-k (Hinton 2002)."""

from __future__ import annotations

from typing import ClassVar

from ._gibbs import (
    GibbsSweeps,
    cd_chains,
    contrastive_parts,
    energy_traces,
    require_energy_sites,
)
from .base import Estimator, LossParts

__all__ = ["ContrastiveDivergence"]


class ContrastiveDivergence(GibbsSweeps, Estimator):
    """CD-k: the model term from ``k`` block-Gibbs sweeps started at the data.

    For an energy-based site ``x ~ exp(-F(x)) / Z`` (an RBM over the data) the
    surrogate is ``sum_i F(x_i) - sum_i F(x_i^(k))`` with ``x^(k)`` the detached state
    after ``k`` sweeps of a chain started at ``x_i``: its gradient is the data term
    minus the k-step chain term, the CD-k update (biased: the chain is not at
    equilibrium; it approximately follows the gradient of ``KL(p0 || p_inf) -
    KL(p_k || p_inf)``).  A latent energy site (the top RBM of a deep belief net)
    starts its chains at the guide's values, and the other sites of the program enter
    with their log densities at those values (the wake phase); the guide is not
    trained (use ``updown``).  ``metrics["objective"]`` is minus the surrogate (a
    free-energy gap, not a likelihood); the test log-likelihood comes from
    ``model.log_prob`` (exact or AIS).

    :param k: Gibbs sweeps per step (CD-1 is the classic choice).

    Example::

        fit(RBM(64, 16), EmptyGuide(), ContrastiveDivergence(k=1), load_digits(),
            steps=3000, lr=3e-3)
    """

    name: ClassVar[str] = "cd"
    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = energy_traces(self, model, guide, args, kwargs)
        return contrastive_parts(tr, cd_chains(tr, self.k))

    def check(self, model, guide, *args, **kwargs) -> None:
        tr = energy_traces(self, model, guide, args, kwargs)
        self.check_traces(tr)
        require_energy_sites(self, tr)
