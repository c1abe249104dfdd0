"""The settings of a comparison: one frozen :class:`CompareConfig`, validated.

:func:`~ppl_dgm.compare.compare` checks its keyword arguments with the functions here
before any work (so bad input fails before hours of runs), builds one
:class:`CompareConfig` and passes it to every (estimator, seed) run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["CompareConfig", "check_counts", "check_steps", "seed_list"]


def check_steps(steps) -> int:
    """``steps`` if it is a positive integer, else a ValueError."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return steps


def seed_list(seeds: int | Sequence[int]) -> tuple[int, ...]:
    """The seeds of a comparison: a count ``n`` (seeds 0..n-1) or distinct integers."""
    if isinstance(seeds, bool):
        raise ValueError(f"seeds must be a count or a list of integers, got {seeds!r}")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be >= 1 (the number of seeds), got {seeds}")
        return tuple(range(seeds))
    out = list(seeds)
    if not out or not all(isinstance(s, int) and not isinstance(s, bool) for s in out):
        raise ValueError(f"seeds must be a positive count or a non-empty list of integers, "
                         f"got {seeds!r}")
    if len(set(out)) != len(out):
        raise ValueError(f"seeds {out} repeat a value; each seed is one independent run")
    return tuple(out)


def check_counts(*, steps: int, batch_size, curve_particles, iwae_k, eval_samples,
                 grad_draws, eval_every) -> int:
    """Check the sample counts and intervals; returns ``eval_every`` (default
    ``steps // 20``)."""
    for name, value, low in (("curve_particles", curve_particles, 1), ("iwae_k", iwae_k, 1),
                             ("eval_samples", eval_samples, 1), ("batch_size", batch_size, 1)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(grad_draws, int) or grad_draws == 1 or grad_draws < 0:
        raise ValueError(f"grad_draws must be 0 (off) or an integer >= 2, got {grad_draws!r}")
    if eval_every is None:
        eval_every = max(1, steps // 20)
    if not isinstance(eval_every, int) or eval_every < 1:
        raise ValueError(f"eval_every must be a positive integer, got {eval_every!r}")
    return eval_every


@dataclass(frozen=True)
class CompareConfig:
    """The settings that every (estimator, seed) run of one comparison shares.

    The fields are :func:`~ppl_dgm.compare.compare`'s keyword arguments, checked:
    ``seeds`` is a tuple, ``eval_every`` is resolved (not None), ``device`` is a
    :class:`torch.device`.  ``log_every``, ``mid`` and ``snapshot_steps`` follow from
    ``steps`` and ``eval_every``.
    """

    steps: int
    seeds: tuple[int, ...]
    eval_every: int
    batch_size: int = 100
    lr: float = 1e-3
    lr_groups: Mapping[str, float] = field(default_factory=dict)
    optim: str = "adam"
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    particles: int | None = None
    model_options: Mapping[str, object] | None = None
    guide_options: Mapping[str, object] | None = None
    curve_particles: int = 50
    iwae_k: int = 50
    eval_samples: int = 5000
    grad_draws: int = 100
    target: float | None = None
    progress: bool = False

    def __post_init__(self) -> None:
        check_steps(self.steps)
        seed_list(self.seeds)
        check_counts(steps=self.steps, batch_size=self.batch_size,
                     curve_particles=self.curve_particles, iwae_k=self.iwae_k,
                     eval_samples=self.eval_samples, grad_draws=self.grad_draws,
                     eval_every=self.eval_every)
        if not isinstance(self.device, torch.device):
            raise TypeError(f"device must be a torch.device, got {self.device!r} (resolve it "
                            f"with ppl_dgm.train.resolve_device)")

    @property
    def log_every(self) -> int:
        """Steps between the training logs that :func:`~ppl_dgm.train.fit` hands to the
        run's callback: the largest divisor of ``eval_every`` that is at most 50."""
        return next(d for d in range(min(self.eval_every, 50), 0, -1)
                    if self.eval_every % d == 0)

    @property
    def mid(self) -> int:
        """The step of the ``"mid"`` gradient snapshot (a multiple of ``log_every``)."""
        log_every = self.log_every
        return min(self.steps, max(log_every, round(self.steps / 2 / log_every) * log_every))

    @property
    def snapshot_steps(self) -> dict[str, int]:
        """The steps of the ``"start"``, ``"mid"`` and ``"end"`` gradient snapshots."""
        return {"start": 0, "mid": self.mid, "end": self.steps}
