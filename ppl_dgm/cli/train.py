"""``ppl-dgm train``: build model, guide and estimator, train, report held-out numbers.

Nothing is written to the run directory before every check has passed: the options
(and, on ``--resume``, their agreement with the saved ones), the data, the model,
guide and estimator, their compatibility, and the checkpoint to resume from against
the live modules and optimiser.  A fresh run that fails before its first checkpoint
leaves no directory behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from .. import registry
from ..checkpoints import check_checkpoint, find_checkpoint
from ..distributed import is_main
from ..errors import CheckpointError, DataError, NonFiniteLossError
from ..programs import set_training, trainables
from ..protocol import log_partition, sampler
from ..runs import (
    CONFIG_FILE,
    build_from_config,
    check_code,
    check_run_dir,
    default_run_dir,
    init_from,
    is_run_dir,
    read_config,
    record_code,
    start_run_dir,
    write_config,
)
from ..text import TextDataset, perplexity
from ..undirected import log_z_line
from .evaluate import say_notes
from .resume import fresh_config, resume_config


def _check_intervals(args) -> None:
    for flag, value in (("--checkpoint-every", args.checkpoint_every),
                        ("--eval-every", args.eval_every)):
        if value and value % args.log_every:
            raise ValueError(f"{flag} {value} is not a multiple of --log-every "
                             f"{args.log_every} (checkpoints and evaluations fall on metric "
                             f"rows); pass --log-every {value} or a divisor of it")
    if args.from_step is not None and not args.resume:
        raise ValueError("--from-step chooses the checkpoint to resume from; add --resume")
    if args.override and not args.resume:
        raise ValueError("--override changes an option of a resumed run; add --resume")


def _typed_files(args) -> list[str]:
    """The Python files the user named on this command line (trusted as typed)."""
    specs = [getattr(args, k) for k in ("model", "guide", "estimator") if k in args.given]
    return [s.rpartition(":")[0] for s in specs if registry.file_spec(s)]


def _train(args) -> int:
    from ..checks import check_setup
    from ..data import load_data
    from ..train import fit, make_optimizer, resolve_device

    _check_intervals(args)
    run_dir = Path(args.run_dir or default_run_dir(args.model, args.estimator, args.seed))
    check_run_dir(run_dir, resume=args.resume, overwrite=args.overwrite)
    cfg_path = run_dir / CONFIG_FILE
    resuming = args.resume and (cfg_path.exists() or cfg_path.is_symlink())
    if args.resume and not resuming and run_dir.is_dir() and any(
            not p.name.startswith(".tmp-") for p in run_dir.iterdir()):
        raise CheckpointError(f"cannot resume {str(run_dir)!r}: it holds no {CONFIG_FILE}, "
                              f"so it is not a run directory; choose another --run-dir")
    ckpt, notes = None, []
    if resuming:
        saved = read_config(run_dir)
        if args.from_step is not None or (run_dir / "checkpoints").is_dir():
            try:
                ckpt = find_checkpoint(run_dir, args.from_step)
            except CheckpointError:
                if args.from_step is not None or any((run_dir / "checkpoints").glob("step-*")):
                    raise
        config = resume_config(saved, args, run_dir=run_dir, step=ckpt.step if ckpt else 0)
        notes += check_code(config, trust_code=args.trust_code, trusted=_typed_files(args),
                            where=f"run directory {str(run_dir)!r}")
        if ckpt is not None:
            notes += [f"skipped the newer checkpoint {s}" for s in ckpt.skipped]
    else:
        config = record_code(fresh_config(args))
    say_notes(notes)

    device = resolve_device(args.device)
    data = load_data(config["data"], root=config.get("data_root"), seed=config["seed"])
    if not 1 <= config["batch_size"] <= data.train.shape[0]:
        raise ValueError(f"--batch-size {config['batch_size']} must be at most the number of "
                         f"training points ({data.train.shape[0]})")
    torch.manual_seed(config["seed"])
    built = build_from_config(config, data)
    model, guide, estimator = built.model, built.guide, built.estimator
    if config.get("init_from") and ckpt is None:
        init_from(config["init_from"], model, guide, trust_code=args.trust_code)
    lr_groups = dict(config.get("lr_groups") or {})
    x = data.train[:config["batch_size"]]
    if ckpt is not None or args.overwrite:  # checked before anything is replaced
        check_setup(model, guide, estimator, x)
    if ckpt is not None:  # the checkpoint must fit before the run directory is touched
        modules = {**trainables(model, guide, (x,)), "estimator": estimator}
        optimizer = make_optimizer(modules, name=config.get("optim", "adam"), lr=config["lr"],
                                   lr_groups=lr_groups)
        check_checkpoint(ckpt, modules, optimizer, restore_rng=True)
        if config != saved and is_main():
            write_config(run_dir, config)
        print(f"resuming {run_dir} from {ckpt.path.name}")
    elif resuming:
        if config != saved and is_main():
            write_config(run_dir, config)
    created = not run_dir.exists() or args.overwrite
    if not resuming and is_main():   # under torchrun rank 0 owns run_dir
        start_run_dir(run_dir, config, resume=args.resume, overwrite=args.overwrite)
    print(f"data: {data.description}")
    print(f"training {config['model']} + {config['guide']} with {config['estimator']} for "
          f"{config['steps']} steps on {device} -> {run_dir}")

    def record_lr(step, row):  # the learning rates in force, in every metrics row
        row["lr"] = config["lr"]
        row.update({f"lr_{g}": v for g, v in lr_groups.items()})

    try:
        result = fit(model, guide, estimator, data, steps=config["steps"],
                     batch_size=config["batch_size"], optim=config.get("optim", "adam"),
                     lr=config["lr"], lr_groups=lr_groups, device=device, seed=config["seed"],
                     run_dir=run_dir, log_every=config["log_every"],
                     eval_every=config["eval_every"],
                     checkpoint_every=config["checkpoint_every"],
                     resume=ckpt.path if ckpt is not None else False,
                     progress=not args.no_progress, meta={"config": config},
                     callback=record_lr)
    except NonFiniteLossError as e:
        raise NonFiniteLossError(f"{e}; to continue with a lower rate: "
                                 f"ppl-dgm train --run-dir {run_dir} --resume --lr "
                                 f"{config['lr'] / 10:g} --override lr", step=e.step,
                                 checkpoint=e.checkpoint) from None
    except OSError as e:
        if created and is_main() and not is_run_dir_with_checkpoint(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise OSError(e.errno, f"{e.strerror} while writing the run", str(run_dir)) from e
    except Exception:
        if created and is_main() and not is_run_dir_with_checkpoint(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)  # a failed start leaves nothing
        raise
    if not is_main():
        return 0
    _report(result, config, model, guide, estimator, data, device, args)
    return 0


def is_run_dir_with_checkpoint(run_dir: Path) -> bool:
    return is_run_dir(run_dir) and any((run_dir / "checkpoints").glob("step-*"))


def _report(result, config, model, guide, estimator, data, device, args) -> None:
    from ..evaluate import exact_log_prob, importance_log_likelihood

    final = result.final
    # "objective" is the estimator's own objective (a bound for likelihood estimators);
    # the loss is a routed surrogate and need not be one
    print(f"done: {result.steps} steps in {result.seconds:.1f} s; training objective "
          f"({estimator.name}) over the last {config['log_every']} steps "
          f"{final.get('objective', float('nan')) / config['batch_size']:.3f} per point")
    samples = config["eval_samples"]
    if estimator.needs_likelihood and data.test.shape[0]:
        set_training(False, model, guide)
        torch.manual_seed(config["seed"])
        try:
            ll = importance_log_likelihood(model, guide, data.test.to(device),
                                           num_samples=samples)
        except DataError as e:  # global latents: no per-point log-likelihood
            print(f"test log-likelihood skipped: {e}")
            return
        print(f"test log-likelihood (importance sampling, K={samples}): "
              f"{float(ll.mean()):.3f} nats/point (NLL {-float(ll.mean()):.3f})")
        if isinstance(data, TextDataset):
            print(f"test perplexity (IS): {perplexity(ll, data.test):.3f} per token")
        exact = exact_log_prob(model, data.test.to(device))
        if exact is not None:
            print(f"test log-likelihood (exact): {float(exact.mean()):.3f}")
        if log_partition(model) is not None:
            print(f"{log_z_line(model)} (used above)")
    elif data.test.shape[0] > 1 and sampler(model) is not None:
        from ..implicit import evaluate_implicit  # implicit models: sample-based metrics

        set_training(False, model)
        ev = evaluate_implicit(model, data, seed=config["seed"])
        print(f"test MMD^2 (unbiased, {ev.mmd.n_x} samples vs {ev.mmd.n_y} test points): "
              f"{ev.mmd.mmd2:.5f}, permutation p-value {ev.mmd.p_value:.3f} (training data "
              f"vs test: {ev.reference_mmd2:.5f})")
        if ev.coverage is not None:
            c = ev.coverage
            print(f"class coverage: {c.covered}/{len(c.counts)} classes hold >= 1% of "
                  f"{c.num_samples} samples, effective number {c.effective_classes:.2f} "
                  f"(classifier test accuracy {c.classifier_accuracy:.3f}); counts "
                  f"{list(c.counts)}")
