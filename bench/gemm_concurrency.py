"""What two cores give bpfast's GEMM on this machine: one product on two threads, against the same
product on one thread in one process, and in two processes at once, one per core.

Usage: python bench/gemm_concurrency.py [--shape M N K] [--dtype float32|float64] [--seconds S]
                                        [--rounds R]

If two single-thread processes side by side each run slower than one alone, the cores share
something (the FMA units of a host core, power, the L3, memory, the hypervisor): the two-thread
product cannot beat their sum, and its share of the FMA probe's rate is capped by the machine, not
by the kernel. Each configuration runs for --seconds per round; the
rounds alternate the three configurations. Every worker is pinned to its core (the two-thread
worker to both) and starts at a shared instant. Reports GFLOP/s, median and best of each worker's
calls, per round, and the median over rounds; the result is checked against NumPy first. Each
worker then runs the FMA probe (_core._peak_gflops, on its threads, for half as long; the
side-by-side workers' probes run side by side too), and "% of probe" divides the product's median
rate by that: the peak of the same cores in the same seconds, which drifts with the other tenants
from round to round by as much as the product does.
Runs with bench/run.py's malloc settings and without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from run import environment_note, rerun_in_bench_environment  # bench/run.py's environment


def rate(gflops):
    """GFLOP/s as printed: whole numbers, two digits under 10 (a tiny product, a sanitized build)."""
    return f"{gflops:.0f}" if gflops >= 10 else f"{gflops:.2g}"


def worker(args):
    """One process: pin, build the operands, check, wait for the start, time calls for a while."""
    os.sched_setaffinity(0, set(args.cpus))  # first: every thread started later inherits it
    import numpy as np

    import bpfast
    from bpfast import _core

    bpfast.set_num_threads(len(args.cpus))
    M, N, K = args.shape
    rng = np.random.default_rng(0)
    a = rng.standard_normal((M, K)).astype(args.dtype)
    b = rng.standard_normal((K, N)).astype(args.dtype)
    c = _core._gemm(a, b)
    ref = a.astype(np.float64) @ b.astype(np.float64)
    tol = 1e-4 if args.dtype == "float32" else 1e-10
    if not np.allclose(c, ref, rtol=tol, atol=tol * np.abs(ref).max()):
        print(json.dumps({"error": "the product disagrees with NumPy's"}), flush=True)
        return 1
    time.sleep(max(0.0, args.start_at - time.time()))
    times = []
    end = time.perf_counter() + args.seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        _core._gemm(a, b)
        times.append(time.perf_counter() - start)
    flop = 2.0 * M * N * K
    probe = _core._peak_gflops(args.dtype, args.seconds / 2)
    print(json.dumps({"median": flop / statistics.median(times) / 1e9, "best": flop / min(times) / 1e9,
                      "calls": len(times), "probe": probe}), flush=True)
    return 0


def share_of_probe(reports):
    """The workers' product rate (medians, summed) over their probes' rate (summed)."""
    return sum(x["median"] for x in reports) / sum(x["probe"] for x in reports)


def run_workers(args, cpu_sets):
    """Start one worker per cpu set at a shared instant; their reports."""
    start_at = time.time() + 1.5  # after every worker has imported and checked
    common = [sys.executable, os.path.abspath(__file__), "--worker", "--shape", *map(str, args.shape),
              "--dtype", args.dtype, "--seconds", str(args.seconds), "--start-at", repr(start_at)]
    procs = [subprocess.Popen(common + ["--cpus", *map(str, cpus)], stdout=subprocess.PIPE, text=True)
             for cpus in cpu_sets]
    reports = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    for r in reports:
        if "error" in r:
            raise SystemExit(f"gemm_concurrency: {r['error']}")
    return reports


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=[2048, 2048, 2048], metavar=("M", "N", "K"))
    parser.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cpus", type=int, nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--start-at", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        print("gemm_concurrency: needs two cores")
        return 0
    c0, c1 = cpus[:2]
    configs = {
        "1 thread, alone": [[c0]],
        "1 thread each, 2 processes side by side": [[c0], [c1]],
        "2 threads, one process": [[c0, c1]],
    }
    M, N, K = args.shape
    print(f"gemm_concurrency: C = A·B, {M}x{K} · {K}x{N} {args.dtype}, cores {c0} and {c1}, "
          f"{args.seconds} s per configuration and round, {args.rounds} rounds (alternating); GFLOP/s per process")
    print(f"environment (every worker's): {environment_note()}")
    results = {name: [] for name in configs}
    for r in range(args.rounds):
        names = list(configs) if r % 2 == 0 else list(configs)[::-1]
        for name in names:
            reports = run_workers(args, configs[name])
            results[name].append(reports)
            per = ", ".join(f"{rate(x['median'])} (best {rate(x['best'])}, {x['calls']} calls)" for x in reports)
            print(f"  round {r + 1}, {name}: {per}; probe {rate(sum(x['probe'] for x in reports))}, "
                  f"{100 * share_of_probe(reports):.0f}% of it", flush=True)
    print("median over rounds (sum over processes):")
    for name, rounds in results.items():
        totals = [sum(x["median"] for x in reports) for reports in rounds]
        bests = [sum(x["best"] for x in reports) for reports in rounds]
        shares = [share_of_probe(reports) for reports in rounds]
        print(f"  {name}: {rate(statistics.median(totals))} GFLOP/s (best rounds' sum {rate(max(bests))}), "
              f"{100 * statistics.median(shares):.0f}% of the probe (rounds {100 * min(shares):.0f}-{100 * max(shares):.0f}%)")
    return 0


if __name__ == "__main__":
    rerun_in_bench_environment("_BPFAST_GEMM_CONCURRENCY")  # the workers inherit it
    sys.exit(main())
