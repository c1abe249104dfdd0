"""Inference networks as Pyro guides (installed as ``ppl_dgm.guides``)."""

from .dbm import DBMMeanField
from .dbn import DBNGuide
from .discriminator import DCGANDiscriminator, Discriminator, UnitPredictors
from .empty import EmptyGuide
from .exact import ConjugatePosteriorGuide
from .gaussian import GaussianEncoder
from .helmholtz import HelmholtzGuide
from .hierarchical import HierarchicalGuide
from .sentence import SentenceEncoder

__all__ = ["DCGANDiscriminator", "Discriminator", "UnitPredictors", "GaussianEncoder",
           "HelmholtzGuide", "ConjugatePosteriorGuide", "HierarchicalGuide",
           "EmptyGuide", "SentenceEncoder", "DBNGuide", "DBMMeanField"]
