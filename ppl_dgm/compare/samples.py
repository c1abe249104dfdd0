"""Samples of a trained model for the comparison report's grids.

:func:`draw_samples` runs after a run's last measurement, inside a forked random state
(:func:`~ppl_dgm.compare.measure.fork_rng`) and from its own seed, so it changes no
number of the comparison; a model that cannot be sampled gives None, never an error.
"""

from __future__ import annotations

import numpy as np
import torch

from ..programs import generate, set_training
from ..protocol import sampler
from .measure import fork_rng

__all__ = ["draw_samples"]


def draw_samples(model, *, n: int = 64, seed: int = 0,
                 template: torch.Tensor | None = None) -> np.ndarray | None:
    """``n`` points from ``model`` as a float32 array ``(n, D)``: the mean of p(x | h)
    for fresh latents where the model has ``sample(n, mean=True)``
    (:func:`~ppl_dgm.protocol.sampler`), else draws of its own program with the observed
    sites unconditioned (:func:`~ppl_dgm.programs.generate`, shaped by ``template``
    rows); None when neither works."""
    device = template.device if template is not None else torch.device("cpu")
    with fork_rng(device), torch.no_grad():
        torch.manual_seed(seed)
        set_training(False, model)
        try:
            sample = sampler(model)
            x = (sample(n, mean=True) if sample is not None
                 else generate(model, n, template=template))
        except Exception:  # noqa: BLE001 - a report grid must never fail a comparison
            return None
    x = torch.as_tensor(x).detach().reshape(n, -1).float().cpu().numpy()
    return x if np.isfinite(x).all() else None
