"""Inference networks as Pyro guides (installed as ``ppl_dgm.guides``)."""

from .discriminator import DCGANDiscriminator, Discriminator, UnitPredictors
from .gaussian import GaussianEncoder
from .helmholtz import HelmholtzGuide

__all__ = ["DCGANDiscriminator", "Discriminator", "UnitPredictors", "GaussianEncoder",
           "HelmholtzGuide"]
