"""Estimators: every way of training a deep generative model, as a loss over traces."""

from .base import Estimator, LossParts, log_mean_exp
from .elbo import ELBO
from .iwae import IWAE
from .rws import ReweightedWakeSleep
from .traces import Traces, run_traces
from .wake_sleep import WakeSleep

__all__ = ["ELBO", "IWAE", "Estimator", "LossParts", "ReweightedWakeSleep", "Traces", "WakeSleep",
           "log_mean_exp", "run_traces"]
