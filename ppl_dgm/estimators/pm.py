"""Predictability minimisation (Schmidhuber 1992, "Learning factorial codes by
predictability minimization").

A code model maps each data point to code units ``c_i in (0, 1)``.  Predictors
``P_i(c_{-i})`` guess each unit from the others and minimise the squared error
``sum_i (P_i(c_{-i}) - c_i)^2``; the code units maximise the same error.  At the
equilibrium no unit is predictable from the others: the code is factorial.  An optional
reconstruction term (``log p(x | c)`` of the code model's decoder) keeps the code
informative about the data; with ``reconstruction=0`` only predictability is minimised.

In the unified view (Hu et al. 2017 interpret PM in their supplement) the predictors
play the discriminator's role and the code the generator's, so the predictors sit in
the guide slot (:class:`ppl_dgm.guides.UnitPredictors`) and the same routing applies:
the predictors' error sees the code detached (reaches only the predictors); the code's
error calls the predictors with their parameters detached (reaches only the code
model, through both the predicted unit and the predictors' inputs).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar

import torch
from pyro import poutine

from ..errors import IncompatibleEstimatorError
from ..traces import data_argument
from ._adversarial import (
    CRITIC_GROUPS,
    GENERATOR_GROUPS,
    alternating_groups,
    check_n_critic,
    check_real_data,
    frozen_call,
    sample_sites,
)
from .base import Estimator, LossParts

__all__ = ["CODE_SITE", "PredictabilityMinimization", "mean_abs_correlation",
           "prediction_error", "total_correlation"]

CODE_SITE = "code"
DATA_SITE = "x"


def prediction_error(predictions: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """``sum_points sum_i (P_i - c_i)^2``."""
    return ((predictions - code) ** 2).sum()


def mean_abs_correlation(code: torch.Tensor) -> torch.Tensor:
    """Mean absolute Pearson correlation over distinct pairs of code units (columns of
    ``code (n, m)``); 0 for uncorrelated units.  Constant units count as uncorrelated."""
    c = code.reshape(-1, code.shape[-1])
    c = c - c.mean(0)
    cov = c.T @ c / max(c.shape[0] - 1, 1)
    sd = cov.diagonal().clamp_min(1e-12).sqrt()
    corr = cov / (sd[:, None] * sd[None, :])
    m = corr.shape[0]
    off = corr[~torch.eye(m, dtype=torch.bool, device=corr.device)]
    return off.abs().mean()


def total_correlation(bits: torch.Tensor) -> float:
    """Total correlation ``sum_i H(b_i) - H(b)`` in bits of binary codes ``(n, m)``
    (plug-in estimate from counts; 0 exactly when the empirical units are independent).

    Host-side evaluation helper (not used inside a training step); ``m`` up to ~20."""
    b = (bits.detach().reshape(-1, bits.shape[-1]) > 0.5).long().cpu()
    n, m = b.shape
    if m > 20:
        raise ValueError(f"total_correlation enumerates 2^m joint states; m={m} is too many")
    weights = 2 ** torch.arange(m)
    joint = torch.bincount((b * weights).sum(1), minlength=2 ** m).double() / n

    def entropy(p: torch.Tensor) -> float:
        p = p[p > 0]
        return float(-(p * p.log2()).sum())

    marg = sum(entropy(torch.tensor([1.0 - float(q), float(q)])) for q in b.double().mean(0))
    return max(marg - entropy(joint), 0.0)


def _predictions(guide, code: torch.Tensor, *, frozen: bool = False) -> torch.Tensor:
    fn = partial(frozen_call, guide) if frozen else guide
    tr = poutine.trace(fn).get_trace(code)
    return tr.nodes[CODE_SITE]["fn"].mean


class PredictabilityMinimization(Estimator):
    """Predictability minimisation: code units against unit predictors.

    :param reconstruction: weight of the code model's reconstruction log-likelihood
        ``log p(x | c)`` in the code's objective (0: pure predictability minimisation).
    :param n_critic: ``None`` (default) updates code and predictors on every step;
        ``k`` alternates k predictor-only steps with one code-only step.

    The model is a code model (:class:`ppl_dgm.models.FactorialCode`: site ``"code"``,
    the units, and site ``"x"``, the reconstruction); the guide holds the predictors
    (:class:`ppl_dgm.guides.UnitPredictors`: site ``"code"`` with mean ``P(c)``).
    ``metrics["objective"]`` is the code's objective ``sum (P_i - c_i)^2 +
    reconstruction * sum log p(x | c)`` over the minibatch; also ``prediction_error``
    (mean squared error per unit and point; 0.25 is the largest possible, reached by
    independent fair binary units), ``reconstruction`` (mean log p(x | c) per point) and
    ``abs_corr`` (mean absolute correlation between units in the batch).

    Example::

        model = FactorialCode(x_dim=8, code_dim=4, likelihood="gaussian")
        fit(model, UnitPredictors(code_dim=4), PredictabilityMinimization(), data, steps=3000)
    """

    name: ClassVar[str] = "pm"
    handles_discrete_latents: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = False
    needs_likelihood: ClassVar[bool] = False

    def __init__(self, *, reconstruction: float = 1.0, n_critic: int | None = None,
                 **options):
        super().__init__(**options)
        if not reconstruction >= 0:
            raise ValueError(f"reconstruction must be >= 0, got {reconstruction!r}")
        self.reconstruction = float(reconstruction)
        self.n_critic = check_n_critic(n_critic)

    def active_groups(self, step: int) -> frozenset[str] | None:
        return alternating_groups(step, self.n_critic, CRITIC_GROUPS, GENERATOR_GROUPS)

    def check(self, model, guide, *args, **kwargs) -> None:
        x = data_argument(args, kwargs)
        check_real_data(x, self.name)
        n = min(2, x.shape[0])
        xb = x[:n]
        try:
            with torch.no_grad():
                tr = poutine.trace(model).get_trace(xb)
        except Exception as e:
            raise IncompatibleEstimatorError(
                f"estimator 'pm' runs the code model on data, model(x); model "
                f"{type(model).__name__} failed ({type(e).__name__}: {e})") from e
        site = tr.nodes.get(CODE_SITE)
        if site is None or site["type"] != "sample":
            raise IncompatibleEstimatorError(
                f"estimator 'pm' needs a code model: model(x) must record the code units as "
                f"site {CODE_SITE!r} (e.g. pyro.deterministic({CODE_SITE!r}, sigmoid(E(x)), "
                f"event_dim=1)); model {type(model).__name__} has sites "
                f"{sample_sites(tr)}. Use "
                f"ppl_dgm.models.FactorialCode (--model code)")
        code = site["value"]
        if code.dim() != 2 or code.shape[0] != n or code.shape[1] < 2:
            raise IncompatibleEstimatorError(
                f"estimator 'pm': the code site has shape {tuple(code.shape)} for {n} points; "
                f"expected (n, code_dim) with code_dim >= 2")
        if self.reconstruction > 0 and DATA_SITE not in tr.nodes:
            raise IncompatibleEstimatorError(
                f"estimator 'pm' with reconstruction={self.reconstruction} needs the code "
                f"model to observe the data as site {DATA_SITE!r} (a decoder p(x | code)); "
                f"pass reconstruction=0 for pure predictability minimisation")
        try:
            with torch.no_grad():
                pred = _predictions(guide, code)
        except Exception as e:
            raise IncompatibleEstimatorError(
                f"estimator 'pm' needs unit predictors as the guide, called on the code "
                f"(shape {tuple(code.shape)}) and drawing site {CODE_SITE!r} with mean "
                f"P(code); guide {type(guide).__name__} failed ({type(e).__name__}: {e}). "
                f"Use ppl_dgm.guides.UnitPredictors (--guide predictors)") from e
        if tuple(pred.shape) != tuple(code.shape):
            raise IncompatibleEstimatorError(
                f"estimator 'pm': guide {type(guide).__name__} predicts shape "
                f"{tuple(pred.shape)} for a code of shape {tuple(code.shape)}")

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        tr = poutine.trace(model).get_trace(x)
        code = tr.nodes[CODE_SITE]["value"]
        err_predictors = prediction_error(_predictions(guide, code.detach()), code.detach())
        err_code = prediction_error(_predictions(guide, code, frozen=True), code)
        parts = {"predictors": err_predictors, "code": -err_code}
        n = x.shape[0]
        metrics = {"prediction_error": err_code.detach() / code.numel(),
                   "abs_corr": mean_abs_correlation(code.detach())}
        objective = err_code.detach()
        if self.reconstruction > 0:
            site = tr.nodes[DATA_SITE]
            recon = (site["fn"].log_prob(site["value"]) * site["scale"]).sum()
            parts["reconstruction"] = -self.reconstruction * recon
            objective = objective + self.reconstruction * recon.detach()
            metrics["reconstruction"] = recon.detach() / n
        metrics["objective"] = objective
        return LossParts(parts, metrics)
