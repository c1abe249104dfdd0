"""``ppl-dgm diagnose``: posterior diagnostics of a trained run."""

from __future__ import annotations

import json
from pathlib import Path

from ..runs import load_run
from .evaluate import say_notes
from .parser import command_line


def _diagnose(args) -> int:
    from ..diagnostics import NutsConfig, check_points, diagnose
    from ..train import resolve_device

    device = resolve_device(args.device)
    run = load_run(args.run_dir, device, trust_code=args.trust_code)
    say_notes(run.notes)
    config, ckpt = run.config, run.checkpoint
    x = (run.data.test if args.split == "test" else run.data.train).to(device)
    if args.max_points is not None:
        x = x[:args.max_points]
    points = args.points
    if args.point_indices:
        try:
            points = [int(i) for i in args.point_indices.split(",") if i.strip()]
        except ValueError as e:
            raise ValueError(f"--point-indices expects comma-separated integers, got "
                             f"{args.point_indices!r}") from e
        check_points(points, x.shape[0], what=f"--point-indices (of the {args.split} split)")
    others = {}
    for other in args.compare or []:
        other_run = load_run(other, device, trust_code=args.trust_code)
        say_notes(other_run.notes)
        others[other] = (other_run.model, other_run.guide)
    result = diagnose(run.model, run.guide, x, points=points, num_draws=args.draws,
                      recheck=not args.no_recheck, recheck_draws=args.recheck_draws,
                      nuts_points=args.nuts,
                      nuts=NutsConfig(num_chains=args.nuts_chains,
                                      num_samples=args.nuts_samples, warmup=args.nuts_warmup),
                      sbc_simulations=args.sbc, sbc_draws=args.sbc_draws,
                      compare_with=others, seed=args.seed)
    out = Path(args.out or Path(args.run_dir) / "diagnostics")
    paths = result.save(out, plots=not args.no_plots, report=args.report,
                        command=command_line(args), image_shape=run.data.image_shape,
                        title=f"Diagnosis of {args.run_dir}: {config['model']} + "
                              f"{config['guide']}, {config['estimator']}",
                        settings={"run": args.run_dir, "step": ckpt.step, "split": args.split,
                                  **{k: config.get(k) for k in ("model", "guide", "estimator",
                                                                "data")}})
    summary = result.summary()
    if args.json:
        print(json.dumps({"step": ckpt.step, "split": args.split, **summary,
                          "files": {k: str(v) for k, v in paths.items()}}, default=float))
        return 0
    imp = summary["importance"]
    print(f"{args.run_dir} at step {ckpt.step}: {config['model']} + {config['guide']}, "
          f"{args.split} split ({x.shape[0]} points), {imp['num_draws']} guide draws per point")
    where = "per point" if imp["per_point"] else "joint over all points (global latents)"
    print(f"  PSIS k-hat {where}: min {imp['khat_min']:.3f}, median {imp['khat_median']:.3f}, "
          f"90% {imp['khat_q90']:.3f}, max {imp['khat_max']:.3f}; "
          f"{100 * imp['frac_khat_above_0.5']:.1f}% > 0.5, "
          f"{100 * imp['frac_khat_above_0.7']:.1f}% > 0.7")
    print(f"  flagged (k-hat > {imp['threshold']:.3f} = min(1 - 1/log10 S, 0.7)): "
          f"{imp['num_flagged']} points {_few(imp['flagged_points'])}"
          + ("" if imp["per_point"] else " (-1: the whole data set)"))
    if "recheck_draws" in imp:
        print(f"  recheck with {imp['recheck_draws']} draws (threshold "
              f"{imp['recheck_threshold']:.3f}): {imp['num_confirmed']} still flagged "
              f"{_few(imp['confirmed_points'])}")
    print(f"  IS effective sample size: median {imp['ess_median']:.1f}, min "
          f"{imp['ess_min']:.1f} of {imp['num_draws']}")
    unit = "nats/point" if imp["per_point"] else "nats for the whole data set"
    print(f"  log p(x) (IS, S={imp['num_draws']}): {imp['log_px_mean']:.3f}; ELBO "
          f"{imp['elbo_mean']:.3f} {unit}")
    if result.reference is not None:
        nuts = summary["nuts"]
        print(f"  NUTS on points {nuts['points']}: {nuts['num_chains']} chains x "
              f"{nuts['num_samples']} draws (+{nuts['warmup']} warmup) in {nuts['seconds']} s; "
              f"min ESS {nuts['min_ess']:.0f}, max R-hat {nuts['max_rhat']:.3f}, "
              f"{nuts['divergences']} divergences")
        print("    guide vs NUTS (per point, mean over latent dims): "
              "|mean diff|/NUTS sd, guide sd / NUTS sd, k-hat")
        rows = result.comparison.rows()
        for p in result.reference.points:
            mine = [r for r in rows if r.get("point") == int(p)]
            if mine:
                k = (f"{result.importance.khat[int(p)]:.3f}" if result.importance.per_point
                     else "joint")
                diff = sum(abs(r["mean_diff_sd"]) for r in mine) / len(mine)
                ratio = sum(r["sd_ratio"] for r in mine) / len(mine)
                print(f"    point {int(p):>5}: {diff:.3f}  {ratio:.3f}  {k}")
        glob = [r for r in rows if "point" not in r]
        for r in glob:
            print(f"    {r['site']}: guide {r['guide_mean']:.3f} +- {r['guide_sd']:.3f}, NUTS "
                  f"{r['nuts_mean']:.3f} +- {r['nuts_sd']:.3f}")
    if result.sbc is not None:
        s = summary["sbc"]
        print(f"  SBC: {s['num_simulations']} simulations, {s['num_draws']} draws, "
              f"{s['num_dims']} dims: chi-square p = {s['p_value']:.3g} (Bonferroni) -> "
              f"{'uniform' if s['uniform'] else 'NOT uniform'} at alpha {s['alpha']}")
        if not imp["per_point"]:
            print("    (each replicate is a simulated data set: a guide whose global factors "
                  "are free parameters fitted to one data set is not amortised over data "
                  "sets, so SBC is expected to reject it)")
    if result.models is not None:
        print("  held-out log p(x), nats/point (paired difference to the best):")
        for r in result.models.rows:
            print(f"    {r['name']:<30} {r['mean']:9.3f} +- {r['se']:.3f}  diff "
                  f"{r['diff']:8.3f} +- {r['diff_se']:.3f}  ({r['method']})")
    for key, path in paths.items():
        print(f"  wrote {key}: {path}")
    return 0


def _few(items: list, limit: int = 12) -> str:
    return str(items[:limit])[:-1] + (", ...]" if len(items) > limit else "]")
