"""The estimator protocol: one differentiable surrogate with routed gradients.

An estimator is a :class:`pyro.infer.ELBO` (so :class:`pyro.infer.SVI` accepts it)
whose :meth:`Estimator.surrogate` returns :class:`LossParts`: named differentiable
pieces whose sum is a single scalar.  The gradient of that scalar with respect to each
parameter group (model, guide, auxiliary networks) is exactly the update the algorithm
prescribes for that group; ``detach`` does the routing.  Detached metrics (bounds,
learning signals) travel beside the parts without any host synchronisation.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pyro
import torch
from pyro.infer import ELBO

from ..errors import IncompatibleEstimatorError
from ..traces import Traces, guess_plate_nesting, latent_sites, run_traces

__all__ = ["Estimator", "LossParts"]


@dataclass(frozen=True)
class LossParts:
    """Named differentiable loss pieces and named detached metrics.

    ``total`` (the sum of ``parts``) is minimised.  ``metrics`` always holds
    ``"objective"``: the value of the bound or objective the estimator maximises,
    summed over the minibatch and scaled to the full data set, detached.
    """

    parts: Mapping[str, torch.Tensor]
    metrics: Mapping[str, torch.Tensor] = field(default_factory=dict)

    @property
    def total(self) -> torch.Tensor:
        values = list(self.parts.values())
        out = values[0]
        for v in values[1:]:
            out = out + v
        return out


class Estimator(ELBO):
    """Base class of every ppl_dgm estimator.

    Subclasses implement :meth:`surrogate`.  Capability flags say which models they
    can train; :meth:`check` enforces them before any training starts.

    Auxiliary networks and running statistics live in ``self.aux`` (an
    ``nn.Module``): they are moved with :meth:`to`, saved with checkpoints and trained
    by the same optimiser as the model and guide.
    """

    name: ClassVar[str] = "estimator"
    handles_discrete_latents: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = True
    needs_likelihood: ClassVar[bool] = True
    min_particles: ClassVar[int] = 1

    def __init__(self, *, num_particles: int = 1, max_plate_nesting: int | None = None):
        if not isinstance(num_particles, int) or num_particles < self.min_particles:
            raise ValueError(
                f"{type(self).__name__} needs num_particles >= {self.min_particles}, "
                f"got {num_particles!r}")
        super().__init__(num_particles=num_particles,
                         max_plate_nesting=float("inf") if max_plate_nesting is None
                         else max_plate_nesting,
                         vectorize_particles=True)
        self._nesting = max_plate_nesting
        self.aux = torch.nn.Module()

    # ------------------------------------------------------------------ protocol
    def surrogate(self, model: Callable, guide: Callable, x: torch.Tensor) -> LossParts:
        raise NotImplementedError

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        return self.surrogate(model, guide, _data_arg(args, kwargs)).total

    def loss(self, model, guide, *args, **kwargs) -> float:
        _register_params(model, guide, self.aux)
        with torch.no_grad():
            parts = self.surrogate(model, guide, _data_arg(args, kwargs))
        return -float(parts.metrics["objective"])

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        _register_params(model, guide, self.aux)
        parts = self.surrogate(model, guide, _data_arg(args, kwargs))
        parts.total.backward()
        return -float(parts.metrics["objective"])

    def _get_trace(self, model, guide, args, kwargs):  # pyro.infer.ELBO's abstract hook
        raise NotImplementedError("ppl_dgm estimators build their traces with run_traces")

    # ------------------------------------------------------------------ helpers
    def traces(self, model, guide, x, *, num_particles: int | None = None, **kw) -> Traces:
        """Run model and guide with this estimator's particle count (see run_traces)."""
        nesting = self.plate_nesting(model, guide, x)
        k = self.num_particles if num_particles is None else num_particles
        return run_traces(model, guide, x, num_particles=k, nesting=nesting, **kw)

    def plate_nesting(self, model, guide, x) -> int:
        """Plate dimensions used by model and guide (guessed once by a trial run)."""
        if self._nesting is None:
            self._nesting = guess_plate_nesting(model, guide, x)
        return self._nesting

    def prepare(self, model, guide, x) -> None:
        """Build what this estimator keeps for ``model`` and ``guide`` (auxiliary
        networks sized by the data, running statistics).  Idempotent; validates nothing
        (that is :meth:`check`).  Runs before the optimiser is built, so the same
        optimiser trains what it builds."""

    def check(self, model, guide, x) -> None:
        """Fail early if this estimator cannot train ``model`` with ``guide``.

        Names the offending site and lists the registered estimators that can.
        """
        tr = self.traces(model, guide, x, num_particles=1).guide_trace
        if self.needs_reparam:
            for name in latent_sites(tr):
                fn = tr.nodes[name]["fn"]
                if not getattr(fn, "has_rsample", False):
                    raise IncompatibleEstimatorError(
                        f"estimator {self.name!r} needs reparameterised latents, but the "
                        f"guide's site {name!r} samples from {_dist_name(fn)}, which has "
                        f"no rsample (a discrete or non-reparameterisable latent). "
                        f"Use an estimator that handles discrete latents: "
                        f"{', '.join(_discrete_capable()) or 'none registered'}.")

    def to(self, device) -> Estimator:
        self.aux.to(device)
        return self

    def parameters(self):
        return self.aux.parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.aux.state_dict()

    def load_state_dict(self, state) -> None:
        self.aux.load_state_dict(state)

    def active_groups(self, step: int) -> frozenset[str] | None:
        """Parameter groups updated at ``step`` (None: all).  Alternating schedules
        such as k critic steps per generator step override this."""
        return None

    def describe(self) -> dict:
        """Capability flags, for ``ppl-dgm list`` and compatibility checks."""
        return {"handles_discrete_latents": self.handles_discrete_latents,
                "needs_reparam": self.needs_reparam,
                "needs_likelihood": self.needs_likelihood,
                "min_particles": self.min_particles}


def _dist_name(fn) -> str:
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return type(fn).__name__


def _discrete_capable() -> list[str]:
    # The registry is the one list of estimators.  It sits above this module (it
    # imports every estimator), so it is looked up only when a message needs it.
    from ..registry import ESTIMATORS

    return [f"{cls.__name__} ({name!r})" for name, cls in ESTIMATORS.items()
            if cls.handles_discrete_latents]


def _register_params(model, guide, aux) -> None:
    # pyro.infer.SVI finds the parameters to update through pyro.param statements
    # recorded while loss_and_grads runs.  Our networks are reached without such
    # statements (they cost time on every step), so emit them here, once per call.
    for name, module in (("model", model), ("guide", guide), ("estimator", aux)):
        if isinstance(module, torch.nn.Module) and any(True for _ in module.parameters()):
            pyro.module(name, module)


def _data_arg(args, kwargs) -> torch.Tensor:
    if args:
        return args[0]
    if "x" in kwargs:
        return kwargs["x"]
    raise TypeError("estimators are called as loss(model, guide, x): pass the data batch "
                    "as the first argument or as x=...")
