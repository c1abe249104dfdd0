"""Inference networks as Pyro guides (installed as ``ppl_dgm.guides``)."""

from .gaussian import GaussianEncoder

__all__ = ["GaussianEncoder"]
