"""Wall time of the README main job's comparison with ``jobs=N`` worker processes against
``jobs=1``, measured in one run, and whether the tables agree.

The comparison is the one ``scripts/main.sh`` runs (``ppl-dgm compare --model sbn
--estimators reinforce,nvil,vimco,rws,ws --data digits --steps 2000 --seeds 3``), without
the plots and files; both variants run one after another in this process, ``jobs=1``
first.  The load average before and after each variant is printed, since other work on
the machine slows one variant and not the other.

    python benchmarks/bench_compare_jobs.py             # the README job, jobs 1 vs 2
    python benchmarks/bench_compare_jobs.py --steps 200 --jobs 2
"""

from __future__ import annotations

import argparse
import math
import os
import time

from ppl_dgm.compare import TIMING_COLUMNS, compare
from ppl_dgm.data import load_data


def _load() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def _max_rel_diff(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for ra, rb in zip(a, b):
        for k, va in ra.items():
            vb = rb.get(k)
            if k in TIMING_COLUMNS or not isinstance(va, float) or not isinstance(vb, float):
                continue
            if math.isfinite(va) and math.isfinite(vb) and va != vb:
                worst = max(worst, abs(va - vb) / max(abs(va), abs(vb)))
    return worst


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="sbn")
    p.add_argument("--estimators", default="reinforce,nvil,vimco,rws,ws")
    p.add_argument("--data", default="digits")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--jobs", default="2", help="worker processes of the parallel variant")
    args = p.parse_args(argv)
    data = load_data(args.data)
    kw = dict(steps=args.steps, seeds=args.seeds, device="cpu")
    print(f"compare --model {args.model} --estimators {args.estimators} --data {args.data} "
          f"--steps {args.steps} --seeds {args.seeds}; {os.cpu_count()} CPUs")
    results, seconds = {}, {}
    for jobs in ("1", args.jobs):
        before = _load()
        t = time.perf_counter()
        results[jobs] = compare(args.model, None, args.estimators, data,
                                jobs=int(jobs) if jobs.isdigit() else jobs, **kw)
        seconds[jobs] = time.perf_counter() - t
        print(f"jobs={jobs}: {seconds[jobs]:.1f} s wall (load average before {before}, "
              f"after {_load()})")
    one, par = results["1"], results[args.jobs]
    print(f"ratio jobs={args.jobs} / jobs=1: {seconds[args.jobs] / seconds['1']:.2f}")
    same = one.to_markdown(timing=False) == par.to_markdown(timing=False)
    print(f"tables (timing columns aside) identical: {same}; largest relative difference "
          f"of a raw run value: {_max_rel_diff(one.runs, par.runs):.1e}")
    print(par.to_markdown(timing=False))


if __name__ == "__main__":
    main()
