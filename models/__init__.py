"""Generative models as Pyro programs (installed as ``ppl_dgm.models``)."""

from .ar_vae import MADEVAE, NADEVAE, AutoregressiveVAE
from .autoregressive import AutoregressiveBernoulli, OrderMixture
from .code import FactorialCode
from .conjugate import ConjugateGaussian
from .dbm import DBM
from .dbn import DBN
from .generator import DCGANGenerator, Generator
from .hierarchical import Hierarchical
from .made import MADE
from .nade import NADE
from .rbm import RBM
from .sbn import SigmoidBeliefNet
from .sentence_vae import SentenceVAE
from .vae import VAE

__all__ = ["DCGANGenerator", "FactorialCode", "Generator", "VAE", "ConjugateGaussian",
           "SigmoidBeliefNet", "Hierarchical", "NADE", "MADE", "AutoregressiveVAE",
           "MADEVAE", "NADEVAE", "AutoregressiveBernoulli", "OrderMixture", "SentenceVAE",
           "RBM", "DBN", "DBM"]
