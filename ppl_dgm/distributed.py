"""Data-parallel training and sharded work under ``torchrun`` (``torch.distributed``).

A script that calls :func:`~ppl_dgm.train.fit` (or ``ppl-dgm train``) trains data-parallel
when it is launched by ``torchrun --nproc_per_node=N``; the Pyro programs need no change.
:class:`DataParallel` holds what :func:`~ppl_dgm.train.fit` does differently then:

* the process group: initialised from torchrun's environment (``RANK``, ``WORLD_SIZE``,
  ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``) with the backend of the device (NCCL on
  CUDA, where rank ``r`` uses ``cuda:LOCAL_RANK``; Gloo on the CPU);
* the minibatch: ``batch_size`` is the *global* batch; every rank draws the same seeded
  epoch order and takes its own ``batch_size / world_size`` points of each global batch
  (:meth:`DataParallel.local_batch` refuses a batch size the world size does not divide);
* the loss: when the data plate's size is the minibatch itself (the zoo's
  ``pyro.plate("data", len(x))``), the sites of the data plate are scaled by the world
  size (:class:`ShardScale`), as a subsample of the global batch; a plate that already
  declares the full data size (``pyro.plate("data", N, subsample=...)``) keeps its own
  subsample scale.  Either way the average of the ranks' gradients is the gradient of
  the global batch, and gradients are averaged over every parameter the optimiser
  trains (one all-reduce per step, :meth:`DataParallel.attach`), so modules and
  plain-function programs (param-store parameters) are treated alike;
* running statistics: :func:`gather_statistics` lets a running mean/variance (NVIL's
  centring moments, :class:`~ppl_dgm.estimators._score.RunningMoments`) see the values
  of the whole global batch, so every rank folds in the same batch moments; after every
  step every buffer of model, guide and estimator is broadcast from rank 0, so every
  rank holds the same state;
* random numbers: rank ``r`` draws from its own stream (:func:`rank_seed`; rank 0 from
  ``seed`` itself);
* read-back points: metrics are averaged over the ranks; rank 0 writes logs and
  checkpoints (holding every rank's random state); a resumed run restores every rank.

Why not ``torch.nn.parallel.DistributedDataParallel`` itself: DDP averages gradients
from hooks set up by the wrapped module's ``forward``, and expects one forward per
backward through that wrapper.  The estimators call the model and guide inside Pyro's
handlers (trace, replay, several particles, wake and sleep phases) and plain-function
programs have no module at all, so wrapping them would change the user's code.  The
same average DDP computes, the mean over the ranks of every trained parameter's
gradient, is taken here by one bucketed all-reduce per (device, dtype) before the
optimiser step.

Example (two processes on one machine)::

    torchrun --standalone --nproc_per_node=2 train_script.py   # calls ppl_dgm.fit(...)
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from pyro.poutine.messenger import Messenger

from .sites import data_plate_name
from .traces import trace_program

__all__ = ["DataParallel", "ShardScale", "World", "backend_for", "gather_statistics",
           "is_main", "rank_seed", "shard_scale", "world"]

_ACTIVE: DataParallel | None = None   # set during a data-parallel training step


@dataclass(frozen=True)
class World:
    """This process's place among the processes of a launch."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0


