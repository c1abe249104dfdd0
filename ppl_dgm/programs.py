"""Pyro programs in every form Pyro accepts, made trainable by one torch optimiser.

A model or guide may be

* a ``PyroModule`` or an ``nn.Module`` (its parameters are the module's);
* a plain function (or a bound method) that creates its parameters with ``pyro.param``
  and registers networks with ``pyro.module``, as most Pyro tutorials write them.

:func:`trainable` returns what :func:`ppl_dgm.train.fit` needs from either: an object
with ``parameters()``, ``state_dict()``, ``load_state_dict()``, ``to()``, ``train()`` and
``eval()``.  For a function it is a :class:`ParamStoreParams` over the entries of Pyro's
param store that the program touches (found by a parameter-only trace of one call), so
that those parameters are trained by the same optimiser and saved in the same
checkpoints as a module's.  Constrained parameters are trained, as in Pyro, through their
unconstrained tensors.

:class:`ProgramCall` says how a program is called on a minibatch: which argument carries
the data (``data_arg``, a position or a keyword) and which other arguments go with it.
Several data tensors of one length (covariates and responses, ``model(x, y)``) are
minibatched together as :class:`Columns` with a tuple ``data_arg``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine

from .sites import (
    DATA_PLATE,
    OBS_SITE,
    data_frame,
    data_plate_name,
    is_factor,
    latent_sites,
    observed_sites,
)
from .traces import trace_program

__all__ = ["Columns", "ParamStoreParams", "ProgramCall", "generate", "generates_with_batch_size",
           "param_names", "param_tensors", "program_name", "set_training", "simulate",
           "Simulation", "trainable", "trainables"]


class Columns:
    """Data tensors of one length indexed together, as one minibatch: ``Columns((x, y))[i]``
    is ``Columns((x[i], y[i]))``.  What :func:`ppl_dgm.train.fit` minibatches when a
    program takes several data arguments (``fit(..., (x, y), data_arg=(0, 1))``)."""

    def __init__(self, tensors):
        self.tensors = tuple(tensors)
        if not self.tensors:
            raise ValueError("Columns needs at least one tensor")
        lengths = {t.shape[0] if t.dim() else None for t in self.tensors}
        if len(lengths) != 1 or None in lengths:
            raise ValueError(f"data tensors minibatched together must have one first "
                             f"(points) dimension; got shapes "
                             f"{[tuple(t.shape) for t in self.tensors]}")

    def __getitem__(self, index) -> Columns:
        return Columns(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    @property
    def shape(self) -> torch.Size:
        """Only the points dimension is shared."""
        return torch.Size([len(self)])

    @property
    def device(self) -> torch.device:
        return self.tensors[0].device

    def to(self, *args, **kwargs) -> Columns:
        return Columns(t.to(*args, **kwargs) for t in self.tensors)

    def __repr__(self) -> str:
        return f"Columns({', '.join(str(tuple(t.shape)) for t in self.tensors)})"


@dataclass(frozen=True)
class ProgramCall:
    """How the programs are called on a minibatch ``x``.

    ``data_arg`` is the position of the data among the positional arguments (``0``:
    ``model(x, *args)``) or the name of a keyword argument (``"data"``:
    ``model(*args, data=x)``); ``args`` and ``kwargs`` are the other arguments, passed
    unchanged on every step.  ``data_arg=None`` calls the programs without data.  A tuple
    ``data_arg`` (``(0, "y")``) places the tensors of a :class:`Columns` minibatch, in
    order: ``model(x, y=y)``."""

    args: tuple = ()
    kwargs: Mapping = field(default_factory=dict)
    data_arg: int | str | None = 0

    def __post_init__(self):
        if isinstance(self.data_arg, list):
            object.__setattr__(self, "data_arg", tuple(self.data_arg))
        slots = self.data_arg if isinstance(self.data_arg, tuple) else (self.data_arg,)
        if self.data_arg is None:
            return
        if not slots or any(isinstance(a, bool) or not isinstance(a, (int, str))
                            for a in slots):
            raise ValueError(f"data_arg must be a position (int), a keyword (str), a tuple "
                             f"of them, or None; got {self.data_arg!r}")
        positions = sorted(a for a in slots if isinstance(a, int))
        if len(set(slots)) != len(slots):
            raise ValueError(f"data_arg={self.data_arg!r} names an argument twice")
        for a in positions:
            if not 0 <= a <= len(self.args) + len(positions) - 1:
                raise ValueError(f"data_arg position {a} is not a position among the "
                                 f"{len(self.args)} other positional arguments plus the "
                                 f"data")
        for a in slots:
            if isinstance(a, str) and a in self.kwargs:
                raise ValueError(f"data_arg {a!r} is also given in kwargs")

    @property
    def num_data(self) -> int:
        """How many data tensors a call takes (0, 1, or the length of a tuple)."""
        if self.data_arg is None:
            return 0
        return len(self.data_arg) if isinstance(self.data_arg, tuple) else 1

    def bind(self, x) -> tuple[tuple, dict]:
        """The ``(args, kwargs)`` of a call on minibatch ``x`` (a :class:`Columns` when
        ``data_arg`` is a tuple)."""
        args, kwargs = list(self.args), dict(self.kwargs)
        if self.data_arg is None:
            return tuple(args), kwargs
        if isinstance(self.data_arg, tuple):
            if not isinstance(x, Columns) or len(x.tensors) != len(self.data_arg):
                raise ValueError(f"data_arg={self.data_arg!r} places "
                                 f"{len(self.data_arg)} data tensors; pass the data as a "
                                 f"tuple of that many tensors of one length")
            slots = sorted(zip(self.data_arg, x.tensors),
                           key=lambda s: (isinstance(s[0], str), s[0]))
        else:
            slots = [(self.data_arg, x)]
        for where, value in slots:
            if isinstance(where, int):
                args.insert(where, value)
            else:
                kwargs[where] = value
        return tuple(args), kwargs


def program_name(program) -> str:
    """A readable name of a program: its class for a module, else its ``__name__``."""
    if isinstance(program, torch.nn.Module):
        return type(program).__name__
    return getattr(program, "__qualname__", None) or getattr(program, "__name__", None) \
        or type(program).__name__


def generates_with_batch_size(program) -> bool:
    """Whether ``program`` is called the zoo's way, ``program(None, batch_size=n)``, to
    generate ``n`` points (it has a ``batch_size`` parameter)."""
    fn = program.forward if isinstance(program, torch.nn.Module) else program
    try:
        return "batch_size" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def param_tensors(program, args: tuple = (), kwargs: Mapping | None = None
                  ) -> dict[str, torch.Tensor]:
    """The parameters a program computes with in one call, by param-store name, creating
    them if new: for ``pyro.param`` the store's unconstrained leaf (what Pyro's
    optimisers update), for a module's parameter registered by ``pyro.module`` (or a
    ``PyroModule``) the module's own tensor, which the program uses even when the store
    holds an older tensor under that name.  The call runs under a forked random state:
    it changes no later draw."""
    kwargs = dict(kwargs or {})
    devices = sorted({a.device.index or 0 for a in [*args, *kwargs.values()]
                      if isinstance(a, torch.Tensor) and a.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad(), \
            pyro.validation_enabled(False):
        tr = poutine.trace(program, param_only=True).get_trace(*args, **kwargs)
    store = pyro.get_param_store()
    out = {}
    for name, site in tr.nodes.items():
        if site["type"] != "param":
            continue
        init = site["args"][1] if len(site["args"]) > 1 else None
        out[name] = init if isinstance(init, torch.nn.Parameter) else store._params[name]
    return out


def param_names(program, args: tuple = (), kwargs: Mapping | None = None) -> list[str]:
    """The param-store names a program touches in one call, in order."""
    return list(param_tensors(program, args, kwargs))


class ParamStoreParams:
    """Module-like access to the parameter tensors of a program (see
    :func:`param_tensors`), by param-store name.

    ``parameters()`` yields the leaf tensors the optimiser updates; ``state_dict()``
    maps the names to them; ``to()`` moves them in place, so that modules whose
    parameters they are move with them."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], *,
                 modules: list[torch.nn.Module] = ()):
        self.tensors = dict(tensors)
        self.modules = list(modules)
        self.training = True

    @property
    def names(self) -> list[str]:
        return list(self.tensors)

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        yield from self.tensors.items()

    def parameters(self) -> Iterator[torch.Tensor]:
        yield from self.tensors.values()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.tensors)

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        missing = [n for n in self.tensors if n not in state]
        unexpected = [n for n in state if n not in self.tensors]
        if missing or unexpected:
            raise KeyError(f"param-store state does not fit the program: missing {missing}, "
                           f"unexpected {unexpected}")
        with torch.no_grad():
            for name, p in self.tensors.items():
                if p.shape != state[name].shape:
                    raise ValueError(f"parameter {name!r}: saved shape "
                                     f"{tuple(state[name].shape)}, program's "
                                     f"{tuple(p.shape)}")
                p.copy_(state[name])

    def to(self, device=None, dtype=None) -> ParamStoreParams:
        for m in self.modules:
            m.to(device=device, dtype=dtype)
        with torch.no_grad():
            for p in self.tensors.values():
                moved = p.data.to(device=device, dtype=dtype)
                if moved is not p.data:
                    p.data = moved
        return self

    def train(self, mode: bool = True) -> ParamStoreParams:
        self.training = mode
        for m in self.modules:
            m.train(mode)
        return self

    def eval(self) -> ParamStoreParams:
        return self.train(False)


