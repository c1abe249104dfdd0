"""Estimators: every way of training a deep generative model, as a loss over traces."""

from ..traces import Traces, run_traces
from ._weights import log_mean_exp
from .aavae import AAVAE
from .base import Estimator, LossParts
from .cd import ContrastiveDivergence
from .elbo import ELBO
from .gan import GAN, NSGAN
from .greedy import GreedyLayerwise
from .iwae import IWAE
from .iwgan import IWGAN
from .mf_pcd import MeanFieldPCD
from .mmd import MMD
from .nvil import NVIL
from .pcd import PersistentCD
from .pm import PredictabilityMinimization
from .reinforce import REINFORCE
from .rws import ReweightedWakeSleep
from .rws_dreg import DRegRWS
from .updown import UpDown
from .vimco import VIMCO
from .wake_sleep import WakeSleep
from .wgan_gp import WGANGP

__all__ = [
    "AAVAE", "ContrastiveDivergence", "DRegRWS", "ELBO", "Estimator", "GAN", "GreedyLayerwise",
    "IWAE", "IWGAN", "LossParts", "MMD", "MeanFieldPCD", "NSGAN", "NVIL", "PersistentCD",
    "PredictabilityMinimization", "REINFORCE", "ReweightedWakeSleep", "Traces", "UpDown", "VIMCO",
    "WGANGP", "WakeSleep", "log_mean_exp", "run_traces",
]
