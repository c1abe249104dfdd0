"""Helpers for the command-line robustness tests: run ``main`` in-process and capture what
a user would see, and build a tiny trained run directory once."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

from ppl_dgm.cli import main

# a tiny VAE on the embedded digits: two checkpoints in about a second
TINY = ["--model-opt", "z_dim=2", "--model-opt", "hidden=8", "--guide-opt", "hidden=8",
        "--steps", "20", "--log-every", "10", "--eval-every", "0", "--checkpoint-every", "10",
        "--eval-samples", "4", "--batch-size", "20", "--no-progress", "--device", "cpu"]


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    @property
    def error_lines(self) -> list[str]:
        """The lines of the error message (notes and warnings left out)."""
        lines = [line for line in self.err.split("\n") if line.strip()]
        start = next((i for i, line in enumerate(lines) if "error:" in line), len(lines))
        return lines[start:]


def run_cli(*argv: str) -> Outcome:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main([str(a) for a in argv])
    return Outcome(code, out.getvalue(), err.getvalue())


def train_tiny(run_dir: Path, *extra: str) -> Outcome:
    result = run_cli("train", "--run-dir", run_dir, *TINY, *extra)
    assert result.code == 0, result.err
    return result


def assert_clear_refusal(result: Outcome, *names: str) -> None:
    """Exit code 2, no traceback, one or two lines, naming one of ``names``."""
    assert result.code == 2, (result.code, result.err)
    assert "Traceback" not in result.err, result.err
    lines = result.error_lines
    assert 1 <= len(lines) <= 2 and lines[0].startswith("ppl-dgm"), result.err
    if names:
        assert any(n in result.err for n in names), (names, result.err)
