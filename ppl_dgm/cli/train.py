"""``ppl-dgm train``: build model, guide and estimator, train, report held-out numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from .. import registry
from ..distributed import is_main
from ..errors import DataError
from ..programs import set_training
from ..protocol import log_partition, sampler
from ..runs import build_from_config, default_run_dir, init_from, start_run_dir
from ..text import TextDataset, perplexity
from ..undirected import log_z_line
from .parser import parse_options


def _estimator_options(args) -> dict:
    opts = parse_options(args.estimator_opt, "estimator")
    if args.particles is not None:
        opts["num_particles"] = args.particles
    return opts


def _train(args) -> int:
    from ..data import load_data
    from ..evaluate import exact_log_prob, importance_log_likelihood
    from ..train import fit, resolve_device

    data = load_data(args.data, root=args.data_root, seed=args.seed)
    guide_spec = args.guide or registry.default_guide(args.model)
    config = {
        "model": registry.absolute_spec(args.model),
        "model_options": parse_options(args.model_opt, "model"),
        "guide": registry.absolute_spec(guide_spec),
        "guide_options": parse_options(args.guide_opt, "guide"),
        "estimator": registry.absolute_spec(args.estimator),
        "estimator_options": _estimator_options(args),
        "data": args.data, "data_root": args.data_root, "seed": args.seed,
        "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
    }
    if args.init_from:
        config["init_from"] = str(args.init_from)
    torch.manual_seed(args.seed)
    built = build_from_config(config, data)
    model, guide, estimator = built.model, built.guide, built.estimator
    if args.init_from:
        init_from(args.init_from, model, guide)
    run_dir = args.run_dir or default_run_dir(args.model, args.estimator, args.seed)
    run_dir = (start_run_dir(run_dir, config, resume=args.resume, overwrite=args.overwrite)
               if is_main() else Path(run_dir))   # under torchrun rank 0 owns run_dir
    lr_groups = {k: v for k, v in (("model", args.lr_model), ("guide", args.lr_guide),
                                   ("estimator", args.lr_estimator)) if v is not None}
    device = resolve_device(args.device)
    print(f"data: {data.description}")
    print(f"training {args.model} + {guide_spec} with {args.estimator} for {args.steps} steps "
          f"on {device} -> {run_dir}")
    result = fit(model, guide, estimator, data, steps=args.steps, batch_size=args.batch_size,
                 optim=args.optim, lr=args.lr, lr_groups=lr_groups, device=device,
                 seed=args.seed, run_dir=run_dir, log_every=args.log_every,
                 eval_every=args.eval_every, checkpoint_every=args.checkpoint_every,
                 resume=args.resume, progress=not args.no_progress, meta={"config": config})
    if not is_main():
        return 0
    final = result.final
    # "objective" is the estimator's own objective (a bound for likelihood estimators);
    # the loss is a routed surrogate and need not be one
    print(f"done: {result.steps} steps in {result.seconds:.1f} s; training objective "
          f"({estimator.name}) over the last {args.log_every} steps "
          f"{final.get('objective', float('nan')) / args.batch_size:.3f} per point")
    if estimator.needs_likelihood and data.test.shape[0]:
        set_training(False, model, guide)
        torch.manual_seed(args.seed)
        try:
            ll = importance_log_likelihood(model, guide, data.test.to(device),
                                           num_samples=args.eval_samples)
        except DataError as e:  # global latents: no per-point log-likelihood
            print(f"test log-likelihood skipped: {e}")
            return 0
        print(f"test log-likelihood (importance sampling, K={args.eval_samples}): "
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
        ev = evaluate_implicit(model, data, seed=args.seed)
        print(f"test MMD^2 (unbiased, {ev.mmd.n_x} samples vs {ev.mmd.n_y} test points): "
              f"{ev.mmd.mmd2:.5f}, permutation p-value {ev.mmd.p_value:.3f} (training data "
              f"vs test: {ev.reference_mmd2:.5f})")
        if ev.coverage is not None:
            c = ev.coverage
            print(f"class coverage: {c.covered}/{len(c.counts)} classes hold >= 1% of "
                  f"{c.num_samples} samples, effective number {c.effective_classes:.2f} "
                  f"(classifier test accuracy {c.classifier_accuracy:.3f}); counts "
                  f"{list(c.counts)}")
    return 0
