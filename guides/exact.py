"""The exact posterior of the linear-Gaussian model, as a guide (a reference for diagnostics)."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule

__all__ = ["ConjugatePosteriorGuide"]


class ConjugatePosteriorGuide(PyroModule):
    """``q(z | x) = N(m(x), c^2 S)``: the exact posterior of a ``ConjugateGaussian`` when
    ``scale_factor`` c is 1.

    The posterior mean ``m(x)`` and covariance ``S`` are read from the model's current
    parameters at every call (the guide has no parameters of its own and does not hold
    the model as a submodule, so checkpoints and optimisers never see the model twice).
    ``scale_factor < 1`` makes the guide deliberately too narrow, ``> 1`` too wide: a
    known-bad and a known-safe proposal for testing diagnostics.  For a Gaussian
    target and a Gaussian proposal with standard deviations ``c`` times the target's,
    the importance weights have a Pareto tail with shape ``k = 1 - c^2`` when ``c < 1``
    and are bounded when ``c >= 1``.

    :param model: a :class:`~ppl_dgm.models.ConjugateGaussian` (anything with
        ``posterior(x) -> (mean, cov)`` and ``latent_dims == {site: d}``).
    :param scale_factor: c, multiplies the posterior standard deviations.
    """

    def __init__(self, model, *, scale_factor: float = 1.0):
        super().__init__()
        if not hasattr(model, "posterior"):
            raise ValueError(f"ConjugatePosteriorGuide needs a model with a closed-form "
                             f"posterior(x) method; {type(model).__name__} has none")
        if not scale_factor > 0:
            raise ValueError(f"scale_factor must be > 0, got {scale_factor}")
        (self.site, self.z_dim), = dict(model.latent_dims).items()
        self.scale_factor = float(scale_factor)
        # a plain reference, deliberately not registered as a submodule
        object.__setattr__(self, "_model", model)

    @classmethod
    def from_model(cls, model, **options) -> ConjugatePosteriorGuide:
        return cls(model, **options)

    def distribution(self, x: torch.Tensor) -> dist.Distribution:
        mean, cov = self._model.posterior(x)
        scale_tril = torch.linalg.cholesky(cov) * self.scale_factor
        return dist.MultivariateNormal(mean, scale_tril=scale_tril)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None) -> torch.Tensor:
        if x is None:
            raise ValueError("ConjugatePosteriorGuide is an inference network: it needs x")
        with pyro.plate("data", x.shape[0]):
            return pyro.sample(self.site, self.distribution(x))
