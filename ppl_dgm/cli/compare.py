"""``ppl-dgm compare``: several estimators on one model, fairly.

Every finished (estimator, seed) run is saved as it finishes; ``--resume`` continues an
interrupted comparison with the same settings and gives the same table.  The output
directory is written atomically and ends with a completeness marker; ``--overwrite``
replaces an earlier comparison only once the new one is whole.
"""

from __future__ import annotations

import sys

from .. import registry
from .parser import command_line, parse_options
from .resume import data_spec


def _settings(args) -> dict:
    """What makes two comparisons the same (a resumed one must match)."""
    return {"model": registry.absolute_spec(args.model),
            "guide": registry.absolute_spec(args.guide) if args.guide else None,
            "estimators": args.estimators, "data": data_spec(args.data),
            "data_root": args.data_root, "steps": args.steps, "seeds": args.seeds,
            "particles": args.particles, "batch_size": args.batch_size, "lr": args.lr,
            "optim": args.optim, "device": args.device,
            "model_opt": parse_options(args.model_opt, "model"),
            "guide_opt": parse_options(args.guide_opt, "guide"),
            "eval_every": args.eval_every, "curve_particles": args.curve_particles,
            "iwae_k": args.iwae_k, "eval_samples": args.eval_samples,
            "grad_draws": args.grad_draws, "target": args.target}


def _compare(args) -> int:
    from ..compare import OUTPUT_FILES, compare, parse_estimators
    from ..compare.parallel import plan_jobs
    from ..compare.store import PairStore
    from ..data import load_data
    from ..distributed import is_main

    seeds = args.seeds
    settings = _settings(args)
    specs = parse_estimators(args.estimators, particles=args.particles)
    plan = plan_jobs(args.jobs, len(specs) * (seeds if isinstance(seeds, int) else len(seeds)))
    if plan.note and is_main():
        print(f"note: {plan.note}")
    data = load_data(settings["data"], root=args.data_root)
    guide = args.guide or registry.default_guide(args.model)
    store = PairStore.open(args.out, settings, resume=args.resume, overwrite=args.overwrite,
                           output_files=OUTPUT_FILES) if is_main() else None
    print(f"data: {data.description}")
    print(f"comparing {args.estimators} on {args.model} + {guide}, {args.steps} steps, "
          f"seeds {seeds} -> {args.out}", flush=True)
    result = compare(args.model, guide, args.estimators, data, steps=args.steps, seeds=seeds,
                     batch_size=args.batch_size, lr=args.lr, optim=args.optim,
                     device=args.device, particles=args.particles,
                     model_options=settings["model_opt"], guide_options=settings["guide_opt"],
                     eval_every=args.eval_every, curve_particles=args.curve_particles,
                     iwae_k=args.iwae_k, eval_samples=args.eval_samples,
                     grad_draws=args.grad_draws, target=args.target,
                     progress=not args.no_progress and is_main(), jobs=plan.workers,
                     store=store)
    if not is_main():   # under torchrun rank 0 writes the results
        return 0
    paths = result.save(args.out, plots=not args.no_plots, report=args.report,
                        command=command_line(args), extra=store.outputs())
    store.finish()
    print()
    print(result.to_markdown())
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
    if not any(r["status"] == "ok" for r in result.runs):
        print("ppl-dgm compare: no estimator could be run on this model (see the reasons "
              "above)", file=sys.stderr)
        return 2
    return 0
