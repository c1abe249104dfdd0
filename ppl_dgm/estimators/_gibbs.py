"""Contrastive surrogates for energy-based sites: Gibbs chains, free energies (a kit).

For a site ``v ~ p(v) = exp(-F(v)) / Z`` (an RBM's visibles, or the top-level states of
a deep belief net), ``d log p(v) = -dF(v) + E_p[dF(v')]``.  The first (data) term is
exact; the second (model) term is estimated from Gibbs-chain states ``v'``
(Hinton 2002; Tieleman 2008).  The surrogate

    loss = -sum_i log p~(x_i, h_i) - n * mean_c F(v'_c)

(``log p~`` the program's log density without ``log Z``, ``h_i`` the guide's detached
values, ``v'`` detached chain states) has exactly that gradient: data term minus model
term.  With no latent sites it is ``sum_i F(x_i) - n mean_c F(v'_c)``.

* :func:`energy_traces` runs model and guide with every energy site unnormalised
  (no ``log Z`` in a training step); :func:`contrastive_parts` builds the surrogate;
* :class:`ChainBank` keeps persistent chains per site as device buffers (saved with
  checkpoints); :func:`cd_chains` starts chains at the current values instead;
* :func:`down_pass` generates the lower layers from given top-level states (the
  up-down algorithm's sleep phase, Hinton, Osindero and Teh 2006).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from ..energy import energy_distribution, energy_sites, unnormalised_energies
from ..errors import DataError, IncompatibleEstimatorError
from ..traces import OBS_SITE, Traces, trace_program
from ._dreams import Dream
from .base import LossParts

__all__ = ["ChainBank", "GibbsSweeps", "PersistentChains", "cd_chains", "check_k",
           "check_one_particle", "contrastive_parts", "down_pass", "energy_traces",
           "mean_values", "require_energy_sites", "site_energy", "site_state"]


def check_k(k) -> int:
    """Gibbs sweeps per step: a positive integer."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k (Gibbs sweeps per step) must be a positive integer, got {k!r}")
    return k


def check_one_particle(num_particles, name: str) -> None:
    if num_particles != 1:
        raise ValueError(f"{name} runs one Gibbs chain per data point and needs "
                         f"num_particles=1, got {num_particles!r}; raise k (sweeps per "
                         f"step) or num_chains instead")


def mean_values(name: str, site: dict, particle=None) -> torch.Tensor:
    """Guide-value hook: the guide's means instead of samples (a mean-field data term;
    exact for energies linear in each unit given the others, as a DBM's)."""
    return site["fn"].mean.detach()


def detached_values(name: str, site: dict, particle=None) -> torch.Tensor:
    return site["value"].detach()


def energy_traces(est, model, guide, args, kwargs, *, means: bool = False) -> Traces:
    """One particle of model and guide, energy sites unnormalised, guide values
    detached (or the guide's means)."""
    with unnormalised_energies():
        if means:  # fractional values lie outside the Bernoulli support: no validation
            with pyro.validation_enabled(False):
                return est.traces(model, guide, args, kwargs, guide_value_hook=mean_values)
        return est.traces(model, guide, args, kwargs, guide_value_hook=detached_values)


def site_energy(tr: Traces, name: str):
    """The energy-based distribution of the model's site ``name``."""
    return energy_distribution(tr.model_trace.nodes[name]["fn"])


def site_state(tr: Traces, name: str) -> torch.Tensor:
    """The site's current value as a batch of states ``(N, D)`` (data or guide values)."""
    value = tr.model_trace.nodes[name]["value"].detach()
    return value.reshape(-1, value.shape[-1])


def cd_chains(tr: Traces, k: int) -> dict[str, torch.Tensor]:
    """CD-k: ``k`` Gibbs sweeps from each energy site's current values."""
    return {name: site_energy(tr, name).gibbs(site_state(tr, name), k)
            for name in energy_sites(tr.model_trace)}


def contrastive_parts(tr: Traces, chains: Mapping[str, torch.Tensor]) -> LossParts:
    """``{"data": -sum log p~, "model": -n mean F(chains)}`` and metrics.

    ``metrics["objective"]`` is minus the surrogate's value (the free-energy gap
    between chain states and data), not a likelihood."""
    n = tr.batch_size or 1
    data = tr.scale * tr.log_p.mean(0).sum()
    model = None
    for name, states in chains.items():
        term = -(tr.scale * n) * site_energy(tr, name).free_energy(states.detach()).mean()
        model = term if model is None else model + term
    if model is None:
        model = torch.zeros_like(data)
    objective = (data - model).detach()
    return LossParts({"data": -data, "model": model},
                     {"objective": objective, "data_log_p_unnormalised": data.detach() / n,
                      "chain_free_energy": -model.detach() / n})


