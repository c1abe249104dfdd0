"""Shared neural-network blocks for models and guides."""

from __future__ import annotations

from collections.abc import Sequence

from pyro.nn import PyroModule
from torch import nn

__all__ = ["as_sizes", "conv_image_shape", "mlp", "plate_size", "recurrent"]

_ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "softplus": nn.Softplus, "elu": nn.ELU,
                "leaky_relu": nn.LeakyReLU, "sigmoid": nn.Sigmoid}


def as_sizes(hidden: int | Sequence[int] | str | None) -> tuple[int, ...]:
    """Normalise a hidden-layer spec: ``200``, ``(200, 200)``, ``"200,200"`` or ``None``."""
    if hidden is None or hidden == "" or hidden == ():
        return ()
    if isinstance(hidden, int):
        return (hidden,)
    if isinstance(hidden, str):
        return tuple(int(h) for h in hidden.split(",") if h.strip())
    return tuple(int(h) for h in hidden)


def mlp(in_dim: int, hidden: Sequence[int], out_dim: int, *, activation: str = "tanh",
        final: nn.Module | None = None) -> nn.Sequential:
    """A multilayer perceptron ``in_dim -> hidden... -> out_dim``.

    The container is a ``PyroModule[nn.Sequential]``: when a model (a PyroModule)
    reaches it as an attribute, Pyro emits no ``pyro.module`` statement, and its layers
    are plain ``nn.Linear`` modules reached without Pyro's ``__getattr__``.  This keeps
    parameter access free inside a traced program (no per-parameter effect handlers
    on every step); estimators register the parameters for ``pyro.infer.SVI`` in
    ``loss_and_grads`` instead.
    """
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is unknown; choose one of "
                         f"{sorted(_ACTIVATIONS)}")
    layers: list[nn.Module] = []
    d = in_dim
    for h in hidden:
        layers += [nn.Linear(d, h), _ACTIVATIONS[activation]()]
        d = h
    layers.append(nn.Linear(d, out_dim))
    if final is not None:
        layers.append(final)
    return PyroModule[nn.Sequential](*layers)




def plate_size(x, batch_size: int | None) -> int:
    """The size of a model's ``"data"`` plate: the batch of ``x``, or ``batch_size``
    when the model generates data (``x=None``)."""
    if x is not None:
        return x.shape[0]
    if batch_size is None:
        raise ValueError("pass either observed data x or batch_size (the number of data "
                         "points to generate)")
    return int(batch_size)


def conv_image_shape(x_dim: int, image_shape, who: str, *, alternative: str) -> tuple[int, int]:
    """``(H, W)`` of flattened images of width ``x_dim`` for a conv net that halves (or
    doubles) the resolution twice: square unless ``image_shape`` is given, sides
    divisible by 4.  ``alternative`` names the MLP network to use otherwise."""
    if image_shape is None:
        side = int(round(x_dim ** 0.5))
        if side * side != x_dim:
            raise ValueError(f"{who} needs square images: x_dim={x_dim} is not a square; "
                             f"pass image_shape=(H, W)")
        h = w = side
    else:
        h, w = (int(s) for s in image_shape)
        if h * w != x_dim:
            raise ValueError(f"{who}: image_shape={tuple(image_shape)} has {h * w} pixels "
                             f"but x_dim={x_dim}")
    if h % 4 or w % 4:
        raise ValueError(f"{who} changes the resolution by a factor 2 twice, so the image "
                         f"sides must be divisible by 4; got {(h, w)}. Use the MLP "
                         f"{alternative} instead")
    return h, w


RECURRENT = ("gru", "lstm")


def recurrent(kind: str, input_size: int, hidden_size: int, *, layers: int = 1) -> nn.Module:
    """A batch-first ``nn.GRU`` or ``nn.LSTM`` (``kind``), for the sequence models.

    A plain torch module: keep it in a PyroModule container (as :func:`mlp` does) so
    that a traced program reaches it without a ``pyro.module`` statement."""
    if kind not in RECURRENT:
        raise ValueError(f"rnn={kind!r} is unknown; choose one of {RECURRENT}")
    cls = nn.GRU if kind == "gru" else nn.LSTM
    return cls(input_size, hidden_size, num_layers=layers, batch_first=True)
