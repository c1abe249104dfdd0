"""The up-down algorithm: wake-sleep fine-tuning of a deep belief net (Hinton,
Osindero and Teh 2006)."""

from __future__ import annotations

from typing import ClassVar

from ..protocol import untie
from ._dreams import score_dream, sleep_objective
from ._gibbs import (
    GibbsSweeps,
    cd_chains,
    contrastive_parts,
    down_pass,
    energy_traces,
    require_energy_sites,
    site_state,
)
from .base import Estimator, LossParts

__all__ = ["UpDown"]


class UpDown(GibbsSweeps, Estimator):
    """Contrastive wake-sleep for a model whose top layers form an RBM (a DBN).

    One step on a batch ``x``:

    * *up pass* (wake): ``h ~ q(h | x)`` from the guide, detached; the directed layers
      ascend ``log p(x, h)`` at those values;
    * *top RBM*: ``k`` Gibbs sweeps from the up-pass state of the energy-based site
      (the top hidden states), CD-k on the RBM: ``F(h_top) - F(h_top^(k))``;
    * *down pass* (sleep): from the chain's final states, generate the layers below
      top-down and train the guide on them, ``log q(h | x)`` of the generated
      ``(h, x)`` (the dreams of wake-sleep, started from the top RBM's chain).

    One surrogate: the guide's values and the chains are detached, so the wake and CD
    terms reach only the model and the sleep term only the guide.  :meth:`prepare`
    unties a guide whose recognition weights start tied to the model's
    (:class:`~ppl_dgm.guides.DBNGuide`), so fine-tuning starts from the greedy stage's
    bottom-up pass.  ``metrics["objective"]`` is the CD objective (not a bound).

    :param k: Gibbs sweeps at the top RBM per step.

    Example::

        fit(dbn, DBNGuide.from_model(dbn), UpDown(k=1), load_digits(), steps=3000)
    """

    name: ClassVar[str] = "updown"
    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        tr = energy_traces(self, model, guide, args, kwargs)
        chains = cd_chains(tr, self.k)
        cd = contrastive_parts(tr, chains)
        (top, states), = chains.items()
        score = score_dream(guide, down_pass(model, top, states.to(tr.model_trace.nodes[top][
            "value"].dtype)), nesting=self.plate_nesting(model, guide, args, kwargs))
        sleep = sleep_objective(score.log_q, tr.scale * (tr.batch_size or 1), score.per_point)
        return LossParts({**cd.parts, "sleep_guide": -sleep},
                         {**cd.metrics, "sleep_log_q": score.log_q.detach().mean()})

    def prepare(self, model, guide, *args, **kwargs) -> None:
        untie(guide)

    def check(self, model, guide, *args, **kwargs) -> None:
        tr = energy_traces(self, model, guide, args, kwargs)
        self.check_traces(tr)
        names = require_energy_sites(self, tr, latent=True)
        if len(require_energy_sites(self, tr)) != 1:
            raise ValueError(f"up-down trains one top RBM, but the model has energy-based "
                             f"sites {require_energy_sites(self, tr)}")
        score_dream(guide, down_pass(model, names[0], site_state(tr, names[0])),
                    nesting=self.plate_nesting(model, guide, args, kwargs))
