"""The estimator protocol: one differentiable surrogate with routed gradients.

An estimator is a :class:`pyro.infer.ELBO` (so :class:`pyro.infer.SVI` accepts it)
whose :meth:`Estimator.surrogate` returns :class:`LossParts`: named differentiable
pieces whose sum is a single scalar.  The gradient of that scalar with respect to each
parameter group (model, guide, auxiliary networks) is exactly the update the algorithm
prescribes for that group; ``detach`` does the routing.  Detached metrics (bounds,
learning signals) travel beside the parts without any host synchronisation.

The ``pyro.infer.ELBO`` contract holds for every estimator: :meth:`Estimator.loss`
returns the loss (minus the objective) without gradient machinery;
:meth:`~Estimator.differentiable_loss` returns a tensor whose *value* is the loss and
whose *gradient* is the surrogate's (the surrogate enters as ``s - s.detach()``);
:meth:`~Estimator.loss_and_grads` backpropagates the surrogate and returns the loss.
Each entry point validates the model and guide first (once per pair) and builds what
the estimator keeps for them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import pyro
import torch
from pyro.infer import ELBO

from .. import particles
from ..energy import energy_sites, unnormalised_energies
from ..errors import IncompatibleEstimatorError
from ..traces import Traces, as_call, guess_plate_nesting, latent_sites

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
    can train; :meth:`check` enforces them before any training starts and
    :meth:`prepare` builds what the estimator keeps for a model and guide.

    Auxiliary networks and running statistics live in ``self.aux`` (an
    ``nn.Module``): they are moved with :meth:`to`, saved with checkpoints and trained
    by the same optimiser as the model and guide.

    Keyword options of :class:`pyro.infer.ELBO`, accepted by every estimator:

    * ``num_particles``: honoured (samples per data point);
    * ``max_plate_nesting``: honoured; ``None`` or ``inf`` (Pyro's default) has it
      found by a trial run of model and guide;
    * ``vectorize_particles``: ``None`` (default) vectorises the particles when the
      programs allow it (a trial run decides, see :mod:`ppl_dgm.particles`), ``True``
      always vectorises, ``False`` runs the particles one by one;
    * ``retain_graph``: honoured by :meth:`loss_and_grads`;
    * ``strict_enumeration_warning``, ``ignore_jit_warnings``, ``jit_options``,
      ``tail_adaptive_beta``, ``max_iarange_nesting``: accepted and ignored (no
      estimator here enumerates or compiles; sites marked for enumeration are refused
      by name).
    """

    name: ClassVar[str] = "estimator"
    handles_discrete_latents: ClassVar[bool] = False
    needs_reparam: ClassVar[bool] = True
    needs_likelihood: ClassVar[bool] = True
    min_particles: ClassVar[int] = 1
    handles_energy_sites: ClassVar[bool] = False

    def __init__(self, *, num_particles: int = 1, max_plate_nesting: float | None = None,
                 vectorize_particles: bool | None = None,
                 strict_enumeration_warning: bool = True, ignore_jit_warnings: bool = False,
                 jit_options: dict | None = None, retain_graph: bool | None = None,
                 tail_adaptive_beta: float = -1.0, max_iarange_nesting: float | None = None):
        if isinstance(num_particles, bool) or not isinstance(num_particles, int) \
                or num_particles < self.min_particles:
            raise ValueError(
                f"{type(self).__name__} needs num_particles >= {self.min_particles}, "
                f"got {num_particles!r}")
        if max_plate_nesting is None and max_iarange_nesting is not None:
            max_plate_nesting = max_iarange_nesting
        if max_plate_nesting is not None and max_plate_nesting != float("inf") and (
                max_plate_nesting != int(max_plate_nesting) or max_plate_nesting < 0):
            raise ValueError(f"max_plate_nesting must be a non-negative integer (or None / "
                             f"inf to find it by a trial run), got {max_plate_nesting!r}")
        if vectorize_particles not in (None, True, False):
            raise ValueError(f"vectorize_particles must be None (decided by a trial run), "
                             f"True or False, got {vectorize_particles!r}")
        super().__init__(num_particles=num_particles, max_plate_nesting=float("inf"),
                         vectorize_particles=bool(vectorize_particles),
                         strict_enumeration_warning=strict_enumeration_warning,
                         ignore_jit_warnings=ignore_jit_warnings, jit_options=jit_options,
                         retain_graph=retain_graph, tail_adaptive_beta=tail_adaptive_beta)
        self._nesting = None if max_plate_nesting in (None, float("inf")) \
            else int(max_plate_nesting)
        self._vectorize = vectorize_particles
        self._ready = particles.PairCache()
        self.aux = torch.nn.Module()

    # ------------------------------------------------------------------ protocol
    def surrogate(self, model: Callable, guide: Callable, *args, **kwargs) -> LossParts:
        """The routed surrogate and detached metrics for one call of the programs,
        ``model(*args, **kwargs)`` and ``guide(*args, **kwargs)``."""
        raise NotImplementedError

    def setup(self, model, guide, *args, **kwargs) -> None:
        """:meth:`check` then :meth:`prepare`, once per model and guide pair."""
        if self._ready.get(model, guide):
            return
        # the trial runs draw no random number of the caller's stream: a first call
        # of loss() or differentiable_loss() samples what a later one would
        with torch.random.fork_rng(devices=particles.cuda_devices(args, kwargs)):
            self.check(model, guide, *args, **kwargs)
            self.prepare(model, guide, *args, **kwargs)
        self._ready.set(model, guide, True)

    def _parts(self, model, guide, args, kwargs) -> LossParts:
        self.setup(model, guide, *args, **kwargs)
        return self.surrogate(model, guide, *args, **kwargs)

    def loss(self, model, guide, *args, **kwargs) -> float:
        """The loss (minus the objective) of one draw, without gradients."""
        with torch.no_grad():
            parts = self._parts(model, guide, args, kwargs)
        return -float(parts.metrics["objective"])

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        """A tensor whose value is the loss and whose gradient is the surrogate's."""
        parts = self._parts(model, guide, args, kwargs)
        total = parts.total
        value = -parts.metrics["objective"].detach()
        if not total.requires_grad:
            return value
        return value + (total - total.detach())

    def loss_and_grads(self, model, guide, *args, **kwargs) -> float:
        """Backpropagate the surrogate and return the loss.  When nothing trainable
        reaches the surrogate there is nothing to backpropagate (as in Pyro)."""
        self.setup(model, guide, *args, **kwargs)     # builds auxiliary networks first,
        _register_params(model, guide, self.aux)      # so SVI trains them from step one
        parts = self.surrogate(model, guide, *args, **kwargs)
        total = parts.total
        if total.requires_grad:
            total.backward(retain_graph=self.retain_graph)
        return -float(parts.metrics["objective"])

    def _get_trace(self, model, guide, args, kwargs):  # pyro.infer.ELBO's abstract hook
        raise NotImplementedError("ppl_dgm estimators build their traces with run_traces")

    # ------------------------------------------------------------------ helpers
    def traces(self, model, guide, args=(), kwargs=None, *, num_particles: int | None = None,
               **options) -> Traces:
        """Run model and guide with this estimator's particle count (see run_traces),
        vectorised when the programs allow it."""
        args, kwargs = as_call(args, kwargs)
        nesting = self.plate_nesting(model, guide, args, kwargs)
        k = self.num_particles if num_particles is None else num_particles
        return particles.run_particles(model, guide, args, kwargs, num_particles=k,
                                       nesting=nesting, vectorize=self._vectorize, **options)

    def plate_nesting(self, model, guide, args=(), kwargs=None) -> int:
        """Plate dimensions used by model and guide (guessed once by a trial run)."""
        if self._nesting is None:
            self._nesting = guess_plate_nesting(model, guide, args, kwargs)
        return self._nesting

    def prepare(self, model, guide, *args, **kwargs) -> None:
        """Build what this estimator keeps for ``model`` and ``guide`` (auxiliary
        networks sized by the data, running statistics).  Idempotent; validates nothing
        (that is :meth:`check`).  Runs before the optimiser is built, so the same
        optimiser trains what it builds."""

    def check(self, model, guide, *args, **kwargs) -> None:
        """Fail early if this estimator cannot train ``model`` with ``guide``.

        Names the offending site and lists the registered estimators that can.
        """
        with unnormalised_energies():  # no log Z (an AIS run) just to check
            self.check_traces(self.traces(model, guide, args, kwargs,
                                          num_particles=self._check_particles))

    @property
    def _check_particles(self) -> int:
        # programs asked to run vectorised are checked as they will run; others with one
        return self.num_particles if self._vectorize is True else 1

    def check_traces(self, tr: Traces) -> None:
        """The checks of :meth:`check` on one run's traces."""
        check_no_enumeration(tr)
        if not self.handles_energy_sites:
            check_no_energy_sites(self, tr)
        if self.needs_reparam:
            for name in latent_sites(tr.guide_trace):
                fn = tr.guide_trace.nodes[name]["fn"]
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
                "min_particles": self.min_particles,
                "handles_energy_sites": self.handles_energy_sites}


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


