"""Kernels and the maximum mean discrepancy, shared by training and evaluation.

A sum of Gaussian kernels

    k(a, b) = sum_s exp(-||a - b||^2 / (2 sigma_s^2)),

and the squared MMD between two samples under it, as the biased V-statistic (all
pairs, GMMN; Li, Swersky and Zemel 2015) or the unbiased U-statistic (diagonal terms
left out; Dziugaite, Roy and Ghahramani 2015):

    MMD^2_V = mean K_xx + mean K_yy - 2 mean K_xy
    MMD^2_U = sum_{i!=j} K_xx / (n(n-1)) + sum_{i!=j} K_yy / (m(m-1)) - 2 mean K_xy.

The GMMN estimator (:mod:`ppl_dgm.estimators.mmd`) trains with them; the evaluation
of implicit models (:mod:`ppl_dgm.implicit`) tests with them.  Pure tensor functions,
no host synchronisation.
"""

from __future__ import annotations

import torch

__all__ = ["gaussian_kernel", "median_distance", "mmd2", "sq_dists"]


def sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances between the rows of ``a`` and ``b`` (flattened),
    shape ``(len(a), len(b))``, clamped at 0 against round-off."""
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1) - 2.0 * a @ b.T
    return d.clamp_min(0.0)


def gaussian_kernel(a: torch.Tensor, b: torch.Tensor, sigmas) -> torch.Tensor:
    """``sum_s exp(-||a_i - b_j||^2 / (2 sigma_s^2))``, shape ``(len(a), len(b))``.

    ``sigmas`` is a sequence of floats or a 1-D tensor of bandwidths."""
    sig = torch.as_tensor(sigmas, dtype=a.dtype, device=a.device).reshape(-1, 1, 1)
    d = sq_dists(a, b)
    return torch.exp(-d.unsqueeze(0) / (2.0 * sig * sig)).sum(0)


def median_distance(x: torch.Tensor) -> torch.Tensor:
    """Median of the pairwise Euclidean distances between distinct rows of ``x``."""
    n = x.shape[0]
    d = sq_dists(x, x)
    off = d[~torch.eye(n, dtype=torch.bool, device=x.device)]
    return off.median().clamp_min(1e-12).sqrt()


def mmd2(x: torch.Tensor, y: torch.Tensor, sigmas, *, unbiased: bool = False) -> torch.Tensor:
    """Squared MMD between samples ``x (n, ...)`` and ``y (m, ...)`` with the Gaussian
    kernel sum; the biased V-statistic, or with ``unbiased=True`` the U-statistic
    (which can be negative)."""
    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = gaussian_kernel(x, x, sigmas), gaussian_kernel(y, y, sigmas), \
        gaussian_kernel(x, y, sigmas)
    if not unbiased:
        return kxx.mean() + kyy.mean() - 2.0 * kxy.mean()
    if n < 2 or m < 2:
        raise ValueError(f"the unbiased MMD^2 needs at least 2 points per sample, got {n} "
                         f"and {m}")
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return sxx + syy - 2.0 * kxy.mean()
