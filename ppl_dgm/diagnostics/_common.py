"""Helpers shared by the diagnostics modules: the data check, a latent site's values
laid out as ``(draws, points, features)``, parameters frozen while sampling, and the
dims and coordinates of per-site variables in the xarray groups."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import numpy as np
import torch

from ..errors import DataError
from ..traces import DATA_PLATE, data_frame

__all__: list[str] = []


def _site_values(site: dict, nesting: int, num_particles: int, plate: str | None = DATA_PLATE
                 ) -> tuple[torch.Tensor, bool]:
    """A latent site's value as ``(K, B, F)`` (inside the data plate) or ``(K, F)``."""
    value = site["value"]
    event_dim = len(site["fn"].event_shape)
    n = nesting + 1
    batch_dim = value.dim() - event_dim
    if batch_dim < n:
        value = value.reshape((1,) * (n - batch_dim) + tuple(value.shape))
    value = value.expand(num_particles, *value.shape[1:])
    frame = data_frame(site, plate)
    if frame is None:
        return value.reshape(num_particles, -1), False
    data_axis = n + frame.dim
    if data_axis != 1:
        value = value.movedim(data_axis, 1)
    return value.reshape(num_particles, value.shape[1], -1), True


@contextlib.contextmanager
def _frozen(*programs):
    """Parameters with ``requires_grad=False`` for the duration (NUTS, sampling): a
    module's, or a bound method's module's.  A plain function's parameters stay as they
    are (its modules are not known, and ``pyro.module`` warns about frozen parameters of
    modules in training mode); sampling is correct either way, only slower."""
    params = []
    for program in programs:
        owner = program if isinstance(program, torch.nn.Module) \
            else getattr(program, "__self__", None)
        if isinstance(owner, torch.nn.Module):
            params += list(owner.parameters())
    params = [p for p in {id(p): p for p in params}.values() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _name(obj) -> str:
    return type(obj).__name__


def _check_x(x) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise DataError(f"data must be a torch.Tensor of shape (num_points, ...), got "
                        f"{type(x).__name__}")
    if x.dim() < 1 or x.shape[0] < 1:
        raise DataError(f"data must hold at least one point, got shape {tuple(x.shape)}")
    return x


def _dims(name: str, local: bool, num_features: int) -> tuple[str, ...]:
    feat = () if num_features == 1 else (f"{name}_dim",)
    return (("point",) if local else ()) + feat


def _squeeze_feature(v: np.ndarray) -> np.ndarray:
    return v[..., 0] if v.shape[-1] == 1 else v


def _coords(arrays: Mapping[str, np.ndarray], local: Mapping[str, bool], points) -> dict:
    coords = {"point": np.asarray(points)}
    for name, v in arrays.items():
        if v.shape[-1] > 1:
            coords[f"{name}_dim"] = np.arange(v.shape[-1])
    return coords
