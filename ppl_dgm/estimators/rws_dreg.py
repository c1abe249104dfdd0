"""Reweighted wake-sleep with a doubly reparameterised wake-phi update (DReG-RWS).

Tucker, Lawson, Gu and Maddison (2018, "Doubly reparameterized gradient estimators for
Monte Carlo objectives", Eq. 6) rewrite the wake-phi update of reweighted wake-sleep,
the self-normalised estimate ``sum_k w~_k grad_phi log q(h_k | x)`` of
``E_p(h|x)[grad_phi log q(h | x)]``, for a reparameterised guide ``h_k = h(eps_k, phi)``:

    E[sum_k w~_k grad_phi log q(h_k | x)]
        = E[sum_k (w~_k - w~_k^2) d log w_k / d h_k  d h_k / d phi],

with ``log w_k = log p(x, h_k) - log q_phi(h_k | x)`` differentiated through ``h_k`` only
(log q's parameters held fixed).  The right-hand side has no score term, whose
signal-to-noise ratio is what limits the standard update at large K.  The model's
update is reweighted wake-sleep's (and IWAE's), ``sum_k w~_k grad_theta log p(x, h_k)``.
"""

from __future__ import annotations

from typing import ClassVar

from ._weights import PathwiseReweighting, dreg_factors, log_mean_exp, weighted_log_w
from .base import Estimator, LossParts

__all__ = ["DRegRWS"]


class DRegRWS(Estimator):
    """Reweighted wake-sleep whose guide follows the DReG form of the wake-phi update.

    Per data point draw ``h_1..h_K ~ q(h | x)`` by reparameterisation and normalise the
    weights over them.  One surrogate, ``sum_k w~_k log w_k`` with log q's parameters
    fixed, carries both updates: its model gradient is ``sum_k w~_k grad log p(x, h_k)``
    and gradient hooks on the samples turn its guide gradient into
    ``sum_k (w~_k - w~_k^2) d log w_k / d h_k  d h_k / d phi``, which has the same
    expectation as the wake-phi update of :class:`~.rws.ReweightedWakeSleep`
    (``guide_update="wake"``).  The reported ``objective`` is the K-sample bound.

    :param num_particles: K >= 2 samples per data point.

    Example::

        est = DRegRWS(num_particles=10)
        fit(VAE(x_dim=64), GaussianEncoder(64, 8), est, load_digits(), steps=3000)
    """

    name: ClassVar[str] = "rws-dreg"
    handles_discrete_latents: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = True
    min_particles: ClassVar[int] = 2

    def __init__(self, *, num_particles: int = 5, **options):
        super().__init__(num_particles=num_particles, **options)

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        reweight = PathwiseReweighting(self.plate_nesting(model, guide, args, kwargs))
        tr = self.traces(model, guide, args, kwargs, detach_guide_params=True,
                         guide_value_hook=reweight.hook)
        log_w = tr.log_w
        reweight.set_factors(dreg_factors(log_w, "rws"), tr.data_plate)
        surrogate = -tr.scale * weighted_log_w(log_w).sum()
        bound = tr.scale * log_mean_exp(log_w.detach(), 0).sum()
        return LossParts({"rws_dreg": surrogate}, {"objective": bound, "iwae": bound})
