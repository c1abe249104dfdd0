"""Log partition functions of restricted Boltzmann machines: exact and by AIS.

An RBM with visible units ``v`` (binary, or real with unit variance), binary hidden
units ``h``, weights ``W`` (visible x hidden) and biases ``b`` (visible), ``c`` (hidden)
has the energy ``E(v, h) = -b.v - c.h - v W h`` (Bernoulli visibles) or
``E(v, h) = |v - b|^2 / 2 - c.h - v W h`` (Gaussian visibles), the free energy
``F(v) = -log sum_h exp(-E(v, h))`` and ``Z = sum_v exp(-F(v))`` (an integral over
``v`` for Gaussian visibles).  This module computes ``log Z``:

* :func:`log_z_exact` sums over every state of the smaller binary layer (the other
  layer is summed or integrated out in closed form), at most :data:`ENUMERATION_LIMIT`
  units, in chunks with a streaming logsumexp;
* :func:`ais_log_z` runs annealed importance sampling (Neal 2001) on the path of
  Salakhutdinov and Murray (2008): from a *base-rate* RBM with zero weights (a
  factorised distribution over ``v``, whose ``log Z`` is known) to the target through
  ``num_temperatures`` intermediate models with energies
  ``(1 - beta) E_A + beta E_B``, one block-Gibbs transition at each, in ``num_runs``
  independent runs.  ``log Z ~= log Z_A + log mean_r w_r``; the spread is three
  standard errors of that log-mean over the runs (the paper reports
  ``log (Z_hat +- 3 sigma_hat)``).  AIS is unbiased for ``Z`` but, through the
  logarithm and with too few temperatures, tends to *underestimate* ``log Z``.

Everything is a pure function of tensors (any device, float32 or float64); models and
evaluation call it.  Example::

    import torch
    from ppl_dgm.ais import ais_log_z, log_z_exact

    W, b, c = 0.5 * torch.randn(12, 10), torch.zeros(12), torch.zeros(10)
    exact = log_z_exact(W, b, c)
    est = ais_log_z(W, b, c, num_temperatures=1000, num_runs=100)
    abs(est.value - exact.value) <= est.spread     # usually True
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import torch
from torch.nn import functional as F

__all__ = ["ENUMERATION_LIMIT", "MIN_TEMPERATURES", "VISIBLE_KINDS", "AISWarning",
           "EnumerationLimitError", "LogZ", "ais_log_z", "base_rate_logits", "free_energy",
           "log_z_exact", "temperatures"]

ENUMERATION_LIMIT = 20
"""Most units of the smaller binary layer that :func:`log_z_exact` enumerates (2^20)."""
MIN_TEMPERATURES = 1000
"""Below this many temperatures :func:`ais_log_z` warns (:class:`AISWarning`)."""
VISIBLE_KINDS = ("bernoulli", "gaussian")

_BLOCK = 1 << 22  # numbers in one enumeration block (~32 MB in float64)


class EnumerationLimitError(ValueError):
    """Exact enumeration was asked for a layer with more than the limit of units."""


class AISWarning(UserWarning):
    """An AIS estimate that may be unreliable (too few temperatures, large spread)."""


@dataclass(frozen=True)
class LogZ:
    """A log partition function and how it was obtained.

    ``spread`` is 0 for an exact value and three standard errors of ``log Z_hat`` over
    the runs for AIS; ``ess`` is the effective number of runs (Kish, from the AIS
    weights); ``reliable`` is False when the spread exceeds ``tolerance`` nats or fewer
    than 10% of the runs carry the weight (a sanity flag: rerun with more temperatures).
    """

    value: float
    spread: float
    method: str
    num_temperatures: int = 0
    num_runs: int = 0
    ess: float = math.nan
    reliable: bool = True
    seconds: float = 0.0
    states: int = 0

    def describe(self) -> str:
        """One line naming the method, e.g. for ``ppl-dgm evaluate``."""
        if self.method == "exact":
            return f"{self.value:.3f} (exact: enumeration of 2^{self.states} states)"
        flag = "" if self.reliable else "; UNRELIABLE: rerun with more temperatures"
        return (f"{self.value:.3f} +- {self.spread:.3f} (AIS, {self.num_temperatures} "
                f"temperatures x {self.num_runs} runs, +- 3 standard errors, effective runs "
                f"{self.ess:.1f}{flag})")


def _check_kind(visible: str) -> None:
    if visible not in VISIBLE_KINDS:
        raise ValueError(f"visible={visible!r}; choose one of {VISIBLE_KINDS}")


def free_energy(v: torch.Tensor, W: torch.Tensor, b: torch.Tensor, c: torch.Tensor,
                visible: str = "bernoulli") -> torch.Tensor:
    """``F(v) = -log sum_h exp(-E(v, h))`` over the last dimension of ``v``."""
    hidden = F.softplus(v @ W + c).sum(-1)
    if visible == "gaussian":
        return 0.5 * ((v - b) ** 2).sum(-1) - hidden
    return -(v @ b) - hidden


def _bits(start: int, stop: int, n: int, like: torch.Tensor) -> torch.Tensor:
    codes = torch.arange(start, stop, device=like.device)
    shifts = torch.arange(n, device=like.device)
    return ((codes.unsqueeze(-1) >> shifts) & 1).to(like.dtype)


def _logsumexp_states(n: int, width: int, score, like: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` of ``score(states)`` over all ``2^n`` binary states, in chunks."""
    total = 2 ** n
    chunk = max(1, min(total, _BLOCK // max(1, width)))
    parts = [torch.logsumexp(score(_bits(s, min(total, s + chunk), n, like)), 0)
             for s in range(0, total, chunk)]
    return torch.logsumexp(torch.stack(parts), 0)


def _limit_error(n: int, layer: str, limit: int) -> EnumerationLimitError:
    return EnumerationLimitError(
        f"exact log Z enumerates every state of the smaller binary layer, but its "
        f"{layer} has {n} units, more than the limit of {limit} (2^{limit} = {2 ** limit} "
        f"states). Estimate log Z by annealed importance sampling instead: "
        f"ppl_dgm.ais.ais_log_z(W, b, c, num_temperatures=10000, num_runs=100), or "
        f"model.log_partition(), which switches to AIS by itself")


@torch.no_grad()
def log_z_exact(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, visible: str = "bernoulli",
                *, limit: int = ENUMERATION_LIMIT) -> LogZ:
    """Exact ``log Z`` by enumerating the smaller binary layer (the hidden layer for
    Gaussian visibles, whose integral is Gaussian).  Raises
    :class:`EnumerationLimitError` above ``limit`` units, naming AIS instead."""
    _check_kind(visible)
    t0 = time.perf_counter()
    n_vis, n_hid = W.shape
    if visible == "bernoulli" and n_vis <= n_hid:
        if n_vis > limit:
            raise _limit_error(n_vis, "visible layer (the smaller one)", limit)
        value = _logsumexp_states(n_vis, n_hid, lambda v: -free_energy(v, W, b, c), W)
        states = n_vis
    else:
        if n_hid > limit:
            which = "hidden layer" + (" (Gaussian visibles: only the hidden layer can be "
                                      "enumerated)" if visible == "gaussian" else "")
            raise _limit_error(n_hid, which, limit)
        if visible == "gaussian":
            def score(h):
                return h @ c + 0.5 * ((b + h @ W.T) ** 2).sum(-1) - 0.5 * (b ** 2).sum()
            value = _logsumexp_states(n_hid, n_vis, score, W) + 0.5 * n_vis * math.log(
                2 * math.pi)
        else:
            value = _logsumexp_states(n_hid, n_vis,
                                      lambda h: h @ c + F.softplus(h @ W.T + b).sum(-1), W)
        states = n_hid
    return LogZ(float(value), 0.0, "exact", seconds=time.perf_counter() - t0, states=states)


def temperatures(num: int, *, device=None, dtype=torch.float64) -> torch.Tensor:
    """``num + 1`` inverse temperatures from 0 to 1, spaced as in Salakhutdinov and
    Murray (2008): 500 steps on [0, 0.5], 4000 on [0.5, 0.9], 10000 on [0.9, 1] out of
    14500, scaled to ``num``."""
    if not isinstance(num, int) or isinstance(num, bool) or num < 1:
        raise ValueError(f"num_temperatures must be a positive integer, got {num!r}")
    if num < 3:
        return torch.linspace(0.0, 1.0, num + 1, dtype=dtype).to(device)
    n1 = max(1, round(num * 500 / 14500))
    n2 = max(1, round(num * 4000 / 14500))
    n3 = max(1, num - n1 - n2)
    n2 = num - n1 - n3
    pieces = [torch.linspace(0.0, 0.5, n1 + 1, dtype=dtype)[:-1],
              torch.linspace(0.5, 0.9, n2 + 1, dtype=dtype)[:-1],
              torch.linspace(0.9, 1.0, n3 + 1, dtype=dtype)]
    return torch.cat(pieces).to(device)


def base_rate_logits(probs: torch.Tensor, *, eps: float = 1e-3) -> torch.Tensor:
    """Visible biases of the base-rate RBM from marginal probabilities (clamped)."""
    p = probs.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def _log_f(v, a, beta, b, base, visible):
    """Log unnormalised marginal of the intermediate model at inverse temperature beta,
    given the hidden pre-activations ``a = v W + c``."""
    hidden = F.softplus(beta * a).sum(-1)
    if visible == "gaussian":
        return (-(1 - beta) * 0.5 * ((v - base) ** 2).sum(-1)
                - beta * 0.5 * ((v - b) ** 2).sum(-1) + hidden)
    return (1 - beta) * (v @ base) + beta * (v @ b) + hidden


def _transition(v, a, beta, W, b, base, visible, generator):
    """One block-Gibbs sweep at inverse temperature beta (``a = v W + c``)."""
    h = torch.bernoulli(torch.sigmoid(beta * a), generator=generator)
    mean = (1 - beta) * base + beta * (b + h @ W.T)
    if visible == "gaussian":
        return mean + torch.randn(mean.shape, generator=generator, device=mean.device,
                                  dtype=mean.dtype)
    return torch.bernoulli(torch.sigmoid(mean), generator=generator)


@torch.no_grad()
def ais_log_z(W: torch.Tensor, b: torch.Tensor, c: torch.Tensor, visible: str = "bernoulli",
              *, num_temperatures: int = 10000, num_runs: int = 100,
              base_logits: torch.Tensor | None = None, tolerance: float = 0.5,
              progress: bool | None = None, generator: torch.Generator | None = None) -> LogZ:
    """``log Z`` of an RBM by annealed importance sampling (Salakhutdinov and Murray 2008).

    :param base_logits: visible biases (Bernoulli) or means (Gaussian) of the base-rate
        model; default: zeros, or the data's base rates via :func:`base_rate_logits`.
    :param num_temperatures: intermediate distributions (default 10000; fewer than
        :data:`MIN_TEMPERATURES` warns with the spread).
    :param num_runs: independent AIS runs (at least 2, for a spread).
    :param tolerance: spread (nats) above which the result is flagged unreliable.
    :param progress: a progress bar; None shows one only for runs longer than 2 s.
    """
    _check_kind(visible)
    if not isinstance(num_runs, int) or isinstance(num_runs, bool) or num_runs < 2:
        raise ValueError(f"num_runs must be an integer >= 2 (the spread is over runs), got "
                         f"{num_runs!r}")
    betas = temperatures(num_temperatures, device=W.device, dtype=W.dtype)
    t0 = time.perf_counter()
    n_vis, n_hid = W.shape
    base = torch.zeros(n_vis, device=W.device, dtype=W.dtype) if base_logits is None \
        else base_logits.to(W)
    if visible == "gaussian":
        v = base + torch.randn((num_runs, n_vis), generator=generator, device=W.device,
                               dtype=W.dtype)
        log_z_base = 0.5 * n_vis * math.log(2 * math.pi) + n_hid * math.log(2.0)
    else:
        v = torch.bernoulli(torch.sigmoid(base).expand(num_runs, n_vis), generator=generator)
        log_z_base = float(F.softplus(base).sum()) + n_hid * math.log(2.0)
    log_w = torch.zeros(num_runs, device=W.device, dtype=W.dtype)
    bar = None
    if progress is not False:
        from tqdm.auto import tqdm
        bar = tqdm(total=num_temperatures, desc="AIS log Z", unit="temp", leave=False,
                   delay=0 if progress else 2.0, mininterval=0.5)
    try:
        for k in range(1, num_temperatures + 1):
            lo, hi = betas[k - 1], betas[k]
            a = v @ W + c                                # shared by both terms and the sweep
            log_w += _log_f(v, a, hi, b, base, visible) - _log_f(v, a, lo, b, base, visible)
            if k < num_temperatures:
                v = _transition(v, a, hi, W, b, base, visible, generator)
            if bar is not None and k % 100 == 0:
                bar.update(100)
    finally:
        if bar is not None:
            bar.close()
    log_mean = torch.logsumexp(log_w, 0) - math.log(num_runs)
    w = torch.exp(log_w - log_mean)                       # normalised to mean 1
    se = float(w.std() / math.sqrt(num_runs))             # delta method: sd(log Z_hat)
    ess = float(w.sum() ** 2 / (w ** 2).sum())
    spread = 3.0 * se
    reliable = spread <= tolerance and ess >= 0.1 * num_runs
    out = LogZ(log_z_base + float(log_mean), spread, "ais", num_temperatures, num_runs, ess,
               reliable, time.perf_counter() - t0)
    if num_temperatures < MIN_TEMPERATURES or not reliable:
        why = (f"only {num_temperatures} temperatures (fewer than {MIN_TEMPERATURES})"
               if num_temperatures < MIN_TEMPERATURES else
               f"the spread over runs is large (effective runs {ess:.1f} of {num_runs})")
        warnings.warn(f"AIS log Z = {out.value:.3f} +- {spread:.3f} (3 standard errors over "
                      f"{num_runs} runs) from {why}: AIS tends to underestimate log Z with "
                      f"too few temperatures; use num_temperatures >= 10000 for a "
                      f"reported number", AISWarning, stacklevel=3)
    return out
