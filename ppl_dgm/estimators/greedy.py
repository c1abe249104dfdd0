"""Greedy layer-wise training of a stack of RBMs (Hinton, Osindero and Teh 2006)."""

from __future__ import annotations

from typing import ClassVar

from ..errors import IncompatibleEstimatorError
from ..protocol import rbm_stack
from ..traces import data_argument
from ._gibbs import ChainBank, GibbsSweeps
from .base import Estimator, LossParts

__all__ = ["GreedyLayerwise"]


class GreedyLayerwise(GibbsSweeps, Estimator):
    """Contrastive divergence on RBM ``layer`` of a stack, fed by the layers below.

    The model declares :class:`~ppl_dgm.protocol.StacksRBMs` (a
    :class:`~ppl_dgm.models.DBN`): RBM ``l`` is trained by CD-k (or PCD with
    ``persistent=True``) on ``model.layer_input(l, x)``, the binary recognition states of
    ``x`` passed up through the tied weights of the RBMs below.  Greedy training is one
    run per layer, bottom up (each continues from the last)::

        for layer in range(dbn.num_rbms):
            fit(dbn, guide, GreedyLayerwise(layer=layer), data, steps=1000)

    ``layer=None`` trains every layer at once on the current states of the layer below.
    Only the model is trained; a tied :class:`~ppl_dgm.guides.DBNGuide` follows it.
    ``metrics["objective"]`` is minus the CD surrogate (not a likelihood).

    :param layer: the RBM to train (0 next to the data), or None for all.
    :param k: Gibbs sweeps per step.  :param persistent: PCD chains instead of CD.
    :param num_chains: persistent chains per layer.
    """

    name: ClassVar[str] = "greedy"

    def __init__(self, *, layer: int | None = None, k: int = 1, persistent: bool = False,
                 num_chains: int = 100, num_particles: int = 1, **options):
        super().__init__(k=k, num_particles=num_particles, **options)
        if layer is not None and (not isinstance(layer, int) or isinstance(layer, bool)
                                  or layer < 0):
            raise ValueError(f"layer must be a non-negative integer (0 is the RBM next to "
                             f"the data) or None for all layers, got {layer!r}")
        self.layer, self.persistent = layer, bool(persistent)
        self.num_chains = int(num_chains)
        self.aux = ChainBank()

    def _layers(self, model) -> list[int]:
        return list(range(model.num_rbms)) if self.layer is None else [self.layer]

    def surrogate(self, model, guide, *args, **kwargs) -> LossParts:
        x = data_argument(args, kwargs)
        data = chain = None
        for layer in self._layers(model):
            rbm, v = model.layer_rbm(layer), model.layer_input(layer, x)
            states = self.aux.advance(f"layer{layer}", rbm, self.k) if self.persistent \
                else rbm.gibbs(v, self.k)
            d = rbm.free_energy(v).sum()
            c = -v.shape[0] * rbm.free_energy(states).mean()
            data, chain = (d, c) if data is None else (data + d, chain + c)
        return LossParts({"data": data, "model": chain},
                         {"objective": -(data + chain).detach(),
                          "data_free_energy": data.detach() / x.shape[0]})

    def prepare(self, model, guide, *args, **kwargs) -> None:
        if self.persistent and rbm_stack(model) is not None:
            for layer in self._layers(model):
                self.aux.ensure(f"layer{layer}", model.layer_rbm(layer), self.num_chains)

    def check(self, model, guide, *args, **kwargs) -> None:
        if rbm_stack(model) is None:
            raise IncompatibleEstimatorError(
                f"estimator 'greedy' trains a stack of RBMs layer by layer and needs a "
                f"model with num_rbms, layer_rbm(l) and layer_input(l, x) (a deep belief "
                f"net, model 'dbn'); {type(model).__name__} has none. Train an RBM with "
                f"'cd' or 'pcd'")
        if self.layer is not None and self.layer >= model.num_rbms:
            raise ValueError(f"layer={self.layer} but the model has {model.num_rbms} RBMs "
                             f"(layers 0..{model.num_rbms - 1})")
