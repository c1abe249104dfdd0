"""Generative models as Pyro programs (installed as ``ppl_dgm.models``)."""

from .code import FactorialCode
from .conjugate import ConjugateGaussian
from .generator import DCGANGenerator, Generator
from .hierarchical import Hierarchical
from .sbn import SigmoidBeliefNet
from .vae import VAE

__all__ = ["DCGANGenerator", "FactorialCode", "Generator", "VAE", "ConjugateGaussian",
           "SigmoidBeliefNet", "Hierarchical"]
