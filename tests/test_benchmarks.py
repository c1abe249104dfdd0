"""The benchmark scripts run (tiny sizes; timings are not asserted)."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"


def _load(name):
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.mark.parametrize("name", ["bench_step", "bench_sbn", "bench_made"])
def test_benchmark_runs(name, capsys):
    _load(name).main(["--batch", "8", "--repeats", "1", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    assert "/hand" in out  # the ratio columns against hand-written PyTorch
