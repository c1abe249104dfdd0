"""The argument parser of every ``ppl-dgm`` subcommand, and ``KEY=VALUE`` option parsing.

Every numeric option is checked as it is parsed (a learning rate is a finite number
> 0, sizes and counts are integers >= 1, intervals >= 0 where 0 means "never"), so a
bad value is refused with one line naming the option before anything runs.  ``--help``
shows every option's default, and :func:`synopsis` renders the one-line-per-command
summary that the README shows (a test compares the two).
"""

from __future__ import annotations

import argparse
import ast
import math
import sys

__all__ = ["OVERRIDABLE", "given_options", "parse_options", "synopsis"]

# train options that ``--resume`` may change only with ``--override NAME``
OVERRIDABLE = ("lr", "lr-model", "lr-guide", "lr-estimator")
_UNSET = object()


def parse_options(items: list[str] | None, what: str) -> dict:
    """``["z_dim=8", "hidden=200,200"]`` -> ``{"z_dim": 8, "hidden": [200, 200]}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--{what}-opt expects key=value with a name as key, got "
                             f"{item[:60]!r}")
        try:
            out[key] = ast.literal_eval(value) if len(value) < 1000 else value
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            out[key] = value
        if isinstance(out[key], tuple):
            out[key] = list(out[key])
        if isinstance(out[key], complex) or (isinstance(out[key], float)
                                             and not math.isfinite(out[key])):
            raise ValueError(f"--{what}-opt {key}={value}: expected a finite real number")
        if not isinstance(out[key], (bool, int, float, str, list, type(None))):
            raise ValueError(f"--{what}-opt {key}={value[:40]}: expected a number, a flag, "
                             f"a text or a list such as 200,200")
    return out


# ------------------------------------------------------------------ checked types
def _int(low: int, high: int = 2**63 - 1, what: str = "an integer"):
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text[:40]!r}") from None
        if not low <= value <= high:
            bound = f">= {low}" if high == 2**63 - 1 else f"from {low} to {high}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "int"
    return parse


MAX_LR = 1e4  # beyond this float32 optimiser updates overflow


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not (math.isfinite(value) and 0 < value <= MAX_LR):
        raise argparse.ArgumentTypeError(f"must be a number > 0 and <= {MAX_LR:g}, got "
                                         f"{text[:40]}")
    return value


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text[:40]!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text[:40]}")
    return value


def _int_list(text: str) -> list[int]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got "
                                         f"{text[:40]!r}")
    return [_int(1, 10**9, "comma-separated integers >= 1")(p) for p in parts]


def _seeds(text: str) -> int | list[int]:
    if "," in text:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        out = [_int(0, 2**63 - 1, "a list of seeds such as 0,5,7")(p) for p in parts]
        if not out or len(set(out)) != len(out):
            raise argparse.ArgumentTypeError(f"give distinct seeds such as 0,5,7, got "
                                             f"{text[:40]!r}")
        return out
    return _int(1, 10**6, "a count such as 3 or a list such as 0,5,7")(text)


POS = _int(1)          # sizes and counts
NONNEG = _int(0)       # intervals and counts where 0 means "never" or "skip"
SEED = _int(0, 2**63 - 1, "a seed (an integer >= 0)")


# ------------------------------------------------------------------ parser
class _Help(argparse.HelpFormatter):
    """Every option's help ends with its default (flags and unset options excepted)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if (action.option_strings and action.nargs != 0 and "%(default)" not in text
                and "default:" not in text and action.default not in (None, argparse.SUPPRESS)):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose refusals are two lines (the error and where to look)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        message = "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)
        print(f"{self.prog}: error: {message}\nsee `{self.prog} --help` for the options",
              file=sys.stderr)
        raise SystemExit(2)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                   help="print the traceback of an error")


