"""``ppl-dgm compare``: several estimators on one model, fairly."""

from __future__ import annotations

import sys
from pathlib import Path

from .. import registry
from .parser import parse_options


def _parse_seeds(text: str) -> int | list[int]:
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        return int(text)
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count such as 3 or a list such as "
                         f"0,5,7") from None


def _compare(args) -> int:
    from ..compare import OUTPUT_FILES, compare, parse_estimators
    from ..compare.parallel import plan_jobs
    from ..data import load_data
    from ..distributed import is_main

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"output directory {str(out)!r} exists and is not empty; pass "
                              f"--overwrite to replace the comparison files in it, or choose "
                              f"another --out")
    seeds = _parse_seeds(args.seeds)
    specs = parse_estimators(args.estimators, particles=args.particles)  # fail before data
    plan = plan_jobs(args.jobs, len(specs) * (seeds if isinstance(seeds, int) else len(seeds)))
    if plan.note and is_main():
        print(f"note: {plan.note}")
    data = load_data(args.data, root=args.data_root)
    guide = args.guide or registry.default_guide(args.model)
    print(f"data: {data.description}")
    print(f"comparing {args.estimators} on {args.model} + {guide}, {args.steps} steps, "
          f"seeds {seeds} -> {out}", flush=True)
    result = compare(args.model, guide, args.estimators, data, steps=args.steps, seeds=seeds,
                     batch_size=args.batch_size, lr=args.lr, optim=args.optim,
                     device=args.device, particles=args.particles,
                     model_options=parse_options(args.model_opt, "model"),
                     guide_options=parse_options(args.guide_opt, "guide"),
                     eval_every=args.eval_every, curve_particles=args.curve_particles,
                     iwae_k=args.iwae_k, eval_samples=args.eval_samples,
                     grad_draws=args.grad_draws, target=args.target,
                     progress=not args.no_progress and is_main(), jobs=plan.workers)
    if not is_main():   # under torchrun rank 0 writes the results
        return 0
    for name in OUTPUT_FILES:  # only earlier comparison outputs are replaced
        if (out / name).is_file():
            (out / name).unlink()
    paths = result.save(out, plots=not args.no_plots)
    print()
    print(result.to_markdown())
    print(f"wrote {', '.join(p.name for p in paths)} to {out}")
    if not any(r["status"] == "ok" for r in result.runs):
        print("ppl-dgm compare: no estimator could be run on this model (see the reasons "
              "above)", file=sys.stderr)
        return 1
    return 0
