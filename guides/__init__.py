"""Inference networks as Pyro guides (installed as ``ppl_dgm.guides``)."""

from .gaussian import GaussianEncoder
from .helmholtz import HelmholtzGuide

__all__ = ["GaussianEncoder", "HelmholtzGuide"]
