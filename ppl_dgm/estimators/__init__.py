"""Estimators: every way of training a deep generative model, as a loss over traces."""

from .base import Estimator, LossParts, log_mean_exp
from .elbo import ELBO
from .iwae import IWAE
from .nvil import NVIL
from .reinforce import REINFORCE
from .rws import ReweightedWakeSleep
from .traces import Traces, run_traces
from .vimco import VIMCO
from .gan import GAN, NSGAN
from .iwgan import IWGAN
from .wgan_gp import WGANGP
from .mmd import MMD
from .pm import PredictabilityMinimization
from .aavae import AAVAE
from .wake_sleep import WakeSleep

__all__ = ["AAVAE", "ELBO", "Estimator", "GAN", "IWAE", "IWGAN", "LossParts", "MMD", "NSGAN",
           "PredictabilityMinimization", "ReweightedWakeSleep", "Traces", "WGANGP", "WakeSleep",
           "log_mean_exp", "run_traces"]
__all__ += ["NVIL", "REINFORCE", "VIMCO"]
