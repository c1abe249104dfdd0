"""Generative models as Pyro programs (installed as ``ppl_dgm.models``)."""

from .conjugate import ConjugateGaussian
from .sbn import SigmoidBeliefNet
from .vae import VAE

__all__ = ["VAE", "ConjugateGaussian", "SigmoidBeliefNet"]
