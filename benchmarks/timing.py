"""Shared timing for the benchmarks: interleaved repeats, medians, device syncs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["measure", "ppl_dgm_step", "sync"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(variants: dict[str, Callable[[], None]], device: torch.device, repeats: int,
            warmup: int) -> dict[str, float]:
    """Median milliseconds per call of each variant, timed round-robin so that machine
    noise hits every variant alike."""
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(repeats):
        for name, fn in variants.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) * 1e3 for name, ts in times.items()}


def ppl_dgm_step(model, guide, estimator, x: torch.Tensor, device: torch.device
                 ) -> Callable[[], None]:
    """One ppl_dgm training step (the StepFunction that fit() runs) as a closure."""
    from ppl_dgm.train import StepFunction, make_optimizer

    modules = {"model": model, "guide": guide, "estimator": estimator}
    step_fn = StepFunction(model, guide, estimator, make_optimizer(modules, device=device))
    counter = iter(range(10**9))

    def step() -> None:
        step_fn(x, next(counter))
    return step

