"""Property-based test of the command line (hypothesis): generated argument lists and
malformed run files never print a traceback, never escape ``main``, and every refusal
exits 2 with one or two lines naming the argument or the file.

The heavy computations after all input has been checked (``fit``, ``evaluate``,
``diagnose``, ``compare``) are replaced by a sentinel, so an example that gets that far
counts as accepted; everything before them (argument parsing, option validation, data
loading, config and checkpoint reading, building and checking model, guide and
estimator) runs for real.  ``test_real_runs_*`` (slow) lets training run for real, for
two steps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

import numpy as np
import pytest
from cli_harness import TINY, run_cli, train_tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppl_dgm.cli.parser import _parser, _subparsers

FAST_EXAMPLES = 300
SLOW_EXAMPLES = 2000
FILES = ("config.json", "metrics.jsonl", "meta.json", "weights.safetensors",
         "optimizer.safetensors", "rng.safetensors", "data.npz")


class Reached(BaseException):
    """All input was accepted: the computation proper would start now."""


class Hang(BaseException):
    pass


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("cliprop")
    rng = np.random.default_rng(0)
    np.savez(root / "data.npz", train=(rng.random((60, 6)) > 0.5).astype(np.float32),
             test=(rng.random((20, 6)) > 0.5).astype(np.float32))
    train_tiny(root / "run", "--data", root / "data.npz")
    (root / "evil.py").write_text(f"open({str(root / 'MARKER')!r}, 'w').write('ran')\n"
                                  f"class M:\n    pass\n")
    return root


@pytest.fixture()
def sentinels(monkeypatch):
    def reached(*args, **kwargs):
        raise Reached()

    import ppl_dgm.compare
    import ppl_dgm.diagnostics
    import ppl_dgm.evaluate
    import ppl_dgm.train

    monkeypatch.setattr(ppl_dgm.train, "fit", reached)
    monkeypatch.setattr(ppl_dgm.evaluate, "evaluate", reached)
    monkeypatch.setattr(ppl_dgm.diagnostics, "diagnose", reached)
    monkeypatch.setattr(ppl_dgm.compare, "compare", reached)


_SUBS = {name: [a for a in sub._actions if a.option_strings and a.dest not in ("help", "debug")]
         for name, sub in _subparsers(_parser()).items()}
_VALUES = ["0", "-1", "1", "2", "3", "10", "nan", "inf", "-inf", "1e400", "1e-300", "1e9",
           "abc", "", " ", "1,2", "0,0", "1,,2", "x=1", "=", "z_dim=0", "z_dim=2", "hidden=8",
           "zdim=2", "hidden=-1", "hidden=[]", "hidden=1e9", "num_particles=0", "dreg=True",
           "dreg=1.5", "(1,", "../x", "/dev/zero", "/dev/null", "/", ".", "digits", "text",
           "vae", "sbn", "elbo", "iwae", "rws", "gaussian", "helmholtz", "all", "elbo,iwae",
           "elbo,nope", "iwae:num_particles=0", "evil.py:M", "nope.py:M", "data.npz",
           "missing.npz", "run", "cpu", "cuda", "adam", "test", "lr", "\x00"]


def _argv_strategy(command: str):
    actions = _SUBS[command]
    value = st.one_of(st.sampled_from(_VALUES), st.integers(-3, 12).map(str),
                      st.text(max_size=6))

    @st.composite
    def options(draw):
        out = []
        chosen = st.lists(st.sampled_from(actions), max_size=6) if actions else st.just([])
        for action in draw(chosen):
            out.append(draw(st.sampled_from(action.option_strings)))
            n = action.nargs if isinstance(action.nargs, int) else 1
            out += [draw(value) for _ in range(n)]
        if draw(st.booleans()):
            out.insert(draw(st.integers(0, len(out))), draw(value))  # a stray token
        if draw(st.integers(0, 19)) == 7:  # now and then a traceback is asked for
            out.append("--debug")
        return out

    return options()


def _mutate(draw, run: Path) -> str:
    """Damage one file of a copy of the trained run in one of many ways; a short name."""
    step = sorted((run / "checkpoints").iterdir())[-1]
    targets = {"config.json": run / "config.json", "metrics.jsonl": run / "metrics.jsonl",
               "meta.json": step / "meta.json", "weights.safetensors": step /
               "weights.safetensors", "optimizer.safetensors": step / "optimizer.safetensors",
               "rng.safetensors": step / "rng.safetensors", "checkpoints": run / "checkpoints"}
    name = draw(st.sampled_from(sorted(targets)))
    path = targets[name]
    how = draw(st.sampled_from(["truncate", "flip", "json", "field", "symlink", "dir",
                                "delete", "empty", "fifo", "deep", "torn", "code"]))
    if path.is_dir() and how not in ("symlink", "delete"):
        how = "delete"
    if how == "code":  # the run names a Python file that would leave a marker
        path = targets["config.json"]
        doc = json.loads(path.read_text())
        doc[draw(st.sampled_from(["model", "guide", "estimator"]))] = \
            f"{run.parent / 'evil.py'}:M"
        path.write_text(json.dumps(doc))
    elif how == "truncate":
        data = path.read_bytes()
        path.write_bytes(data[:draw(st.integers(0, max(0, len(data) - 1)))])
    elif how == "flip":
        data = bytearray(path.read_bytes())
        for _ in range(draw(st.integers(1, 4))):
            if data:
                data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        path.write_bytes(bytes(data))
    elif how == "json":
        path.write_text(json.dumps(draw(_json)))
    elif how == "field" and path.suffix == ".json":
        doc = json.loads(path.read_text())
        doc[draw(st.sampled_from(sorted(doc) + ["extra"]))] = draw(_json)
        path.write_text(json.dumps(doc))
    elif how == "field":
        path.write_bytes(path.read_bytes() + b"\n{\"step\": 1e400}")
    elif how == "symlink":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
        os.symlink(draw(st.sampled_from(["/dev/zero", "/etc/passwd", str(run.parent / "x"),
                                         "../../.."])), path)
    elif how == "dir":
        path.unlink()
        path.mkdir()
    elif how == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif how == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif how == "torn":
        path.write_bytes(path.read_bytes()[:-1] + b'{"step": 2')
    return f"{name}:{how}"


_json = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                     st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3) |
                     st.dictionaries(st.text(max_size=6), kids, max_size=3), max_leaves=8)


@st.composite
def _case(draw, base: Path):
    """An argument list, and for run-reading commands maybe a damaged run directory."""
    work = Path(tempfile.mkdtemp(dir=base))
    shutil.copy(base / "data.npz", work / "data.npz")
    shutil.copy(base / "evil.py", work / "evil.py")
    shutil.copytree(base / "run", work / "run", symlinks=True)
    command = draw(st.sampled_from(sorted(_SUBS)))
    damaged = None
    if command in ("evaluate", "sample", "diagnose") or (command == "train" and draw(
            st.booleans())):
        if draw(st.integers(0, 3)):
            damaged = _mutate(draw, work / "run")
    argv = [command]
    if command in ("evaluate", "sample", "diagnose"):
        argv.append(draw(st.sampled_from(["run", "run", "run", "missing", "data.npz", "."])))
    elif command == "train":
        argv += ["--run-dir", "run", "--resume", "--data", "data.npz", *TINY]
    elif command == "compare":
        argv += ["--estimators", "elbo", "--data", "data.npz", "--out", "cmp"]
    argv += draw(_argv_strategy(command))
    return work, argv, damaged


def _check(work: Path, argv: list[str], damaged) -> str:
    """Run one example; "accepted" (reached the computation or exit 0), "refused" (exit
    2) or "debug" (a traceback was asked for)."""
    here = os.getcwd()
    os.chdir(work)
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(60)
    try:
        result = run_cli(*argv)
    except Reached:
        return "accepted"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        os.chdir(here)
        shutil.rmtree(work, ignore_errors=True)
    where = f"argv={argv!r} damaged={damaged}\n{result.err}"
    if "--debug" in argv:  # a traceback was asked for
        assert result.code in (0, 2), where
        return "debug"
    assert "Traceback" not in result.err, where
    assert result.code in (0, 2), where
    marker = work.parent / "MARKER"
    if marker.exists():
        marker.unlink()
        assert "--trust-code" in argv or "evil.py:M" in argv, f"code from the run ran: {where}"
    if result.code == 2:
        lines = result.error_lines
        assert 1 <= len(lines) <= 2 and lines[0].startswith("ppl-dgm"), where
        assert "error:" in lines[0], where
        return "refused"
    return "accepted"


def _on_alarm(signum, frame):
    raise Hang("the command ran for more than 60 s")


def _property(base, examples):
    @settings(max_examples=examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def prop(data):
        outcomes.append(_check(*data.draw(_case(base))))

    outcomes: list[str] = []
    prop()
    counts = {k: outcomes.count(k) for k in sorted(set(outcomes))}
    print(f"{len(outcomes)} examples: {counts}")
    assert len(outcomes) >= examples, counts  # every example ran (none filtered out)
    assert counts.get("refused", 0) >= examples // 10 and counts.get("accepted", 0) >= 1, counts


def test_cli_never_prints_a_traceback(base, sentinels):
    _property(base, FAST_EXAMPLES)


@pytest.mark.slow
def test_cli_never_prints_a_traceback_many(base, sentinels):
    _property(base, SLOW_EXAMPLES)


@pytest.mark.slow
def test_real_runs_never_print_a_traceback(base, monkeypatch):
    """The same property with training, evaluation and comparison running for real
    (shortened to two steps and a few samples)."""
    import ppl_dgm.compare
    import ppl_dgm.train

    real_fit, real_compare = ppl_dgm.train.fit, ppl_dgm.compare.compare

    def short_fit(*args, **kwargs):
        kwargs.update(steps=2, log_every=1, eval_every=0, checkpoint_every=1)
        return real_fit(*args, **kwargs)

    def short_compare(*args, **kwargs):
        kwargs.update(steps=2, eval_samples=2, grad_draws=0, curve_particles=2, iwae_k=2,
                      eval_every=1)
        return real_compare(*args, **kwargs)

    import ppl_dgm.diagnostics
    import ppl_dgm.evaluate

    real_evaluate = ppl_dgm.evaluate.evaluate

    def short_evaluate(*args, **kwargs):
        kwargs.update(num_samples=min(kwargs.get("num_samples", 8), 8))
        return real_evaluate(*args, **kwargs)

    def reached(*args, **kwargs):
        raise Reached()

    monkeypatch.setattr(ppl_dgm.train, "fit", short_fit)
    monkeypatch.setattr(ppl_dgm.compare, "compare", short_compare)
    monkeypatch.setattr(ppl_dgm.evaluate, "evaluate", short_evaluate)
    monkeypatch.setattr(ppl_dgm.diagnostics, "diagnose", reached)  # NUTS and SBC: minutes
    _property(base, 200)
