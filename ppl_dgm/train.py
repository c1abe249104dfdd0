"""One training loop for every model, guide and estimator.

:func:`fit` validates everything before the first step, then runs a capture-ready
inner step (no host synchronisation: metrics accumulate in device tensors and are read
back every ``log_every`` steps), with one native torch optimiser over model, guide and
estimator parameters, per-group learning rates, JSONL metrics, periodic held-out
bounds, atomic checkpoints, exact resume and a NaN guard.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyro
import torch

from .checkpoints import apply_checkpoint, save_checkpoint
from .checks import check_setup
from .data import Dataset, check_data
from .distributed import rank_seed, shard_scale
from .errors import DataError, NonFiniteLossError
from .estimators.base import Estimator
from .evaluate import bound
from .fit_runs import (
    apply_learning_rates,
    data_parallel,
    read_resume,
    resume_data_parallel,
    save_data_parallel,
    write_rows,
)
from .programs import Columns, ProgramCall, trainable
from .runfiles import append_metrics

__all__ = ["FitResult", "StepFunction", "fit", "make_optimizer", "resolve_device"]

GROUPS = ("model", "guide", "estimator")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available; ``"cuda"`` without CUDA is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use "
                         "device='cpu' or 'auto'")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise ValueError(f"device={device!r}; choose 'cpu', 'cuda' or 'auto'")
    return torch.device(device)


def make_optimizer(modules: Mapping[str, object], *, name: str = "adam", lr: float = 1e-3,
                   lr_groups: Mapping[str, float] | None = None,
                   device: torch.device | None = None) -> torch.optim.Optimizer:
    """One native optimiser with a parameter group per role (model, guide, estimator)."""
    lr_groups = dict(lr_groups or {})
    unknown = set(lr_groups) - set(modules)
    if unknown:
        raise ValueError(f"lr_groups names {sorted(unknown)}; groups are {sorted(modules)}")
    groups, seen = [], set()
    for role, module in modules.items():
        # a tensor shared by two programs (one network in model and guide) sits in the
        # group of the first
        params = [p for p in module.parameters() if p.requires_grad and id(p) not in seen]
        seen.update(id(p) for p in params)
        if params:
            groups.append({"params": params, "lr": lr_groups.get(role, lr), "name": role})
    if not groups:
        raise ValueError("model, guide and estimator have no trainable parameters")
    on_cuda = device is not None and device.type == "cuda"
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, **({"fused": True} if on_cuda
                                                  else {"foreach": True}))
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, foreach=True)
    raise ValueError(f"optimizer {name!r} is unknown; choose 'adam' or 'sgd'")


class StepFunction:
    """The inner training step: surrogate, backward, optimiser step.

    It returns the detached loss and metrics as device tensors and never synchronises
    with the host, so it can be recorded in a CUDA graph.
    """

    def __init__(self, model, guide, estimator, optimizer, call: ProgramCall | None = None):
        self.model, self.guide, self.estimator, self.optimizer = model, guide, estimator, optimizer
        self.call = None if call is None or call == ProgramCall() else call
        self._groups = {g.get("name"): g for g in optimizer.param_groups}
        self._aux = {id(p) for p in estimator.parameters()}

    def __call__(self, x: torch.Tensor, step: int
                 ) -> tuple[torch.Tensor, Mapping[str, torch.Tensor]]:
        self.optimizer.zero_grad(set_to_none=True)
        if self.call is None:
            parts = self.estimator.surrogate(self.model, self.guide, x)
        else:
            args, kwargs = self.call.bind(x)
            parts = self.estimator.surrogate(self.model, self.guide, *args, **kwargs)
        self._adopt_new_parameters()
        total = parts.total
        total.backward()
        active = self.estimator.active_groups(step)
        if active is not None:
            for role, group in self._groups.items():
                if role not in active:
                    for p in group["params"]:
                        p.grad = None
        self.optimizer.step()
        return total.detach(), parts.metrics

    def _adopt_new_parameters(self) -> None:
        # An estimator may build state for sites first seen during training (programs
        # whose site names change between steps): train it from then on.
        params = list(self.estimator.parameters())
        if len(params) == len(self._aux):
            return
        new = [p for p in params if id(p) not in self._aux and p.requires_grad]
        self._aux.update(id(p) for p in params)
        if new:
            group = self._groups.get("estimator")
            if group is None:
                lr = self.optimizer.param_groups[0]["lr"]
                self.optimizer.add_param_group({"params": new, "lr": lr, "name": "estimator"})
                self._groups["estimator"] = self.optimizer.param_groups[-1]
            else:
                group["params"].extend(new)


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` did: steps run, metric rows, wall time, last checkpoint."""

    steps: int
    history: list[dict] = field(repr=False)
    seconds: float = 0.0
    run_dir: Path | None = None
    checkpoint: Path | None = None
    resumed_from: int | None = None

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}


