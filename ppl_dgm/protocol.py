"""What a model or guide may offer beyond being a Pyro program: the optional abilities.

Any Pyro program is a model (a function, an ``nn.Module`` registered with
``pyro.module``, a ``PyroModule``).  Some models can do more, and parts of the library
use those abilities where they exist.  Each ability is declared here once, as a
:class:`typing.Protocol`, with an accessor that the rest of the library calls instead
of probing attributes itself:

================  ====================================================  ===============
ability           meaning                                               used by
================  ====================================================  ===============
``x_dim``         the data width the model was built for (int)          checks, guides
``latent_dims``   ``{site: width}`` of its latent sites, bottom-up      guides' builders
``sample(n)``     ``n`` data points, ``sample(n, mean=True)`` E[x | h]  sample, implicit
``log_prob(x)``   the exact ``log p(x)`` per data point                 evaluate, compare
``can_enumerate`` whether ``log_prob`` is feasible at this size         evaluate, compare
``default_guide`` the registry name of the guide it is usually          registry, CLI
                  trained with
``from_model``    (guides, a classmethod) build a guide fitting a       registry
                  model
``log_partition`` ``log Z`` of an undirected part, exact or by AIS,      evaluate, CLI
                  with its spread (:class:`ppl_dgm.ais.LogZ`)
``layer_rbm``     (DBN-like stacks) the RBM of layer ``l`` and its      greedy training
                  input from the layers below
``untie``         (guides) copy tied recognition weights into the       up-down
                  guide's own parameters before they are trained
================  ====================================================  ===============

A *distribution* may declare one ability, :class:`EnergyBased`: it is known up to its
normaliser (an RBM's ``exp(-F(v)) / Z``) and offers the free energy and block-Gibbs
chains that contrastive estimators (``cd``, ``pcd``) need.

A model that lacks an ability still trains, compares and diagnoses; only the
features built on it are skipped or done another way (e.g. samples drawn by running the
program itself).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import torch

__all__ = [
    "BuildsFromModel",
    "DeclaresLatents",
    "EnergyBased",
    "PartitionFunction",
    "StacksRBMs",
    "Unties",
    "DeclaresWidth",
    "ExactLikelihood",
    "HasDefaultGuide",
    "Samples",
    "data_width",
    "default_guide_name",
    "exact_log_prob",
    "latent_widths",
    "log_partition",
    "rbm_stack",
    "sampler",
    "untie",
]


@runtime_checkable
class DeclaresWidth(Protocol):
    """The model was built for data points of ``x_dim`` values."""

    x_dim: int


@runtime_checkable
class DeclaresLatents(Protocol):
    """``latent_dims`` maps each latent site to its width, bottom-up (next to the data
    first); guides such as :class:`~ppl_dgm.guides.HelmholtzGuide` read it."""

    latent_dims: Mapping[str, int]


@runtime_checkable
class Samples(Protocol):
    """``sample(n)`` draws ``n`` data points; ``sample(n, mean=True)`` returns their
    means given the latents (smoother images for grids)."""

    def sample(self, n: int, *, mean: bool = False) -> torch.Tensor: ...


@runtime_checkable
class ExactLikelihood(Protocol):
    """``log_prob(x)`` is the exact ``log p(x)`` of each data point, shape ``(N,)``.

    A model whose exact likelihood is feasible only at some sizes (by enumeration)
    also defines ``can_enumerate``; when it is False the exact value is skipped."""

    def log_prob(self, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class HasDefaultGuide(Protocol):
    """``default_guide`` names (in the registry) the guide the model is usually trained
    with, so ``--guide`` may be omitted."""

    default_guide: str


@runtime_checkable
class BuildsFromModel(Protocol):
    """A guide class with ``from_model(model, **options)``: builds a guide that fits
    ``model`` (reading its ``x_dim``, ``latent_dims`` ...)."""

    @classmethod
    def from_model(cls, model, **options): ...


@runtime_checkable
class EnergyBased(Protocol):
    """A distribution ``p(v) = exp(-F(v)) / Z`` with a free energy and Gibbs chains.

    ``free_energy(v)`` is differentiable in the distribution's parameters;
    ``gibbs(v, steps)`` runs ``steps`` block-Gibbs sweeps from states ``v`` without
    gradient; ``init_chains(n)`` gives ``n`` random starting states;
    ``unnormalised()`` is the same distribution whose ``log_prob`` is ``-F(v)`` (no
    ``log Z`` is computed), which estimators use inside their surrogates."""

    def free_energy(self, value: torch.Tensor) -> torch.Tensor: ...

    def gibbs(self, value: torch.Tensor, steps: int = 1) -> torch.Tensor: ...

    def init_chains(self, n: int) -> torch.Tensor: ...

    def unnormalised(self): ...


@runtime_checkable
class PartitionFunction(Protocol):
    """``log_partition()`` returns the model's ``log Z`` (its undirected part's) as a
    :class:`ppl_dgm.ais.LogZ`: exact by enumeration when small, else by AIS (cached
    while the parameters do not change)."""

    def log_partition(self): ...


@runtime_checkable
class StacksRBMs(Protocol):
    """A stack of RBMs trained greedily (a deep belief net): ``layer_rbm(l)`` is the
    :class:`EnergyBased` distribution of RBM ``l`` (0 next to the data) and
    ``layer_input(l, x)`` its input, the recognition states of the layers below."""

    num_rbms: int

    def layer_rbm(self, layer: int): ...

    def layer_input(self, layer: int, x: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class Unties(Protocol):
    """A guide whose recognition weights start tied to its model's (``untie()``
    copies them into its own parameters, once)."""

    def untie(self) -> None: ...


# --------------------------------------------------------------------------- accessors
def data_width(model) -> int | None:
    """The data width the model declares (``x_dim``), or None."""
    return int(model.x_dim) if isinstance(model, DeclaresWidth) and model.x_dim is not None \
        else None


def latent_widths(model) -> dict[str, int] | None:
    """``{site: width}`` the model declares (``latent_dims``), or None."""
    if isinstance(model, DeclaresLatents) and model.latent_dims:
        return dict(model.latent_dims)
    return None


def sampler(model):
    """The model's own ``sample(n, *, mean=False)`` method, or None."""
    return model.sample if isinstance(model, Samples) and callable(model.sample) else None


def exact_log_prob(model, x: torch.Tensor) -> torch.Tensor | None:
    """The exact ``log p(x)`` per point where the model offers it at its size, else None."""
    if not isinstance(model, ExactLikelihood) or not callable(model.log_prob):
        return None
    if not bool(getattr(model, "can_enumerate", True)):
        return None
    with torch.no_grad():
        return model.log_prob(x)


def default_guide_name(model_or_class) -> str | None:
    """The registry name of the model's usual guide, or None."""
    name = getattr(model_or_class, "default_guide", None)
    return name if isinstance(name, str) else None


def log_partition(model):
    """The model's ``log Z`` (a :class:`ppl_dgm.ais.LogZ`), or None if it declares none."""
    return model.log_partition() if isinstance(model, PartitionFunction) else None


def rbm_stack(model):
    """``model`` itself if it is a greedily trainable stack of RBMs, else None."""
    return model if isinstance(model, StacksRBMs) else None


def untie(guide) -> bool:
    """Untie a guide's recognition weights where it has tied ones; whether it could."""
    if isinstance(guide, Unties):
        guide.untie()
        return True
    return False
