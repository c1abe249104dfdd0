"""Exceptions raised by ppl_dgm.

Every error names what is wrong (the argument, site or file), what was expected and
what was found, and says how to fix it.  They subclass the built-in exception that a
caller would naturally catch (``ValueError`` for bad input, ``RuntimeError`` for
failures during a run).
"""

from __future__ import annotations

__all__ = [
    "CheckpointError",
    "DataError",
    "IncompleteResultError",
    "IncompatibleEstimatorError",
    "NonFiniteLossError",
    "ParticleWarning",
    "ResumeError",
    "SiteMismatchError",
    "UnknownNameError",
    "UntrustedCodeError",
    "UserCodeError",
]


class DataError(ValueError):
    """The data cannot be used with the model (NaN, wrong shape, outside the support)."""


class SiteMismatchError(ValueError):
    """Model and guide disagree about the latent sample sites."""


class IncompatibleEstimatorError(ValueError):
    """The estimator cannot handle some site of the model or guide."""


class UnknownNameError(KeyError):
    """A model, guide or estimator name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want plain text
        return str(self.args[0]) if self.args else ""


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated or does not fit the modules."""


class UntrustedCodeError(ValueError):
    """A run directory names a Python file (a user's model, guide or estimator); importing
    it would run its code, which is refused unless the caller trusts it (``--trust-code``)."""


class UserCodeError(RuntimeError):
    """A user's own Python file (a model, guide or estimator given as ``file.py:Name``)
    failed to import or raised while it ran; the message names the file and line."""


class ResumeError(ValueError):
    """A resumed run was given options that differ from the ones it was started with."""


class IncompleteResultError(ValueError):
    """A comparison output directory has no completeness marker: it was interrupted
    while it was written, or was not written by ``compare``."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss; the last good state was kept."""

    def __init__(self, message: str, *, step: int, checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.checkpoint = checkpoint


class ParticleWarning(UserWarning):
    """A model and guide could not draw particles in one vectorised run; they are run
    one particle at a time (same weights, more time)."""