def _epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed((seed * 1_000_003 + epoch) % (2**63 - 1))
    return torch.randperm(n, generator=g)


def fit(model, guide, estimator, data, *, steps: int, batch_size: int = 100,
        optim: str = "adam", lr: float = 1e-3, lr_groups: Mapping[str, float] | None = None,
        device: str | torch.device = "auto", seed: int = 0, run_dir: str | Path | None = None,
        log_every: int = 50, eval_every: int = 0, eval_data: torch.Tensor | None = None,
        eval_particles: int = 1, checkpoint_every: int = 0,
        resume: bool | int | str | Path = False, progress: bool | None = None,
        meta: dict | None = None,
        callback: Callable[[int, dict], None] | None = None, args: tuple = (),
        kwargs: Mapping | None = None, data_arg: int | str | None = 0,
        distributed: bool | None = None) -> FitResult:
    """Train ``model`` and ``guide`` with ``estimator`` on ``data``.

    ``model`` and ``guide`` are Pyro programs in any form: ``PyroModule`` or
    ``nn.Module`` instances, or plain functions (or bound methods) using ``pyro.param``
    and ``pyro.module``, whose param-store parameters join the same optimiser and
    checkpoints (see :mod:`ppl_dgm.programs`).

    :param data: a :class:`~ppl_dgm.data.Dataset` (its test split becomes the default
        ``eval_data``), a tensor ``(N, ...)``, a tuple of tensors of one length ``N``
        for programs with several data arguments (with a tuple ``data_arg``: ``(x, y)``
        and ``data_arg=(0, 1)`` call ``model(x_b, y_b)`` on the same minibatch rows), or
        None for programs that take no data.
    :param args, kwargs, data_arg: how the programs are called on a minibatch ``x``: by
        default ``model(x)``; ``data_arg=1, args=(a,)`` calls ``model(a, x)``,
        ``data_arg="data", kwargs={"w": w}`` calls ``model(data=x, w=w)``, and
        ``data_arg=None`` calls ``model(*args, **kwargs)`` without data (see
        :class:`~ppl_dgm.programs.ProgramCall`).  Held-out bounds are computed with the
        same call.
    :param steps: total optimiser steps (a resumed run continues up to ``steps``).
    :param batch_size: fixed minibatch size; each epoch is a seeded permutation, the
        last incomplete batch is dropped so the batch shape never changes.
    :param lr, lr_groups: learning rate, and per-role overrides such as
        ``{"guide": 3e-4}`` (roles: model, guide, estimator).
    :param log_every: steps between metric read-backs (the only host synchronisation).
    :param eval_every: steps between held-out bounds on ``eval_data`` with
        ``eval_particles`` samples (0: never).
    :param checkpoint_every: steps between checkpoints in ``run_dir`` (0: only at the end
        when ``run_dir`` is given).  Rounded up to a multiple of ``log_every``.
    :param callback: ``callback(step, row)`` is called at every read-back point (every
        ``log_every`` steps and at the end) with the metrics row, which it may extend
        before it is recorded.  It may evaluate or measure the live modules (without
        changing them); its time is excluded from the rows' ``time``.
    :param progress: a tqdm bar showing the loss per data point (the loss averaged over
        the last read-back's steps, divided by ``batch_size``); None shows it when
        stderr is a terminal.
    :param resume: continue from ``run_dir``'s newest intact checkpoint if there is one
        (or from a given checkpoint path or step, see
        :func:`~ppl_dgm.checkpoints.resume_checkpoint`); the result is identical to an
        uninterrupted run with the same seed.  ``lr`` and ``lr_groups`` as given apply
        from the resumed step on.

    :param distributed: train data-parallel over the processes of a ``torchrun`` launch
        (None: when launched so; see :mod:`ppl_dgm.distributed`).  ``batch_size`` is then
        the global batch, divided evenly between the ranks; rank 0 writes ``run_dir``.

    A NaN or infinite loss stops training with :class:`~ppl_dgm.errors.NonFiniteLossError`;
    the modules are restored to the last state that passed the check, and the last
    checkpoint on disk is left as it was.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    dev = resolve_device(device)
    dp = data_parallel(distributed, dev)
    if dp is not None:
        dev = dp.device
    call = ProgramCall(tuple(args), dict(kwargs or {}), data_arg)
    if data is None or data_arg is None:
        if data is not None or data_arg is not None:
            raise ValueError("programs without data take data=None and data_arg=None "
                             "together")
        train_x, batch_size, eval_data = torch.zeros(1, 1, device=dev), 1, None
    elif call.num_data > 1 or isinstance(data, (tuple, list, Columns)):
        train_x = _check_columns(data, call, name="training data").to(dev)
        if eval_data is not None:
            eval_data = _check_columns(eval_data, call, name="evaluation data").to(dev)
    else:
        if isinstance(data, Dataset):
            train_x = data.train
            eval_data = data.test if (eval_data is None and data.test.shape[0]) else eval_data
        else:
            train_x = data
        train_x = check_data(train_x, name="training data").to(dev)
        if eval_data is not None:
            eval_data = check_data(eval_data, name="evaluation data").to(dev)
    n = train_x.shape[0]
    if batch_size < 1 or batch_size > n:
        raise ValueError(f"batch_size={batch_size} must be between 1 and the number of "
                         f"training points ({n})")
    local_b = batch_size if dp is None or data_arg is None else dp.local_batch(batch_size)
    offset = 0 if local_b == batch_size else dp.rank * local_b   # this rank's slice
    for m in (model, guide, estimator):
        if isinstance(m, (torch.nn.Module, Estimator)):
            m.to(dev)
    check_setup(model, guide, estimator, train_x[:local_b], call=call)
    first_args, first_kwargs = call.bind(train_x[:local_b])
    model_params = trainable(model, first_args, first_kwargs)
    modules = {"model": model_params,
               "guide": trainable(guide, first_args, first_kwargs,
                                  exclude=list(model_params.parameters())),
               "estimator": estimator}
    for m in modules.values():
        m.to(dev)
    if checkpoint_every:
        checkpoint_every = math.ceil(checkpoint_every / log_every) * log_every

    optimizer = make_optimizer(modules, name=optim, lr=lr, lr_groups=lr_groups, device=dev)
    run_path = Path(run_dir) if run_dir is not None else None
    metrics_path = None
    history: list[dict] = []
    start, resumed_from, last_ckpt = 0, None, None
    if dp is not None:
        dp.plate, dp.factor = (shard_scale(model, first_args, first_kwargs, dp.size, dev)
                               if data_arg is not None else (None, 1.0))
        history, start, resumed_from, last_ckpt, metrics_path = resume_data_parallel(
            dp, run_path, resume, modules, optimizer, lr, lr_groups)
        dp.broadcast_state(modules)
        dp.attach(optimizer, modules)
    elif run_path is not None:
        ckpt, history, metrics_path = read_resume(run_path, resume)
        if ckpt is not None:
            apply_checkpoint(ckpt, modules, optimizer, restore_rng=True)
            apply_learning_rates(optimizer, lr, lr_groups)
            start = resumed_from = ckpt.step
            last_ckpt = ckpt.path
        write_rows(metrics_path, history)
    if resumed_from is None:
        torch.manual_seed(seed if dp is None else rank_seed(seed, dp.rank))
    if start >= steps:
        return FitResult(steps=start, history=history, run_dir=run_path, checkpoint=last_ckpt,
                         resumed_from=resumed_from)

    step_fn = StepFunction(model, guide, estimator, optimizer, call)
    per_epoch = n // batch_size
    good_state = _snapshot(modules)
    acc: dict[str, torch.Tensor] = {}
    acc_count = 0
    t0 = time.perf_counter()
    paused = 0.0
    bar = None
    if progress is None:
        import sys
        progress = sys.stderr.isatty()
    if progress and (dp is None or dp.rank == 0):
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=start, desc=f"{estimator.name}", unit="step")
    epoch, order = -1, None
    modules["model"].train(), modules["guide"].train()
    try:
        with pyro.validation_enabled(False):  # validation synchronises with the host
            for step in range(start, steps):
                e = step // per_epoch
                if e != epoch:
                    epoch = e
                    order = _epoch_order(n, seed, epoch).to(dev)
                i = step % per_epoch
                lo = i * batch_size + offset
                xb = train_x[order[lo:lo + local_b]]
                if dp is None:
                    loss, metrics = step_fn(xb, step)
                else:
                    with dp.step_scope():
                        loss, metrics = step_fn(xb, step)
                _accumulate(acc, "loss", loss)
                for k, v in metrics.items():
                    _accumulate(acc, k, v)
                acc_count += 1
                if bar is not None:
                    bar.update(1)
                done = step + 1
                if done % log_every and done != steps:
                    continue
                # ---- read-back point: the only host synchronisation ----
                row = {"step": done, "time": time.perf_counter() - t0 - paused}
                values = torch.stack(list(acc.values()))
                if dp is not None:
                    values = dp.mean(values)
                row.update({k: float(v) / acc_count for k, v in zip(acc, values.tolist())})
                acc, acc_count = {}, 0
                if not (math.isfinite(row["loss"]) and _params_finite(modules)):
                    _restore(modules, good_state)
                    raise NonFiniteLossError(
                        f"the loss became {row['loss']} between steps "
                        f"{done - log_every} and {done}; the modules were restored to the "
                        f"state at step {good_state['step']}"
                        + (f" and the last checkpoint {str(last_ckpt)!r} was kept"
                           if last_ckpt else "")
                        + ". Lower the learning rate, or check the data and the model's "
                          "likelihood scale", step=done,
                        checkpoint=str(last_ckpt) if last_ckpt else None)
                good_state = _snapshot(modules, step=done)
                try:
                    if eval_every and eval_data is not None and getattr(
                            estimator, "needs_likelihood", True) and (
                                done % eval_every == 0 or done == steps):
                        heldout = _heldout(modules, model, guide, eval_data,
                                           eval_particles, call, dp)
                        if heldout is not None:
                            row[f"heldout_bound_k{eval_particles}"] = heldout
                    if callback is not None:
                        t_cb = time.perf_counter()
                        callback(done, row)
                        paused += time.perf_counter() - t_cb
                except Exception:
                    # held-out evaluation or the user's callback failed: the trained state
                    # is good (its loss passed the check), so keep it before giving up
                    # (one process; a data-parallel save needs every rank)
                    if run_path is not None and dp is None:
                        save_checkpoint(run_path, done, modules=modules,
                                        optimizer=optimizer, meta=meta)
                    raise
                history.append(row)
                if bar is not None:
                    bar.set_postfix(loss_per_point=f"{row['loss'] / batch_size:.4g}")
                if metrics_path is not None:
                    append_metrics(metrics_path, row)
                if run_path is not None and ((checkpoint_every and done % checkpoint_every == 0)
                                             or done == steps):
                    if dp is None:
                        last_ckpt = save_checkpoint(run_path, done, modules=modules,
                                                    optimizer=optimizer, meta=meta)
                    else:
                        last_ckpt = save_data_parallel(dp, run_path, done, modules,
                                                        optimizer, meta)
    finally:
        if bar is not None:
            bar.close()
    return FitResult(steps=steps, history=history, seconds=time.perf_counter() - t0,
                     run_dir=run_path, checkpoint=last_ckpt, resumed_from=resumed_from)


def _check_columns(data, call: ProgramCall, *, name: str) -> Columns:
    """Several data tensors for a tuple ``data_arg``: one per slot, numeric, finite, of
    one length.  Their dtypes are kept (labels may be integers)."""
    tensors = data.tensors if isinstance(data, Columns) else data
    if not isinstance(tensors, (tuple, list)) or call.num_data != len(tensors):
        got = (f"a tuple of {len(tensors)} tensors" if isinstance(tensors, (tuple, list))
               else type(data).__name__)
        raise DataError(f"{name} is {got} but data_arg={call.data_arg!r} places "
                        f"{call.num_data}; pass one tensor per data argument, e.g. "
                        f"fit(..., (x, y), data_arg=(0, 1)) for model(x, y)")
    checked = []
    for i, t in enumerate(tensors):
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(t)
        if t.dim() == 0 or t.shape[0] == 0:
            raise DataError(f"{name}[{i}] has shape {tuple(t.shape)}; each data tensor "
                            f"needs a non-empty first (points) dimension")
        if t.is_complex() or not (t.is_floating_point() or t.dtype in (
                torch.bool, torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
            raise DataError(f"{name}[{i}] has dtype {t.dtype}; expected real numbers")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(f"{name}[{i}] contains NaN or infinite values; remove or impute "
                            f"them before training")
        checked.append(t)
    try:
        return Columns(checked)
    except ValueError as e:
        raise DataError(f"{name}: {e}") from None


def _accumulate(acc: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    value = value.detach().float().reshape(())
    if key in acc:
        acc[key] = acc[key] + value
    else:
        acc[key] = value.clone()


def _params_finite(modules) -> bool:
    flags = [torch.isfinite(p).all() for m in modules.values() for p in m.parameters()]
    return bool(torch.stack(flags).all()) if flags else True


def _snapshot(modules, step: int = 0) -> dict:
    return {"step": step, "state": {role: {k: v.detach().clone() for k, v in
                                           m.state_dict().items()}
                                    for role, m in modules.items()}}


def _restore(modules, snapshot) -> None:
    for role, m in modules.items():
        m.load_state_dict(snapshot["state"][role])


def _heldout(modules, model, guide, x, k, call, dp=None) -> float | None:
    """Mean held-out K-sample bound; None for a model with global latents (its weights
    are joint over the data set, so there is no per-point bound).  Data-parallel: each
    rank bounds its share of the points, and the mean is over all of them."""
    modules["model"].eval(), modules["guide"].eval()
    try:
        if dp is None:
            return float(bound(model, guide, x, k, call=call).mean())
        shard = x[dp.rank::dp.size] if x.shape[0] >= dp.size else x
        values = bound(model, guide, shard, k, call=call)
        sums = dp.total(torch.stack([values.sum(), torch.tensor(float(values.numel()),
                                                                device=values.device)]))
        return float(sums[0] / sums[1])
    except DataError:
        return None
    except ValueError as e:
        raise ValueError(
            f"the held-out bound on {x.shape[0]} evaluation points failed: {e}. A guide "
            f"whose parameters are sized by the training batch (an AutoNormal over local "
            f"latents, one parameter per point) cannot score new points: amortise it (an "
            f"encoder network), or train without held-out bounds (eval_every=0, "
            f"--eval-every 0)") from e
    finally:
        modules["model"].train(), modules["guide"].train()