class _ModuleAndStore(torch.nn.Module):
    """A module program that also uses parameters it does not own (``pyro.param``)."""

    def __init__(self, module: torch.nn.Module, extra: ParamStoreParams):
        super().__init__()
        self.module = module
        object.__setattr__(self, "extra", extra)

    def parameters(self, recurse: bool = True):
        yield from self.module.parameters(recurse)
        yield from self.extra.parameters()

    def state_dict(self, *args, **kwargs):
        out = dict(self.module.state_dict())
        out.update({f"$store.{k}": v for k, v in self.extra.state_dict().items()})
        return out

    def load_state_dict(self, state, strict: bool = True):
        own = {k: v for k, v in state.items() if not k.startswith("$store.")}
        self.module.load_state_dict(own, strict=strict)
        self.extra.load_state_dict({k[len("$store."):]: v for k, v in state.items()
                                    if k.startswith("$store.")})

    def to(self, *args, **kwargs):
        self.module.to(*args, **kwargs)
        device = kwargs.get("device", args[0] if args else None)
        self.extra.to(device=device)
        return self


def trainable(program, args: tuple = (), kwargs: Mapping | None = None,
              *, exclude=()) -> object:
    """What the optimiser trains for ``program``: the module (a module program, or the
    module behind a bound method) with any parameters it uses but does not own, or for
    a function the tensors it computes with (see the module docstring).  Tensors in
    ``exclude`` (another program's, by identity) are left out, so that a network shared
    by model and guide sits in one parameter group."""
    excluded = {id(p) for p in exclude}
    owner = program if isinstance(program, torch.nn.Module) \
        else getattr(program, "__self__", None)
    if isinstance(owner, torch.nn.Module):
        try:
            tensors = param_tensors(program, args, kwargs)
        except Exception:   # not called with the data (a discriminator, predictors): its
            return owner    # parameters are the module's
        owned = {id(p) for p in owner.parameters()} | excluded
        extra = {n: t for n, t in tensors.items() if id(t) not in owned}
        return owner if not extra else _ModuleAndStore(owner, ParamStoreParams(extra))
    tensors = {n: t for n, t in param_tensors(program, args, kwargs).items()
               if id(t) not in excluded}
    return ParamStoreParams(tensors)


