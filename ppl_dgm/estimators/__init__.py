"""Estimators: every way of training a deep generative model, as a loss over traces."""

from ..traces import Traces, run_traces
from ._weights import log_mean_exp
from .aavae import AAVAE
from .base import Estimator, LossParts
from .elbo import ELBO
from .gan import GAN, NSGAN
from .iwae import IWAE
from .iwgan import IWGAN
from .mmd import MMD
from .nvil import NVIL
from .pm import PredictabilityMinimization
from .reinforce import REINFORCE
from .rws import ReweightedWakeSleep
from .rws_dreg import DRegRWS
from .vimco import VIMCO
from .wake_sleep import WakeSleep
from .wgan_gp import WGANGP

__all__ = ["AAVAE", "DRegRWS", "ELBO", "Estimator", "GAN", "IWAE", "IWGAN", "LossParts", "MMD",
           "NSGAN", "NVIL", "REINFORCE", "VIMCO", "PredictabilityMinimization",
           "ReweightedWakeSleep", "Traces", "WGANGP", "WakeSleep", "log_mean_exp", "run_traces"]