def require_energy_sites(est, tr: Traces, *, latent: bool | None = None) -> list[str]:
    """The model's energy sites; refuse a model without one, and data outside an
    observed energy site's support."""
    names = energy_sites(tr.model_trace)
    if latent is not None:
        names = [n for n in names if tr.model_trace.nodes[n]["is_observed"] != latent]
    if not names:
        where = {None: "", True: "latent ", False: "observed "}[latent]
        raise IncompatibleEstimatorError(
            f"estimator {est.name!r} trains energy-based (undirected) sites, but the model "
            f"has no {where}site whose distribution is energy-based (an RBM distribution); "
            f"use it with the models 'rbm', 'dbn' or 'dbm', or a likelihood estimator "
            f"(e.g. 'elbo', 'nvil') for a directed model")
    for name in names:
        site = tr.model_trace.nodes[name]
        if site["is_observed"]:
            fn = site_energy(tr, name)
            ok = fn.support.check(site["value"])
            while ok.dim() > 1:
                ok = ok.all(-1)
            if not bool(ok.all()):
                bad = torch.nonzero(~ok).flatten()
                raise DataError(
                    f"site {name!r} is a {type(fn).__name__} with support {fn.support}, but "
                    f"{len(bad)} data points lie outside it (first rows {bad[:5].tolist()}); "
                    f"binarise the data (x = (x > 0.5).float()) or use Gaussian visible "
                    f"units (RBM(visible='gaussian'))")
    return names


class ChainBank(torch.nn.Module):
    """Persistent Gibbs chains per site, as buffers (on the device, in checkpoints)."""

    @staticmethod
    def key(name: str) -> str:
        return "chains_" + "".join(ch if ch.isalnum() else "_" for ch in str(name))

    def ensure(self, name: str, fn, num_chains: int) -> None:
        """Create ``num_chains`` random chains for ``name`` unless they exist with the
        right width."""
        key = self.key(name)
        old = getattr(self, key, None)
        if old is None or tuple(old.shape) != (num_chains, *fn.event_shape):
            self.register_buffer(key, fn.init_chains(num_chains).detach())

    def advance(self, name: str, fn, k: int) -> torch.Tensor:
        """``k`` Gibbs sweeps of the chains of ``name``, updated in place."""
        chains = getattr(self, self.key(name))
        new = fn.gibbs(chains, k).to(chains.dtype)
        chains.copy_(new)
        return new


def down_pass(model, name: str, states: torch.Tensor, *, obs_site: str = OBS_SITE) -> Dream:
    """Run ``model(None, batch_size=n)`` with site ``name`` fixed to ``states``: the
    layers below are generated top-down.  A dream whose latents are every sample site
    but the data (the fixed site included), for the guide's sleep phase."""
    n = states.shape[0]
    try:
        with torch.no_grad():
            tr = trace_program(poutine.condition(model, data={name: states}), None,
                               batch_size=n)
    except Exception as e:
        raise IncompatibleEstimatorError(
            f"the down pass runs model(None, batch_size={n}) with site {name!r} fixed, "
            f"which raised {type(e).__name__}: {e}; the model must generate data when "
            f"called without x") from e
    if obs_site not in tr.nodes:
        raise IncompatibleEstimatorError(f"the down pass found no data site {obs_site!r}")
    latents = {s: site["value"] for s, site in tr.nodes.items()
               if site["type"] == "sample" and s != obs_site and not site_is_subsample(site)}
    return Dream(tr.nodes[obs_site]["value"], latents, tr, int(n))


# --------------------------------------------------------------------------- mixins
class GibbsSweeps:
    """``__init__(*, k=1)`` of the contrastive estimators (a mixin listed before
    :class:`~ppl_dgm.estimators.base.Estimator`): ``k`` Gibbs sweeps per step, one
    particle, and the capability flags they share."""

    handles_discrete_latents: ClassVar[bool] = True
    needs_reparam: ClassVar[bool] = False
    handles_energy_sites: ClassVar[bool] = True

    def __init__(self, *, k: int = 1, num_particles: int = 1, **options):
        check_one_particle(num_particles, type(self).__name__)
        super().__init__(num_particles=1, **options)
        self.k = check_k(k)


class PersistentChains(GibbsSweeps):
    """The persistent-chain estimators' protocol methods (a mixin for
    :class:`~ppl_dgm.estimators.base.Estimator` subclasses, listed before it).

    ``__init__(*, num_chains=100, k=1)`` keeps ``num_chains`` chains per energy site in
    ``self.aux`` (a :class:`ChainBank`: device buffers, saved with checkpoints);
    :meth:`prepare` creates them; :meth:`surrogate` takes the data term at the data /
    guide values (the guide's means when the class sets ``mean_field = True``) and the
    model term from the chains after ``k`` more sweeps."""

    mean_field: ClassVar[bool] = False

    def __init__(self, *, num_chains: int = 100, k: int = 1, num_particles: int = 1,
                 **options):
        super().__init__(k=k, num_particles=num_particles, **options)
        if not isinstance(num_chains, int) or isinstance(num_chains, bool) or num_chains < 1:
            raise ValueError(f"num_chains must be a positive integer (persistent Gibbs "
                             f"chains per energy site), got {num_chains!r}")
        self.num_chains = num_chains
        self.aux = ChainBank()

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = energy_traces(self, model, guide, args, kwargs, means=self.mean_field)
        chains = {name: self.aux.advance(name, site_energy(tr, name), self.k)
                  for name in energy_sites(tr.model_trace)}
        return contrastive_parts(tr, chains)

    def prepare(self, model, guide, *args, **kwargs) -> None:
        with torch.no_grad():
            tr = energy_traces(self, model, guide, args, kwargs)
        for name in energy_sites(tr.model_trace):
            self.aux.ensure(name, site_energy(tr, name), self.num_chains)

    def check(self, model, guide, *args, **kwargs) -> None:
        tr = energy_traces(self, model, guide, args, kwargs)
        self.check_traces(tr)
        require_energy_sites(self, tr)
