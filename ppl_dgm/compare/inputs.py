"""What a comparison compares: the model and guide factories, and the checked data.

:func:`model_builder` and :func:`guide_builder` turn the ``model_factory`` and
``guide_factory`` that :func:`~ppl_dgm.compare.compare` accepts (registered names,
``"path/to/file.py:Class"`` specs, classes or callables) into functions that build a
fresh model, and a guide for a model; :func:`prepare_data` loads and checks the
training and held-out data.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from .. import registry
from ..data import Dataset, check_data, load_data

__all__ = ["ComparisonData", "guide_builder", "is_factory", "model_builder", "name_of",
           "prepare_data"]


@dataclass(frozen=True)
class ComparisonData:
    """The data of a comparison, checked: what :func:`~ppl_dgm.train.fit` trains on
    (a Dataset or a tensor), the training points and the held-out points on the device."""

    name: str
    fit_data: Dataset | torch.Tensor
    train_x: torch.Tensor
    eval_x: torch.Tensor
    eval_split: str

    @property
    def n_train(self) -> int:
        return self.train_x.shape[0]


def prepare_data(data, eval_data: torch.Tensor | None, *, batch_size: int,
                 device: torch.device) -> ComparisonData:
    """Load and check the training and held-out data (held-out points on the device)."""
    data_name = data if isinstance(data, str) else getattr(data, "name", "tensor")
    if isinstance(data, str):
        data = load_data(data)
    if isinstance(data, Dataset):
        train_x = check_data(data.train, name="training data")
        if eval_data is None:
            eval_data = data.test if data.test.shape[0] else None
    else:
        train_x = check_data(data, name="training data")
    eval_split = "test" if eval_data is not None else "train"
    eval_x = check_data(eval_data if eval_data is not None else train_x,
                        name="evaluation data").to(device)
    if batch_size > train_x.shape[0]:
        raise ValueError(f"batch_size={batch_size} exceeds the {train_x.shape[0]} training "
                         f"points")
    return ComparisonData(name=str(data_name),
                          fit_data=data if isinstance(data, Dataset) else train_x,
                          train_x=train_x, eval_x=eval_x, eval_split=eval_split)


def is_factory(fn, kind: str) -> bool:
    """Whether a callable builds a model (guide) rather than being the program itself: a
    model factory takes no required argument; a guide factory is a lambda or takes one
    required argument named ``model`` (or ``m``).  Any other callable (``def
    model(data)``, ``def guide(data)``) is the Pyro program."""
    if isinstance(fn, type) or getattr(fn, "__name__", "") == "<lambda>":
        return True
    try:
        params = [p for p in inspect.signature(fn).parameters.values()
                  if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY,
                                                         p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return True
    if kind == "model":
        return not params
    return len(params) == 1 and params[0].name in ("model", "m")


def model_builder(model_factory, x_dim: int, options: Mapping | None,
                  data_options: Mapping | None = None) -> Callable:
    """A function that builds a fresh model (with ``x_dim`` and the data set's
    ``data_options``, e.g. a corpus's ``vocab_size``, when its class takes them); a
    program given as it is (a function, a module) is returned as it is."""
    if isinstance(model_factory, (str, type)):
        registry.resolve("model", model_factory)
        return lambda: registry.build_model(model_factory, x_dim=x_dim, options=options,
                                            data_options=data_options)
    if isinstance(model_factory, torch.nn.Module) or (
            callable(model_factory) and not is_factory(model_factory, "model")):
        return lambda: model_factory
    if callable(model_factory):
        if options:
            return lambda: model_factory(**options)
        return model_factory
    raise TypeError(f"model_factory must be a registered name, 'file.py:Class', a class or a "
                    f"callable returning a model; got {type(model_factory).__name__}")


def guide_builder(guide_factory, model_factory, options: Mapping | None) -> Callable:
    """A function ``model -> guide``; ``guide_factory=None`` means the model's usual guide."""
    if guide_factory is None:
        if not isinstance(model_factory, (str, type)):
            raise ValueError("guide_factory=None needs the model given by name or class (to "
                             "find its default guide); pass a guide factory")
        guide_factory = registry.default_guide(model_factory)
    if isinstance(guide_factory, (str, type)):
        registry.resolve("guide", guide_factory)
        return lambda model: registry.build_guide(guide_factory, model, options=options)
    if isinstance(guide_factory, torch.nn.Module) or (
            callable(guide_factory) and not is_factory(guide_factory, "guide")):
        return lambda model: guide_factory
    if callable(guide_factory):
        return guide_factory
    raise TypeError(f"guide_factory must be a registered name, 'file.py:Class', a class or a "
                    f"callable model -> guide; got {type(guide_factory).__name__}")


def name_of(factory) -> str:
    """The name a factory is reported by: its spec, its ``__name__``, or its type's."""
    if factory is None:
        return "default"
    if isinstance(factory, str):
        return factory
    return getattr(factory, "__name__", type(factory).__name__)

