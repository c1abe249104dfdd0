"""Persistent contrastive divergence (Tieleman 2008)."""

from __future__ import annotations

from typing import ClassVar

from ._gibbs import PersistentChains
from .base import Estimator

__all__ = ["PersistentCD"]


class PersistentCD(PersistentChains, Estimator):
    """PCD: the model term from persistent Gibbs chains that are never reset.

    The surrogate is ``sum_i F(x_i) - n * mean_c F(v_c)``, where ``v_c`` are the
    ``num_chains`` chain states after ``k`` more sweeps with the current parameters
    (detached).  With small learning rates the chains stay near the model's
    distribution, so the model term approaches ``E_p[dF(v)]`` (the exact
    maximum-likelihood gradient) instead of CD's k-step approximation.  The chains are
    device buffers in ``self.aux``: saved with checkpoints and moved with
    :meth:`to`; :meth:`prepare` creates them for each energy-based site.  A latent
    energy site (a deep belief net's top RBM) has its data term at the guide's
    detached values; the guide is not trained.

    :param num_chains: persistent chains per energy site.
    :param k: Gibbs sweeps per step.

    Example::

        fit(RBM(64, 100), EmptyGuide(), PersistentCD(num_chains=100), load_digits(),
            steps=3000, lr=1e-3)
    """

    name: ClassVar[str] = "pcd"
    mean_field: ClassVar[bool] = False
