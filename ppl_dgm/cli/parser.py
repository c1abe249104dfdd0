"""The argument parser of every ``ppl-dgm`` subcommand, and ``KEY=VALUE`` option parsing."""

from __future__ import annotations

import argparse
import ast


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
    p.add_argument("--data", default="digits", help="digits | mnist | FILE.np[yz] | text[:FILE]")
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
    p.add_argument("--decode", choices=["greedy", "sample"], help="text: default sample "
                   "(greedy for --interpolate)")
    p.add_argument("--interpolate", nargs=2, metavar="SENTENCE", help="text: homotopy")
    p.add_argument("--interp-steps", type=int, default=7, help="points of the homotopy")

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
    p.add_argument("--data", default="digits", help="digits | mnist | FILE.np[yz] | text[:FILE]")
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
    p.add_argument("--jobs", default="1",
                   help="worker processes for the (estimator, seed) runs, or 'auto' (one per "
                        "available core); the table is the same as with 1")
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