def trainables(model, guide, args: tuple = (), kwargs: Mapping | None = None) -> dict:
    """``{"model": ..., "guide": ...}``: what the optimiser trains and checkpoints save for
    the two programs (see :func:`trainable`), a network shared by both in the model's."""
    model_params = trainable(model, args, kwargs)
    return {"model": model_params,
            "guide": trainable(guide, args, kwargs, exclude=list(model_params.parameters()))}


def set_training(mode: bool, *programs) -> None:
    """``train(mode)`` for the programs that have a training mode (modules, and the
    modules behind bound methods); plain functions have none."""
    for p in programs:
        owner = p if isinstance(p, torch.nn.Module) else getattr(p, "__self__", None)
        if isinstance(owner, (torch.nn.Module, ParamStoreParams)):
            owner.train(mode)


@dataclass(frozen=True)
class Simulation:
    """One run of a model generating its data: the trace, the name of the observed
    data site, and that site's values with the points first (``x``)."""

    trace: object
    site: str
    x: torch.Tensor
    observed: tuple[str, ...] = ()
    plate: str | None = DATA_PLATE


@torch.no_grad()
def simulate(model, n: int, *, template: torch.Tensor | None = None,
             call: ProgramCall | None = None) -> Simulation:
    """Run the model's own program to generate ``n`` data points with their latents:
    the zoo's ``model(None, batch_size=n)``, or any program with its observed sites
    unconditioned (:func:`pyro.poutine.uncondition`) on ``n`` rows of ``template`` data
    (which fix the batch shape and any inputs, not the values drawn)."""
    call = call or ProgramCall()
    zoo = call == ProgramCall() and generates_with_batch_size(model)
    if template is None:
        if not zoo:
            raise ValueError(f"model {program_name(model)} is not called as model(None, "
                             f"batch_size=n), so generating from it needs template data "
                             f"rows (the shape and inputs of a call)")
        tr = trace_program(model, None, batch_size=n)
        names = [s for s in latent_sites(tr) if s == OBS_SITE] or \
            [s for s in observed_sites(tr) if not is_factor(tr.nodes[s])]
        if not names:
            raise ValueError(f"model {program_name(model)} has no site {OBS_SITE!r} to "
                             f"generate")
        plate = DATA_PLATE
    else:
        args, kwargs = call.bind(template[:2])
        conditioned = trace_program(model, *args, **kwargs)
        names = [s for s in observed_sites(conditioned) if not is_factor(conditioned.nodes[s])]
        if not names:
            raise ValueError(f"model {program_name(model)} observes no data: there is "
                             f"nothing to generate")
        plate = data_plate_name(conditioned)
        if zoo:
            tr = trace_program(model, None, batch_size=n)
        else:
            rows = template[torch.arange(n, device=template.device) % template.shape[0]]
            args, kwargs = call.bind(rows)
            tr = trace_program(poutine.uncondition(model), *args, **kwargs)
    name = names[0]
    site = tr.nodes[name]
    frame = data_frame(site, plate)
    value = site["value"]
    if frame is not None:
        value = value.movedim(value.dim() - site["fn"].event_dim + frame.dim, 0)
    return Simulation(tr, name, value, tuple(names), plate)


def generate(model, n: int, *, template: torch.Tensor, call: ProgramCall | None = None
             ) -> torch.Tensor:
    """``n`` data points drawn by running the model's own program (see :func:`simulate`),
    points first."""
    return simulate(model, n, template=template, call=call).x