def _build_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="vae", help="registered name or path/to/file.py:Class")
    p.add_argument("--guide", default=None,
                   help="registered name or path/to/file.py:Class (default: the model's usual "
                        "guide)")
    p.add_argument("--estimator", default="elbo", help="see `ppl-dgm list`")
    _data_args(p)
    p.add_argument("--particles", type=POS, default=None, metavar="K",
                   help="samples per data point (the estimator's num_particles; default: "
                        "the estimator's own)")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="model constructor option, e.g. z_dim=8 or hidden=200,200 (default: "
                        "none)")
    p.add_argument("--guide-opt", action="append", metavar="KEY=VALUE",
                   help="guide constructor option, e.g. hidden=200 (default: none)")
    p.add_argument("--estimator-opt", action="append", metavar="KEY=VALUE",
                   help="estimator option, e.g. dreg=True or analytic_kl=True (default: none)")


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="digits", help="digits | mnist | FILE.np[yz] | text[:FILE]")
    p.add_argument("--data-root", default=None, metavar="DIR",
                   help="directory with the MNIST IDX files (default: none)")


def _run_dir_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", metavar="RUN_DIR", help="a directory written by ppl-dgm train")
    p.add_argument("--trust-code", action="store_true",
                   help="import the Python file the run names as its model, guide or "
                        "estimator (refused otherwise: it would run that file's code)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ppl-dgm",
                     description="Classic deep generative models as Pyro programs, trained by "
                                 "swappable estimators.")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model and guide with an estimator")
    _build_args(p)
    p.add_argument("--steps", type=POS, default=3000, help="optimiser steps in all")
    p.add_argument("--batch-size", type=POS, default=100, help="points per minibatch")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    for group in ("model", "guide", "estimator"):
        p.add_argument(f"--lr-{group}", type=_positive_float, default=None, metavar="LR",
                       help=f"learning rate of the {group}'s parameters (default: --lr)")
    p.add_argument("--optim", default="adam", choices=["adam", "sgd"], help="optimiser")
    p.add_argument("--seed", type=SEED, default=0, help="random seed")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--run-dir", default=None, metavar="DIR",
                   help="where config, metrics and checkpoints go (default: "
                        "runs/MODEL-ESTIMATOR-sSEED)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run from its newest intact checkpoint; its saved "
                        "options apply, and a different one is refused unless --override "
                        "names it")
    p.add_argument("--override", action="append", choices=OVERRIDABLE, metavar="NAME",
                   help=f"with --resume, apply a changed option ({', '.join(OVERRIDABLE)}) "
                        f"from the resumed step on (default: none)")
    p.add_argument("--from-step", type=NONNEG, default=None, metavar="N",
                   help="with --resume, continue from the checkpoint of step N (default: the "
                        "newest intact one)")
    p.add_argument("--init-from", default=None, metavar="RUN_DIR",
                   help="start from the model and guide weights of another run, e.g. "
                        "up-down fine-tuning after greedy DBN training (default: none)")
    p.add_argument("--trust-code", action="store_true",
                   help="with --resume or --init-from, import a Python file that run names "
                        "(a file given on this command line is trusted as typed)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run directory")
    p.add_argument("--log-every", type=POS, default=100,
                   help="steps between metric rows (checkpoints and evaluations fall on them)")
    p.add_argument("--eval-every", type=NONNEG, default=500,
                   help="steps between held-out bounds, a multiple of --log-every (0: never)")
    p.add_argument("--checkpoint-every", type=NONNEG, default=500,
                   help="steps between checkpoints, a multiple of --log-every (0: at the end "
                        "only)")
    p.add_argument("--eval-samples", type=POS, default=1000,
                   help="importance samples per test point for the final log-likelihood")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _common(p)

    p = sub.add_parser("evaluate", help="bound ladder and log-likelihood of a trained run")
    _run_dir_args(p)
    p.add_argument("--samples", type=POS, default=5000, help="importance samples per point")
    p.add_argument("--ks", type=_int_list, default=[1, 5, 50], metavar="K,K,...",
                   help="IWAE bounds to report")
    p.add_argument("--split", default="test", choices=["test", "train"], help="data split")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _common(p)

    p = sub.add_parser("sample", help="draw samples from a trained model as a PNG grid")
    _run_dir_args(p)
    p.add_argument("--n", type=_int(1, 100_000), default=64, help="number of samples")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="output file (default: RUN_DIR/samples.png, or a .txt for text)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed")
    p.add_argument("--binary", action="store_true", help="draw x, not its mean")
    p.add_argument("--decode", choices=["greedy", "sample"],
                   help="text: how words are chosen (default: sample; greedy for "
                        "--interpolate)")
    p.add_argument("--interpolate", nargs=2, metavar="SENTENCE",
                   help="text: homotopy between two sentences (default: none)")
    p.add_argument("--interp-steps", type=_int(2, 1000), default=7,
                   help="points of the homotopy")
    _common(p)

    p = sub.add_parser("list", help="models, guides, estimators and what each estimator handles")
    _common(p)

    p = sub.add_parser("compare", help="train one model with several estimators from the same "
                                       "start; print a table, write CSV/JSON and PNG plots")
    p.add_argument("--model", default="vae", help="registered name or path/to/file.py:Class")
    p.add_argument("--guide", default=None,
                   help="registered name or path/to/file.py:Class (default: the model's usual "
                        "guide)")
    p.add_argument("--estimators", required=True, metavar="E1,E2,...",
                   help="comma-separated names, options after colons, e.g. "
                        "'elbo,iwae:num_particles=5:dreg=True'; 'all' for every registered one")
    _data_args(p)
    p.add_argument("--steps", type=POS, default=3000, help="optimiser steps per run")
    p.add_argument("--seeds", type=_seeds, default=1,
                   help="number of seeds (0..N-1) or a comma-separated list such as 0,5,7")
    p.add_argument("--particles", type=POS, default=None, metavar="K",
                   help="num_particles for every estimator that takes it and was not given one "
                        "(default: each estimator's own)")
    p.add_argument("--batch-size", type=POS, default=100, help="points per minibatch")
    p.add_argument("--lr", type=_positive_float, default=1e-3, help="learning rate")
    p.add_argument("--optim", default="adam", choices=["adam", "sgd"], help="optimiser")
    p.add_argument("--device", default="auto", help="cpu | cuda | auto")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="model constructor option (default: none)")
    p.add_argument("--guide-opt", action="append", metavar="KEY=VALUE",
                   help="guide constructor option (default: none)")
    p.add_argument("--eval-every", type=POS, default=None, metavar="N",
                   help="steps between learning-curve points (default: steps/20)")
    p.add_argument("--curve-particles", type=POS, default=50,
                   help="K of the held-out IWAE bound on the learning curves")
    p.add_argument("--iwae-k", type=POS, default=50, help="K of the final IWAE bound")
    p.add_argument("--eval-samples", type=POS, default=5000,
                   help="importance samples per held-out point for the final log p(x)")
    p.add_argument("--grad-draws", type=NONNEG, default=100,
                   help="gradient draws per snapshot for variance and SNR (0: skip)")
    p.add_argument("--target", type=_finite_float, default=None,
                   help="held-out bound for the time-to-target column (default: the lowest "
                        "best value over the estimators)")
    p.add_argument("--jobs", default="1", metavar="N|auto",
                   help="worker processes for the (estimator, seed) runs, or 'auto' (one per "
                        "available core); the table is the same as with 1")
    p.add_argument("--out", default="runs/compare", metavar="DIR", help="output directory")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier comparison in --out (atomically, when the new one "
                        "is complete)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted comparison with the same settings: finished "
                        "(estimator, seed) runs are kept, the rest are run")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html: table, explanations and figures in one "
                        "self-contained page (default: on)")
    _common(p)

    p = sub.add_parser("diagnose", help="posterior diagnostics of a trained run: PSIS k-hat "
                                        "and ESS per point, NUTS reference, SBC (ArviZ)")
    _run_dir_args(p)
    p.add_argument("--points", type=POS, default=20,
                   help="points whose guide draws are kept and shown (k-hat and ESS are "
                        "computed for every point)")
    p.add_argument("--point-indices", default=None, metavar="I,J,...",
                   help="comma-separated point indices instead of the first --points "
                        "(default: none)")
    p.add_argument("--nuts", type=NONNEG, default=0,
                   help="points checked against a NUTS reference (continuous latents only)")
    p.add_argument("--nuts-chains", type=POS, default=4, help="NUTS chains")
    p.add_argument("--nuts-samples", type=POS, default=200, help="NUTS draws per chain")
    p.add_argument("--nuts-warmup", type=NONNEG, default=200, help="NUTS warm-up steps")
    p.add_argument("--draws", type=_int(2), default=1000, help="guide draws per point (S)")
    p.add_argument("--no-recheck", action="store_true",
                   help="do not redraw flagged points with --recheck-draws draws")
    p.add_argument("--recheck-draws", type=_int(2), default=None, metavar="S",
                   help="draws for the recheck (default: 10 x --draws)")
    p.add_argument("--sbc", type=NONNEG, default=1000,
                   help="simulation-based calibration replicates (0: skip)")
    p.add_argument("--sbc-draws", type=POS, default=99, help="guide draws per SBC replicate")
    p.add_argument("--split", default="test", choices=["test", "train"], help="data split")
    p.add_argument("--max-points", type=POS, default=None, metavar="N",
                   help="diagnose only the first N points of the split (default: all)")
    p.add_argument("--compare", action="append", metavar="RUN_DIR",
                   help="another run to compare on held-out log p(x), repeatable (default: "
                        "none)")
    p.add_argument("--out", default=None, metavar="DIR",
                   help="output directory (default: RUN_DIR/diagnostics)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--no-plots", action="store_true", help="write no PNG plots")
    p.add_argument("--report", action=argparse.BooleanOptionalAction, default=True,
                   help="write report.html: summary, figures, flagged points and the SBC "
                        "verdict in one self-contained page (default: on)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _common(p)
    return parser


def command_line(args: argparse.Namespace) -> str:
    """The ``ppl-dgm`` command that parses to ``args``: the subcommand, its positional
    arguments and every option that differs from its default (shown in reports)."""
    import shlex

    sub = next(a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction))
    words = ["ppl-dgm", args.command]
    for action in sub.choices[args.command]._actions:
        value = getattr(args, action.dest, None)
        if isinstance(action, argparse._HelpAction) or action.dest == "debug" or (
                action.option_strings and value == action.default):
            continue
        if not action.option_strings:
            words.append(str(value))
        elif isinstance(action, argparse.BooleanOptionalAction):
            words.append(action.option_strings[0 if value else 1])
        elif action.nargs == 0:
            words.append(action.option_strings[-1])
        elif isinstance(action, argparse._AppendAction):
            for v in value:
                words += [action.option_strings[-1], str(v)]
        elif action.nargs is None and isinstance(value, (list, tuple)):
            words += [action.option_strings[-1], ",".join(map(str, value))]  # --seeds 0,5
        else:
            words += [action.option_strings[-1]] + [str(v) for v in (
                value if isinstance(value, (list, tuple)) else [value])]
    return shlex.join(words)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def given_options(argv: list[str]) -> set[str]:
    """The destinations of the options given explicitly in ``argv`` (a default that was
    typed counts as given), from a parse in which every default is a sentinel."""
    parser = _parser()
    for sub in _subparsers(parser).values():
        for action in sub._actions:
            if action.dest not in ("help", "debug"):
                action.default = None if isinstance(action, argparse._AppendAction) \
                    else _UNSET
    ns = parser.parse_args(argv)
    return {k for k, v in vars(ns).items() if v is not _UNSET and v is not None}


