"""The command line documents itself truthfully: the README synopsis names only options
the parser has, with the parser's defaults; ``--help`` shows every default; ``ppl-dgm
list`` explains its columns; every numeric option is validated by name."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
from cli_harness import assert_clear_refusal, run_cli

from ppl_dgm.cli.parser import _parser, _subparsers

README = Path(__file__).resolve().parents[1] / "README.md"


def _synopsis() -> dict[str, str]:
    """The README's command-line block: for each subcommand, the text of its lines."""
    text = README.read_text()
    block = text.split("## Command line", 1)[1].split("```", 2)[1]
    out, command = {}, None
    for line in block.splitlines():
        m = re.match(r"ppl-dgm (\w+)", line)
        if m:
            command = m.group(1)
        if command:
            out[command] = out.get(command, "") + " " + line.split("#")[0]
    return out


def test_readme_synopsis_matches_the_parser():
    subs = _subparsers(_parser())
    synopsis = _synopsis()
    assert sorted(synopsis) == sorted(subs), "every subcommand appears in the README"
    checked = 0
    for command, text in synopsis.items():
        actions = {s: a for a in subs[command]._actions for s in a.option_strings}
        for option in re.findall(r"(--[a-z][a-z-]*)", text):
            assert option in actions, f"README: `ppl-dgm {command} {option}` is no option"
        for option, value in re.findall(r"\[(--[a-z][a-z-]*) ([^\] ]+)\]", text):
            default = actions[option].default
            try:
                number = float(value)
            except ValueError:
                continue
            if isinstance(default, (int, float)) and not isinstance(default, bool):
                assert number == default, f"README: {command} [{option} {value}] but the " \
                                          f"default is {default}"
                checked += 1
    assert checked >= 8


def test_help_shows_every_default():
    for name, sub in _subparsers(_parser()).items():
        text = sub.format_help()
        for action in sub._actions:
            if action.option_strings and action.nargs != 0 and action.default not in (
                    None, argparse.SUPPRESS) and action.dest != "help":
                shown = action.default if not isinstance(action.default, list) else \
                    action.default
                assert f"default: {shown}" in " ".join(text.split()), (name, action.dest)


def test_list_explains_its_columns():
    result = run_cli("list")
    assert result.code == 0
    for column in ("discrete", "reparam-only", "likelihood", "min K"):
        assert f"{column} = " in " ".join(result.out.split()), column


@pytest.mark.parametrize("argv, named", [
    (["train", "--lr", "0"], "--lr"), (["train", "--lr", "inf"], "--lr"),
    (["train", "--lr", "nan"], "--lr"), (["train", "--lr", "-1e-3"], "--lr"),
    (["train", "--lr-guide", "0"], "--lr-guide"), (["train", "--steps", "0"], "--steps"),
    (["train", "--steps", "-5"], "--steps"), (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--particles", "0"], "--particles"),
    (["train", "--checkpoint-every", "-1"], "--checkpoint-every"),
    (["train", "--eval-every", "-1"], "--eval-every"), (["train", "--log-every", "0"],
                                                        "--log-every"),
    (["train", "--eval-samples", "0"], "--eval-samples"), (["train", "--seed", "-1"], "--seed"),
    (["train", "--steps", "1e400"], "--steps"), (["evaluate", "r", "--samples", "0"],
                                                 "--samples"),
    (["evaluate", "r", "--ks", "0"], "--ks"), (["sample", "r", "--n", "0"], "--n"),
    (["compare", "--estimators", "elbo", "--seeds", "0"], "--seeds"),
    (["compare", "--estimators", "elbo", "--eval-samples", "-2"], "--eval-samples"),
    (["diagnose", "r", "--points", "0"], "--points"), (["diagnose", "r", "--nuts", "-1"],
                                                       "--nuts"),
    (["train", "--model-opt", "z_dim=0"], "z_dim"),
])
def test_numeric_options_are_validated_by_name(tmp_path, argv, named):
    result = run_cli(*argv, *(["--run-dir", tmp_path / "r"] if argv[0] == "train" else []))
    assert_clear_refusal(result, named)
    assert not (tmp_path / "r").exists()