def world() -> World:
    """The running process group's rank and size, else torchrun's environment, else
    one process."""
    if dist.is_available() and dist.is_initialized():
        rank = dist.get_rank()
        return World(rank, dist.get_world_size(), int(os.environ.get("LOCAL_RANK", rank)))
    try:
        return World(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise ValueError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK must be integers ({e})") \
            from None


def is_main() -> bool:
    """Whether this process is rank 0 (the one that writes files and prints)."""
    return world().rank == 0


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream: ``seed`` itself on rank 0, else a hash
    of ``(seed, rank)``."""
    if rank == 0:
        return seed
    digest = hashlib.sha256(f"ppl-dgm:{seed}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def backend_for(device: torch.device) -> str:
    """``"nccl"`` for CUDA devices, ``"gloo"`` for the CPU."""
    return "nccl" if device.type == "cuda" else "gloo"


def gather_statistics(values: torch.Tensor) -> torch.Tensor:
    """The values a running statistic folds in: ``values`` itself in one process; during
    a data-parallel step, every rank's values (flattened, in rank order), so that batch
    moments are those of the global batch on every rank."""
    dp = _ACTIVE
    if dp is None:
        return values
    flat = values.reshape(-1).contiguous()
    out = [torch.empty_like(flat) for _ in range(dp.size)]
    dist.all_gather(out, flat)
    return torch.cat(out)


class ShardScale(Messenger):
    """Multiply the scale of every sample site inside plate ``plate`` by ``factor``: a
    rank's shard of the global batch counts as the subsample it is."""

    def __init__(self, plate: str, factor: float):
        super().__init__()
        self.plate, self.factor = plate, float(factor)

    def _process_message(self, msg):
        if msg["type"] == "sample" and any(f.name == self.plate
                                           for f in msg["cond_indep_stack"]):
            msg["scale"] = self.factor * msg["scale"]


def shard_scale(model, args: tuple, kwargs: dict, world_size: int,
                device: torch.device) -> tuple[str | None, float]:
    """``(data plate, factor)`` for a rank's shard: factor ``world_size`` when the model's
    data plate is as large as the shard (the batch is the program's data), 1 when the
    plate declares a larger size and subsamples (its scale already counts the full data)."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        tr = trace_program(model, *args, **kwargs)
    plate = data_plate_name(tr)
    if plate is None:
        return None, 1.0
    for site in tr.nodes.values():
        for f in site.get("cond_indep_stack", ()):
            if f.name == plate:
                full = f.full_size if f.full_size is not None else f.size
                return plate, float(world_size) if full == f.size else 1.0
    return plate, 1.0


class DataParallel:
    """The process group of a data-parallel :func:`~ppl_dgm.train.fit` (see the module
    docstring).  Build it with :meth:`setup` under torchrun."""

    def __init__(self, device: torch.device):
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.device = device
        self._objects = (dist.group.WORLD if dist.get_backend() == "gloo"
                         else dist.new_group(backend="gloo"))
        self.plate: str | None = None
        self.factor = 1.0

    @classmethod
    def setup(cls, device: torch.device) -> DataParallel:
        """Join (or initialise from torchrun's environment) the process group, with the
        backend of ``device``; a CUDA device becomes ``cuda:LOCAL_RANK``."""
        w = world()
        if device.type == "cuda":
            if device.index is None:
                device = torch.device("cuda", w.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            backend = backend_for(device)
            if not (dist.is_nccl_available() if backend == "nccl"
                    else dist.is_gloo_available()):
                raise ValueError(f"data-parallel training on {device.type} needs the "
                                 f"{backend!r} backend of torch.distributed, which this "
                                 f"torch build lacks")
            for var in ("MASTER_ADDR", "MASTER_PORT"):
                if var not in os.environ:
                    raise ValueError(f"WORLD_SIZE={w.size} but {var} is not set; launch with "
                                     f"torchrun, which sets RANK, WORLD_SIZE, MASTER_ADDR and "
                                     f"MASTER_PORT")
            dist.init_process_group(backend, rank=w.rank, world_size=w.size)
        return cls(device)

    # ------------------------------------------------------------------ set-up
    def local_batch(self, batch_size: int) -> int:
        """Each rank's share of the global ``batch_size``; refused unless divisible."""
        if batch_size % self.size:
            lower = max(self.size, batch_size // self.size * self.size)
            raise ValueError(
                f"batch_size={batch_size} is the global batch of this torchrun launch of "
                f"{self.size} processes (WORLD_SIZE={self.size}) and must be divisible by "
                f"it: each rank takes batch_size / world size points; use batch_size="
                f"{lower} or {lower + self.size}")
        return batch_size // self.size

    def broadcast_state(self, modules) -> None:
        """Give every rank rank 0's parameters and buffers."""
        for t in _state_tensors(modules):
            dist.broadcast(t.data, 0)

    def attach(self, optimizer: torch.optim.Optimizer, modules) -> None:
        """Average gradients over the ranks before every optimiser step; broadcast every
        buffer from rank 0 after it."""
        optimizer.register_step_pre_hook(lambda opt, args, kwargs: self._average_grads(opt))
        optimizer.register_step_post_hook(
            lambda opt, args, kwargs: self._broadcast_buffers(modules))

    def _average_grads(self, optimizer) -> None:
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for bucket in _buckets(params):
            flags = torch.tensor([p.grad is not None for p in bucket], dtype=bucket[0].dtype,
                                 device=bucket[0].device)
            flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p))
                              .reshape(-1) for p in bucket] + [flags])
            dist.all_reduce(flat)
            flat /= self.size
            seen = flat[-len(bucket):].tolist()
            offset = 0
            for p, has in zip(bucket, seen):
                size = p.numel()
                if p.grad is not None:
                    p.grad.copy_(flat[offset:offset + size].view_as(p))
                elif has > 0:   # another rank's program reached this parameter
                    p.grad = flat[offset:offset + size].view_as(p).clone()
                offset += size

    def _broadcast_buffers(self, modules) -> None:
        buffers = [b for m in modules.values() if isinstance(m, torch.nn.Module)
                   for b in m.buffers()]
        for bucket in _buckets(buffers):
            flat = torch.cat([b.reshape(-1) for b in bucket])
            wire = flat.to(torch.uint8) if flat.dtype == torch.bool else flat
            dist.broadcast(wire, 0)
            flat = wire.to(flat.dtype)
            offset = 0
            for b in bucket:
                b.copy_(flat[offset:offset + b.numel()].view_as(b))
                offset += b.numel()

    @contextlib.contextmanager
    def step_scope(self):
        """The context of one training step: the shard scale and gathered statistics."""
        global _ACTIVE
        _ACTIVE = self
        try:
            if self.plate is not None and self.factor != 1.0:
                with ShardScale(self.plate, self.factor):
                    yield
            else:
                yield
        finally:
            _ACTIVE = None

    # ------------------------------------------------------------------ collectives
    def mean(self, t: torch.Tensor) -> torch.Tensor:
        """The mean of ``t`` over the ranks (a new tensor)."""
        t = t.clone()
        dist.all_reduce(t)
        return t / self.size

    def total(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over the ranks (a new tensor)."""
        t = t.clone()
        dist.all_reduce(t)
        return t

    def broadcast_object(self, obj):
        """Rank 0's ``obj`` on every rank (pickled over the CPU group); an exception sent
        by rank 0 is raised on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self._objects)
        if isinstance(box[0], _Failure):
            raise box[0].error
        return box[0]

    def fail(self, error: BaseException):
        """Send rank 0's error to every rank (with :meth:`broadcast_object`) and raise it."""
        self.broadcast_object(_Failure(error))

    def rng_states(self) -> list[dict[str, str]]:
        """Every rank's random state (CPU and this rank's CUDA device), base64 text."""
        mine = {"torch": _b64(torch.get_rng_state())}
        if self.device.type == "cuda":
            mine["cuda"] = _b64(torch.cuda.get_rng_state(self.device))
        out: list = [None] * self.size
        dist.all_gather_object(out, mine, group=self._objects)
        return out

    def restore_rng(self, state: dict[str, str]) -> None:
        """Set this rank's random state from :meth:`rng_states`' entry."""
        torch.set_rng_state(_unb64(state["torch"]))
        if "cuda" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(_unb64(state["cuda"]), self.device)


@dataclass(frozen=True)
class _Failure:
    error: BaseException


def _state_tensors(modules) -> list[torch.Tensor]:
    out = []
    for m in modules.values():
        out.extend(m.parameters())
        if isinstance(m, torch.nn.Module):
            out.extend(m.buffers())
    return out


def _buckets(tensors) -> list[list[torch.Tensor]]:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    return list(groups.values())


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(text: str) -> torch.Tensor:
    return torch.frombuffer(bytearray(base64.b64decode(text)), dtype=torch.uint8).clone()
