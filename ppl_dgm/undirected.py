"""What the command line prints for models with a partition function (RBM, DBN, DBM).

Their bounds use ``log Z``, exact by enumeration or estimated by AIS, so every line of
``ppl-dgm evaluate`` names the method, and a last line gives ``log Z`` with its spread.
A model without latent sites (an RBM) has one line: ``log p(x) = -F(x) - log Z``.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .protocol import log_partition
from .traces import latent_sites, trace_program

__all__ = ["evaluate_lines", "log_z_fields", "log_z_line"]

_LABELS = {"elbo": "ELBO", "exact": "log p(x), exact"}


def log_z_line(model) -> str | None:
    """``"log Z: ..."`` for a model with a partition function, else None."""
    log_z = log_partition(model)
    return None if log_z is None else f"log Z: {log_z.describe()}"


def log_z_fields(model) -> dict:
    """``log_z``, ``log_z_spread`` and ``log_z_method`` for JSON output (empty if none)."""
    log_z = log_partition(model)
    if log_z is None:
        return {}
    return {"log_z": log_z.value, "log_z_spread": log_z.spread, "log_z_method": log_z.method}


def evaluate_lines(model, guide, x: torch.Tensor, summary: Mapping[str, float],
                   samples: int) -> list[str] | None:
    """The bound ladder with the ``log Z`` method on each line, or None for a model
    without a partition function (printed the usual way)."""
    log_z = log_partition(model)  # cached: computed once by the evaluation
    if log_z is None:
        return None
    how = " (log Z exact)" if log_z.method == "exact" else " (log Z by AIS)"
    with torch.no_grad():
        no_latents = not latent_sites(trace_program(guide, x[:2]))
    if no_latents:  # every bound is log p(x) itself
        value = summary["exact"] if "exact" in summary else summary["is"]
        lines = [f"  {'log p(x) = -F(x) - log Z' + how:<44} {value:10.3f}"]
    else:
        lines = []
        for key, value in summary.items():
            if key == "num_samples":
                continue
            label = _LABELS.get(key, f"log p(x), IS K={samples}" if key == "is"
                                else key.replace("iwae_", "IWAE K="))
            lines.append(f"  {label + ('' if key == 'exact' else how):<44} {value:10.3f}")
    return lines + [f"  {log_z_line(model)}"]
