"""The ``ppl-dgm`` command line: train, evaluate, sample, list, compare."""

from __future__ import annotations

import argparse
import ast
import json
import sys
from pathlib import Path

import torch

from . import registry
from .errors import CheckpointError, DataError, UnknownNameError
from .protocol import log_partition, sampler
from .runs import build_from_config, default_run_dir, init_from, load_run, start_run_dir
from .undirected import log_z_line

__all__ = ["main", "parse_options"]


def parse_options(items: list[str] | None, what: str) -> dict:
    """``["z_dim=8", "hidden=200,200"]`` -> ``{"z_dim": 8, "hidden": "200,200"}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--{what}-opt expects key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
        if isinstance(out[key], tuple):
            out[key] = list(out[key])
    return out


def _add_build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vae", help="registered name or path/to/file.py:Class")
    p.add_argument("--guide", default=None,
                   help="registered name or path/to/file.py:Class (default: the model's usual "
                        "guide)")
    p.add_argument("--estimator", default="elbo", help="see `ppl-dgm list`")
    p.add_argument("--data", default="digits", help="digits | mnist | FILE.npy | FILE.npz")
    p.add_argument("--data-root", default=None, help="directory with the MNIST IDX files")
    p.add_argument("--particles", type=int, default=None,
                   help="samples per data point (the estimator's num_particles)")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="model constructor option, e.g. z_dim=8 or hidden=200,200")
    p.add_argument("--guide-opt", action="append", metavar="KEY=VALUE")
    p.add_argument("--estimator-opt", action="append", metavar="KEY=VALUE",
                   help="estimator option, e.g. dreg=True or analytic_kl=True")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ppl-dgm",
        description="Classic deep generative models as Pyro programs, trained by swappable "
                    "estimators.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model and guide with an estimator")
    _add_build_args(p)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--lr-model", type=float, default=None)
    p.add_argument("--lr-guide", type=float, default=None)
    p.add_argument("--lr-estimator", type=float, default=None)
    p.add_argument("--optim", default="adam", choices=["adam", "sgd"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--run-dir", default=None, help="default: runs/MODEL-ESTIMATOR-sSEED")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint")
    p.add_argument("--init-from", default=None, metavar="RUN_DIR",
                   help="start from the model and guide weights of another run (e.g. "
                        "up-down fine-tuning after greedy DBN training)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--checkpoint-every", type=int, default=500)
    p.add_argument("--eval-samples", type=int, default=1000,
                   help="importance samples per test point for the final log-likelihood")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("evaluate", help="bound ladder and log-likelihood of a trained run")
    p.add_argument("run_dir")
    p.add_argument("--samples", type=int, default=5000, help="importance samples per point")
    p.add_argument("--ks", default="1,5,50", help="IWAE bounds to report")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("sample", help="draw samples from a trained model as a PNG grid")
    p.add_argument("run_dir")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--out", default=None, help="default: RUN_DIR/samples.png")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--binary", action="store_true", help="draw x, not its mean")

    sub.add_parser("list", help="models, guides, estimators and what each estimator handles")

    p = sub.add_parser("compare", help="train one model with several estimators from the same "
                                       "start; print a table, write CSV/JSON and PNG plots")
    p.add_argument("--model", default="vae", help="registered name or path/to/file.py:Class")
    p.add_argument("--guide", default=None,
                   help="registered name or path/to/file.py:Class (default: the model's usual "
                        "guide)")
    p.add_argument("--estimators", required=True,
                   help="comma-separated names, options after colons, e.g. "
                        "'elbo,iwae:num_particles=5:dreg=True'; 'all' for every registered one")
    p.add_argument("--data", default="digits", help="digits | mnist | FILE.npy | FILE.npz")
    p.add_argument("--data-root", default=None, help="directory with the MNIST IDX files")
    p.add_argument("--steps", type=int, default=3000, help="optimiser steps per run")
    p.add_argument("--seeds", default="1",
                   help="number of seeds (0..N-1) or a comma-separated list such as 0,5,7")
    p.add_argument("--particles", type=int, default=None,
                   help="num_particles for every estimator that takes it and was not given one")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optim", default="adam", choices=["adam", "sgd"])
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE")
    p.add_argument("--guide-opt", action="append", metavar="KEY=VALUE")
    p.add_argument("--eval-every", type=int, default=None,
                   help="steps between learning-curve points (default: steps/20)")
    p.add_argument("--curve-particles", type=int, default=50,
                   help="K of the held-out IWAE bound on the learning curves")
    p.add_argument("--iwae-k", type=int, default=50, help="K of the final IWAE bound")
    p.add_argument("--eval-samples", type=int, default=5000,
                   help="importance samples per held-out point for the final log p(x)")
    p.add_argument("--grad-draws", type=int, default=100,
                   help="gradient draws per snapshot for variance and SNR (0: skip)")
    p.add_argument("--target", type=float, default=None,
                   help="held-out bound for the time-to-target column (default: the lowest "
                        "best value over the estimators)")
    p.add_argument("--out", default="runs/compare", help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="write into a non-empty --out, replacing earlier compare outputs")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("diagnose", help="posterior diagnostics of a trained run: PSIS k-hat "
                                        "and ESS per point, NUTS reference, SBC (ArviZ)")
    p.add_argument("run_dir")
    p.add_argument("--points", type=int, default=20,
                   help="points whose guide draws are kept and shown (k-hat and ESS are "
                        "computed for every point)")
    p.add_argument("--point-indices", default=None,
                   help="comma-separated point indices instead of the first --points")
    p.add_argument("--nuts", type=int, default=0,
                   help="points checked against a NUTS reference (continuous latents only)")
    p.add_argument("--nuts-chains", type=int, default=4)
    p.add_argument("--nuts-samples", type=int, default=200)
    p.add_argument("--nuts-warmup", type=int, default=200)
    p.add_argument("--draws", type=int, default=1000, help="guide draws per point (S)")
    p.add_argument("--no-recheck", action="store_true",
                   help="do not redraw flagged points with --recheck-draws draws")
    p.add_argument("--recheck-draws", type=int, default=None, help="default: 10 x --draws")
    p.add_argument("--sbc", type=int, default=1000,
                   help="simulation-based calibration replicates (0: skip)")
    p.add_argument("--sbc-draws", type=int, default=99)
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--max-points", type=int, default=None,
                   help="diagnose only the first N points of the split")
    p.add_argument("--compare", action="append", metavar="RUN_DIR",
                   help="another run to compare on held-out log p(x) (repeatable)")
    p.add_argument("--out", default=None, help="default: RUN_DIR/diagnostics")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def _estimator_options(args) -> dict:
    opts = parse_options(args.estimator_opt, "estimator")
    if args.particles is not None:
        opts["num_particles"] = args.particles
    return opts


def _train(args) -> int:
    from .data import load_data
    from .evaluate import exact_log_prob, importance_log_likelihood
    from .train import fit, resolve_device

    data = load_data(args.data, root=args.data_root, seed=args.seed)
    guide_spec = args.guide or registry.default_guide(args.model)
    config = {
        "model": args.model, "model_options": parse_options(args.model_opt, "model"),
        "guide": guide_spec, "guide_options": parse_options(args.guide_opt, "guide"),
        "estimator": args.estimator, "estimator_options": _estimator_options(args),
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
    run_dir = start_run_dir(run_dir, config, resume=args.resume, overwrite=args.overwrite)
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
    final = result.final
    # "objective" is the estimator's own objective (a bound for likelihood estimators);
    # the loss is a routed surrogate and need not be one
    print(f"done: {result.steps} steps in {result.seconds:.1f} s; training objective "
          f"({estimator.name}) over the last {args.log_every} steps "
          f"{final.get('objective', float('nan')) / args.batch_size:.3f} per point")
    if estimator.needs_likelihood and data.test.shape[0]:
        model.eval(), guide.eval()
        torch.manual_seed(args.seed)
        try:
            ll = importance_log_likelihood(model, guide, data.test.to(device),
                                           num_samples=args.eval_samples)
        except DataError as e:  # global latents: no per-point log-likelihood
            print(f"test log-likelihood skipped: {e}")
            return 0
        print(f"test log-likelihood (importance sampling, K={args.eval_samples}): "
              f"{float(ll.mean()):.3f} nats/point (NLL {-float(ll.mean()):.3f})")
        exact = exact_log_prob(model, data.test.to(device))
        if exact is not None:
            print(f"test log-likelihood (exact): {float(exact.mean()):.3f}")
        if log_partition(model) is not None:
            print(f"{log_z_line(model)} (used above)")
    elif data.test.shape[0] > 1 and sampler(model) is not None:
        from .implicit import evaluate_implicit  # implicit models: sample-based metrics

        model.eval()
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


def _evaluate(args) -> int:
    from .evaluate import evaluate
    from .train import resolve_device
    from .undirected import evaluate_lines, log_z_fields

    device = resolve_device(args.device)
    run = load_run(args.run_dir, device)
    ckpt = run.checkpoint
    x = (run.data.test if args.split == "test" else run.data.train).to(device)
    ks = tuple(int(k) for k in args.ks.split(",") if k)
    result = evaluate(run.model, run.guide, x, num_samples=args.samples, ks=ks)
    if args.json:
        print(json.dumps({"step": ckpt.step, "split": args.split, **result.summary,
                          **log_z_fields(run.model)}))
        return 0
    print(f"{args.run_dir} at step {ckpt.step}, {args.split} split ({x.shape[0]} points), "
          f"nats per point:")
    lines = evaluate_lines(run.model, run.guide, x, result.summary, args.samples)
    if lines is not None:  # log Z exact or by AIS, named on every line
        print("\n".join(lines))
        return 0
    for key, value in result.summary.items():
        if key != "num_samples":
            label = {"elbo": "ELBO", "is": f"log p(x), IS K={args.samples}",
                     "exact": "log p(x), exact"}.get(key, key.replace("iwae_", "IWAE K="))
            print(f"  {label:<28} {value:10.3f}")
    return 0


def _sample(args) -> int:
    from .plots import save_grid

    run = load_run(args.run_dir)
    torch.manual_seed(args.seed)
    sample = sampler(run.model)
    if sample is None:
        raise ValueError(f"model {type(run.model).__name__} has no sample(n) method")
    x = sample(args.n, mean=not args.binary)
    out = Path(args.out or Path(args.run_dir) / "samples.png")
    save_grid(x.cpu(), out, image_shape=run.data.image_shape)
    print(f"wrote {args.n} samples to {out}")
    return 0


def _list(_args) -> int:
    print("models:")
    for name, cls in registry.MODELS.items():
        guide = registry.DEFAULT_GUIDES.get(name, "-")
        print(f"  {name:<20} {cls.__module__}.{cls.__name__} (default guide: {guide})")
    print("guides:")
    for name, cls in registry.GUIDES.items():
        print(f"  {name:<20} {cls.__module__}.{cls.__name__}")
    print("estimators:              discrete  reparam-only  likelihood  min K  energy sites")
    for name, cls in registry.ESTIMATORS.items():
        yes = {True: "yes", False: "no"}
        print(f"  {name:<22} {yes[cls.handles_discrete_latents]:<9} "
              f"{yes[cls.needs_reparam]:<13} {yes[cls.needs_likelihood]:<11} "
              f"{cls.min_particles:<6} {yes[cls.handles_energy_sites]}")
    return 0


def _parse_seeds(text: str) -> int | list[int]:
    try:
        if "," in text:
            return [int(s) for s in text.split(",") if s.strip()]
        return int(text)
    except ValueError:
        raise ValueError(f"--seeds {text!r}: give a count such as 3 or a list such as "
                         f"0,5,7") from None


def _compare(args) -> int:
    from .compare import OUTPUT_FILES, compare, parse_estimators
    from .data import load_data

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"--out {str(out)!r} is a file; give a directory")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise FileExistsError(f"output directory {str(out)!r} exists and is not empty; pass "
                              f"--overwrite to replace the comparison files in it, or choose "
                              f"another --out")
    seeds = _parse_seeds(args.seeds)
    parse_estimators(args.estimators, particles=args.particles)  # fail before loading data
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
                     progress=not args.no_progress)
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


def _diagnose(args) -> int:
    from .diagnostics import NutsConfig, check_points, diagnose
    from .train import resolve_device

    device = resolve_device(args.device)
    run = load_run(args.run_dir, device)
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
        other_run = load_run(other, device)
        others[other] = (other_run.model, other_run.guide)
    result = diagnose(run.model, run.guide, x, points=points, num_draws=args.draws,
                      recheck=not args.no_recheck, recheck_draws=args.recheck_draws,
                      nuts_points=args.nuts,
                      nuts=NutsConfig(num_chains=args.nuts_chains,
                                      num_samples=args.nuts_samples, warmup=args.nuts_warmup),
                      sbc_simulations=args.sbc, sbc_draws=args.sbc_draws,
                      compare_with=others, seed=args.seed)
    out = Path(args.out or Path(args.run_dir) / "diagnostics")
    paths = result.save(out, plots=not args.no_plots)
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


_COMMANDS = {"train": _train, "evaluate": _evaluate, "sample": _sample, "list": _list,
             "compare": _compare, "diagnose": _diagnose}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (UnknownNameError, DataError, CheckpointError, FileExistsError, ValueError) as e:
        print(f"ppl-dgm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
