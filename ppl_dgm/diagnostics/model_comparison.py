"""Model comparison on held-out per-point log p(x), with paired differences.

Each model's ``log p(x)`` is exact where the model declares it
(:func:`ppl_dgm.protocol.exact_log_prob`), else importance-sampled with its guide.  The
differences to the best model are paired over the same points, so the between-point
spread cancels.  (PSIS-LOO over per-datapoint latents is meaningless: leaving a point
out removes its latent too.)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import xarray as xr

from .. import protocol
from ..evaluate import importance_log_likelihood
from ._common import _check_x

__all__ = ["ModelComparison", "compare_models"]


@dataclass(frozen=True)
class ModelComparison:
    """Held-out log p(x) per point for several models, with paired differences.

    ``rows`` are sorted best first; each has the mean log p(x) (nats per point), its
    standard error ``sd / sqrt(N)``, and the mean and standard error of the per-point
    difference to the best model (paired: the same points, so the between-point spread
    cancels).  ``method[name]`` is ``"exact"`` or ``"is-K"`` (an importance-sampling
    estimate with K draws: a stochastic lower bound).
    """

    log_px: dict[str, np.ndarray] = field(repr=False)
    method: dict[str, str]
    rows: list[dict]

    def dataset(self) -> xr.Dataset:
        names = [r["name"] for r in self.rows]
        return xr.Dataset({"log_px": (("model", "point"), np.stack([self.log_px[n]
                                                                     for n in names]))},
                          coords={"model": names},
                          attrs={"method": ", ".join(f"{n}: {self.method[n]}" for n in names)})


@torch.no_grad()
def compare_models(candidates: Mapping[str, tuple], x: torch.Tensor, *, num_samples: int = 1000,
                   exact: bool = True, seed: int | None = 0) -> ModelComparison:
    """Compare ``{name: (model, guide)}`` on held-out points ``x`` by per-point log p(x).

    Uses the model's exact ``log_prob`` where it has one (and ``exact``), else
    importance sampling with the guide and ``num_samples`` draws.

    Example::

        cmp = compare_models({"z=8": (m8, g8), "z=2": (m2, g2)}, data.test)
        for row in cmp.rows: print(row)
    """
    x = _check_x(x)
    if len(candidates) < 1:
        raise ValueError("compare_models needs at least one (model, guide) pair")
    log_px, method = {}, {}
    for name, (model, guide) in candidates.items():
        if seed is not None:
            torch.manual_seed(seed)
        value = protocol.exact_log_prob(model, x) if exact else None
        if value is not None:
            method[name] = "exact"
        else:
            value = importance_log_likelihood(model, guide, x, num_samples=num_samples)
            method[name] = f"is-{num_samples}"
        log_px[name] = value.double().cpu().numpy()
    n = x.shape[0]
    means = {k: float(v.mean()) for k, v in log_px.items()}
    order = sorted(means, key=means.get, reverse=True)
    best = log_px[order[0]]
    rows = []
    for name in order:
        v = log_px[name]
        d = v - best
        se = float(v.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        d_se = float(d.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
        rows.append({"name": name, "method": method[name], "mean": means[name], "se": se,
                     "diff": float(d.mean()), "diff_se": d_se,
                     "z": float(d.mean() / d_se) if d_se and d_se > 0 else 0.0})
    return ModelComparison(log_px, method, rows)