def synopsis(width: int = 92) -> str:
    """One entry per subcommand, every option with its default or metavar, wrapped: the
    README's "Command line" block."""
    lines = []
    for name, sub in _subparsers(_parser()).items():
        head = f"ppl-dgm {name:<8} "
        tokens = []
        for a in sub._actions:
            if a.dest in ("help", "debug"):
                continue
            if not a.option_strings:
                tokens.append(a.metavar or a.dest.upper())
                continue
            opt = a.option_strings[0]
            if a.nargs == 0:
                tokens.append(f"[{opt}]")
                continue
            if a.choices is not None and a.metavar is None:
                shown = "|".join(map(str, a.choices))
            elif a.default is not None and a.default is not argparse.SUPPRESS:
                shown = ",".join(map(str, a.default)) if isinstance(a.default, list) \
                    else str(a.default)
            else:
                shown = a.metavar or a.dest.upper()
            if isinstance(a.nargs, int) and a.nargs > 1:
                shown = " ".join([shown] * a.nargs)
            more = " ..." if isinstance(a, argparse._AppendAction) else ""
            tokens.append(f"{opt} {shown}" if a.required else f"[{opt} {shown}{more}]")
        line = head
        for t in tokens:
            if len(line) + len(t) + 1 > width and line.strip() != head.strip():
                lines.append(line.rstrip())
                line = " " * len(head)
            line += t + " "
        lines.append(line.rstrip())
    return "\n".join(lines)
