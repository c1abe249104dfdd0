"""Generative models as Pyro programs (installed as ``ppl_dgm.models``)."""

from .code import FactorialCode
from .conjugate import ConjugateGaussian
from .dbm import DBM
from .dbn import DBN
from .generator import DCGANGenerator, Generator
from .hierarchical import Hierarchical
from .rbm import RBM
from .sbn import SigmoidBeliefNet
from .vae import VAE

__all__ = ["DCGANGenerator", "FactorialCode", "Generator", "VAE", "ConjugateGaussian",
           "SigmoidBeliefNet", "Hierarchical", "RBM", "DBN", "DBM"]
