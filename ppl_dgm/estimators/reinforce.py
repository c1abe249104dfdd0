"""Score-function ELBO (REINFORCE; Williams 1992), with a moving-average baseline."""

from __future__ import annotations

from typing import ClassVar

import torch

from ._score import RunningMoments, nonreparam_sites, pathwise_log_w, score_terms, total
from .base import Estimator, LossParts

__all__ = ["REINFORCE", "reinforce_surrogate"]


def reinforce_surrogate(log_w: torch.Tensor, score: torch.Tensor,
                        signal: torch.Tensor) -> torch.Tensor:
    """Per (particle, point) surrogate ``log_w + signal.detach() * score``.

    ``log_w`` carries the pathwise gradients, ``score`` is ``log q`` of the
    non-reparameterised sites and ``signal`` the (baselined) learning signal; its
    gradient, averaged over draws, is the gradient of ``E_q[log w]``.
    """
    return log_w + signal.detach() * score


class REINFORCE(Estimator):
    """The ELBO with score-function gradients for non-reparameterisable guide sites.

    For the guide's discrete (non-``rsample``) sites the gradient is
    ``(log w - b) grad log q(h | x)`` with learning signal ``log w = log p(x, h) -
    log q(h | x)``; reparameterised sites get pathwise gradients, the model gets
    ``grad log p(x, h)``.  Every data point's score is weighted by its own ``log w``
    only (Rao-Blackwellised over the data plate).

    :param num_particles: samples per data point, averaged.
    :param baseline: ``"ema"`` subtracts an exponential moving average of the per-point
        signal (a device buffer updated in place; the value from before this step is
        used, so the estimate stays unbiased); ``None`` uses no baseline.
    :param decay: the moving average's decay per step.

    Example::

        est = REINFORCE(baseline="ema")
        fit(SigmoidBeliefNet(64, (12,)), guide, est, load_digits(), steps=3000)
    """

    name: ClassVar[str] = "reinforce"
    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False

    def __init__(self, *, num_particles: int = 1, baseline: str | None = "ema",
                 decay: float = 0.9, max_plate_nesting: int | None = None):
        super().__init__(num_particles=num_particles, max_plate_nesting=max_plate_nesting)
        if baseline not in ("ema", None, "none"):
            raise ValueError(f"baseline={baseline!r}; choose 'ema' (moving average) or None")
        self.baseline = None if baseline == "none" else baseline
        self.decay = decay
        if self.baseline == "ema":
            self.aux.moments = RunningMoments(decay)

    def surrogate(self, model, guide, x) -> LossParts:
        tr = self.traces(model, guide, x)
        sites = nonreparam_sites(tr.guide_trace)
        log_w = pathwise_log_w(tr, sites)
        signal = tr.log_w.detach()
        metrics = {}
        if self.baseline == "ema":
            moments = self.aux.moments
            if moments.mean.device != signal.device or moments.mean.dtype != signal.dtype:
                moments.to(device=signal.device, dtype=signal.dtype)
            b = moments.mean.clone()
            # Before the first update there is no average yet: use no baseline.
            b = torch.where(moments.count > 0, b, torch.zeros_like(b))
            if torch.is_grad_enabled():
                moments.update_(signal)
            metrics["baseline"] = b
            signal = signal - b
        score = total(list(score_terms(tr, sites).values()), log_w)
        per_point = reinforce_surrogate(log_w, score, signal)
        objective = tr.scale * per_point.mean(0).sum()
        value = (tr.scale * tr.log_w.detach().mean(0).sum())
        metrics.update(objective=value, elbo=value)
        return LossParts({"reinforce": -objective}, metrics)
