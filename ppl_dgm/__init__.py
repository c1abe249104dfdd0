"""ppl_dgm: classic deep generative models as Pyro programs, trained by swappable estimators."""


__version__ = "0.1.0"

__all__ = ["__version__"]
