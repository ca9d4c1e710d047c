"""Run the benchmarks and write ``results/bench.json``: ``python -m benchmarks.run [name ...]``."""

from __future__ import annotations

import argparse
import json
import sys

import experiments  # noqa: F401  (single-threaded BLAS, as in runs and tests)
from benchmarks import bench_agents, bench_env, bench_markov, bench_reward_models, bench_solvers
from benchmarks.common import save

REGISTRY = {
    **bench_solvers.BENCHMARKS,
    **bench_env.BENCHMARKS,
    **bench_reward_models.BENCHMARKS,
    **bench_agents.BENCHMARKS,
    **bench_markov.BENCHMARKS,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {sorted(REGISTRY)})")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in REGISTRY]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {sorted(REGISTRY)}")
    results = {}
    for name in args.names or REGISTRY:
        results[name] = REGISTRY[name]()
        r = results[name]
        status = "ok" if r["met"] else "MISSED"
        print(f"{name:<24} ratio {r['ratio']:.3f}  (target {r['goal']} {r['target']})  {status}", flush=True)
    save(results)  # merged: other entries of bench.json (e.g. make bench-scaling's "scaling") are kept
    print(json.dumps(results, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