def check_no_energy_sites(est: Estimator, tr: Traces) -> None:
    """Refuse energy-based (undirected) sites: their ``log Z`` has no gradient here."""
    names = energy_sites(tr.model_trace)
    if names:
        from ..registry import ESTIMATORS

        capable = [f"{cls.__name__} ({name!r})" for name, cls in ESTIMATORS.items()
                   if cls.handles_energy_sites]
        fn = tr.model_trace.nodes[names[0]]["fn"]
        raise IncompatibleEstimatorError(
            f"estimator {est.name!r} cannot train the model's site {names[0]!r}: it is "
            f"an energy-based distribution ({_dist_name(fn)}, an RBM) known up to its "
            f"normaliser log Z, whose gradient (the model term E_p[dF]) a likelihood "
            f"estimator cannot compute. Train it with contrastive divergence: "
            f"{', '.join(capable) or 'none registered'}")


def _register_params(model, guide, aux) -> None:
    # pyro.infer.SVI finds the parameters to update through pyro.param statements
    # recorded while loss_and_grads runs.  Our networks are reached without such
    # statements (they cost time on every step), so emit them here, once per call.
    for name, module in (("model", model), ("guide", guide), ("estimator", aux)):
        if isinstance(module, torch.nn.Module) and any(True for _ in module.parameters()):
            pyro.module(name, module)


def check_no_enumeration(tr: Traces) -> None:
    """Refuse sites left to enumeration: no estimator here enumerates.  A site marked
    ``infer={"enumerate": ...}`` that the guide samples is an ordinary sampled site (as
    for Pyro's Trace_ELBO); one that the guide does not sample, or a mark in the guide,
    asks for a sum over its values."""
    guide_latents = set(latent_sites(tr.guide_trace))
    for label, trace in (("guide", tr.guide_trace), ("model", tr.model_trace)):
        for name in latent_sites(trace):
            mark = trace.nodes[name]["infer"].get("enumerate")
            if mark and (label == "guide" or name not in guide_latents):
                raise IncompatibleEstimatorError(
                    f"the {label}'s site {name!r} is marked for enumeration (infer="
                    f"{{'enumerate': {mark!r}}}); ppl_dgm's estimators sample every latent. "
                    f"Sample it in the guide, remove the mark (and config_enumerate), or "
                    f"sum the site out with pyro.infer.TraceEnum_ELBO")
