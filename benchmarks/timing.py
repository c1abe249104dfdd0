"""Shared timing for the benchmarks: interleaved repeats, medians, device syncs."""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["add_common_args", "measure", "ppl_dgm_step", "start", "svi_step", "sync"]


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



def svi_step(model_fn, guide_fn, loss, x: torch.Tensor) -> Callable[[], None]:
    """One stock ``pyro.infer.SVI`` step (Pyro's Adam, lr 1e-3) on ``x`` as a closure."""
    import pyro

    svi = pyro.infer.SVI(model_fn, guide_fn, pyro.optim.Adam({"lr": 1e-3}), loss)

    def step() -> None:
        svi.step(x)
    return step


def add_common_args(p: argparse.ArgumentParser) -> None:
    """The options every benchmark takes: device, batch sizes, repeats, threads, Pyro
    validation for stock SVI."""
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, nargs="+", default=[100, 1000])
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 avoids OpenMP contention on a loaded machine)")
    p.add_argument("--validation", action="store_true",
                   help="leave Pyro's validation on for stock SVI (its default)")


def start(args: argparse.Namespace, what: str) -> torch.device:
    """Apply ``--device`` and ``--threads`` and print the header line naming ``what``."""
    import pyro

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch {torch.__version__}, pyro {pyro.__version__}, "
          f"threads {torch.get_num_threads()}; {what}, median ms per step over "
          f"{args.repeats} interleaved repeats")
    return device
