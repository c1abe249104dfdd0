"""Estimators: every way of training a deep generative model, as a loss over traces."""

from .base import Estimator, LossParts, log_mean_exp
from .elbo import ELBO
from .iwae import IWAE
from .traces import Traces, run_traces

__all__ = ["ELBO", "IWAE", "Estimator", "LossParts", "Traces", "log_mean_exp", "run_traces"]
