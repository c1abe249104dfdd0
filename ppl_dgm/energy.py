"""Energy-based sites of Pyro programs: which they are, and running without ``log Z``.

An RBM enters a Pyro program as a distribution (``pyro.sample("x", rbm_distribution,
obs=x)``) whose ``log_prob`` is ``-F(x) - log Z``.  ``log Z`` is expensive (an
enumeration or an AIS run) and carries no gradient, so estimators do not want it
inside a training step: the model term of the gradient comes from Gibbs chains instead
(contrastive divergence).  :func:`unnormalised_energies` is a Pyro effect handler under
which every :class:`~ppl_dgm.protocol.EnergyBased` site reports ``-F(x)`` only;
:func:`energy_sites` names those sites in a trace.

Example::

    from ppl_dgm.energy import energy_sites, unnormalised_energies
    from ppl_dgm.traces import trace_program

    with unnormalised_energies():
        tr = trace_program(model, x)
    energy_sites(tr)          # ["x"] for an RBM over x
"""

from __future__ import annotations

from pyro.poutine.messenger import Messenger
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import site_is_subsample

from .protocol import EnergyBased

__all__ = ["UnnormalisedEnergies", "energy_distribution", "energy_sites",
           "unnormalised_energies"]


def energy_distribution(fn) -> EnergyBased | None:
    """The :class:`~ppl_dgm.protocol.EnergyBased` distribution of a site (under
    ``Independent``/``Masked`` wrappers), or None."""
    while not isinstance(fn, EnergyBased) and hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn if isinstance(fn, EnergyBased) else None


def energy_sites(trace: Trace) -> list[str]:
    """Names of the sample sites (observed or latent) whose distribution is energy-based."""
    return [name for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)
            and energy_distribution(site["fn"]) is not None]


class UnnormalisedEnergies(Messenger):
    """Replace every energy-based site's distribution by its unnormalised version
    (``log_prob = -F(v)``), so that no ``log Z`` is computed."""

    def _process_message(self, msg):
        if msg["type"] == "sample" and isinstance(msg["fn"], EnergyBased):
            msg["fn"] = msg["fn"].unnormalised()


def unnormalised_energies() -> UnnormalisedEnergies:
    """Context: energy-based sites skip ``log Z`` (see :class:`UnnormalisedEnergies`)."""
    return UnnormalisedEnergies()
