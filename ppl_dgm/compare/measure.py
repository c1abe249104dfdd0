"""Measurements that must not disturb the runs they measure: peak memory, forked RNG.

* :func:`reset_peak_memory` / :func:`peak_memory`: CUDA max allocated memory, or on
  CPU the process's peak resident set size (reset before each run on Linux);
* :func:`fork_rng`: a context in which random numbers may be drawn without changing
  the stream the training run goes on with;
* :func:`heldout_bound`: the held-out IWAE-K bound of a learning-curve point, drawn
  from its own seed inside a forked RNG, with the model and guide in eval mode.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass

import torch

from ..evaluate import bound
from ..programs import set_training

__all__ = ["PeakMemory", "fork_rng", "heldout_bound", "peak_memory", "reset_peak_memory"]


@dataclass(frozen=True)
class PeakMemory:
    """Peak memory in MiB and what was measured (``"cuda_max_allocated"``,
    ``"cpu_peak_rss"`` or ``"cpu_process_max_rss"``)."""

    mb: float
    kind: str


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement on ``device``."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_memory(device: torch.device) -> PeakMemory:
    """Peak memory since :func:`reset_peak_memory`: CUDA max allocated, or the process's
    peak resident set size on CPU (Linux; elsewhere the process's lifetime peak)."""
    if device.type == "cuda":
        return PeakMemory(torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated")
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return PeakMemory(int(line.split()[1]) / 2**10, "cpu_peak_rss")
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return PeakMemory(rss / (2**20 if sys.platform == "darwin" else 2**10),
                      "cpu_process_max_rss")


def fork_rng(device: torch.device):
    """``torch.random.fork_rng`` for the CPU and, on CUDA, the one device in use."""
    return torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [])


def heldout_bound(model, guide, x: torch.Tensor, *, k: int, seed: int,
                  device: torch.device) -> float:
    """Mean IWAE-``k`` bound on ``x`` from seed ``seed``, leaving the RNG stream untouched."""
    with fork_rng(device), torch.no_grad():
        torch.manual_seed(seed)
        set_training(False, model, guide)
        try:
            return float(bound(model, guide, x, k).mean())
        finally:
            set_training(True, model, guide)
