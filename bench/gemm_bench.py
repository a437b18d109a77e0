"""bpfast's GEMM against NumPy's np.dot (OpenBLAS), interleaved, in one process.

Usage: python bench/gemm_bench.py [--rounds R] [--quick] [--shapes NAME ...] [--threads T]

Re-executes itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (so OpenBLAS picks its own
kernels: "OpenBLAS auto") and with a large malloc trim threshold / top pad (fresh pages are
not what is measured). Every variant is checked against np.dot before timing. Each round
times every (shape, variant) once, in turn; a timing is the best of a few back-to-back calls
sized to ~20 ms. Reports min and median GFLOP/s over rounds, the ratio bpfast/np.dot of
mins and of medians, and % of the peak measured at the start (_core._peak_gflops: independent
FMAs on bpfast's kernel path and threads, best of three).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

from run import MALLOC_VARS, REMOVED_VARS  # the environment bench/run.py times in

if os.environ.get("_BPFAST_GEMM_BENCH") != "1" and (
    any(var in os.environ for var in REMOVED_VARS) or any(os.environ.get(k) != v for k, v in MALLOC_VARS.items())
):
    env = {k: v for k, v in os.environ.items() if k not in REMOVED_VARS}
    env.update(MALLOC_VARS, _BPFAST_GEMM_BENCH="1")
    os.execve(sys.executable, [sys.executable, *sys.argv], env)

import numpy as np  # noqa: E402

from _quiet import wait_for_quiet_threads  # noqa: E402
from bpfast import _core  # noqa: E402

# name: (M, N, K, trans_a, trans_b) for C = op(A)·op(B); A float32 when mixed
SHAPES = {
    "sq1024": (1024, 1024, 1024, False, False),
    "sq2048": (2048, 2048, 2048, False, False),
    "fwd 100x784x50": (100, 50, 784, False, False),
    "dW 784x100x50 (xT.dout)": (784, 50, 100, True, False),
    "dx 100x50x784 (dout.WT)": (100, 784, 50, False, True),
    "fwd2 100x50x10": (100, 10, 50, False, False),
    "dW2 50x100x10": (50, 10, 100, True, False),
    "dx2 100x10x50": (100, 50, 10, False, True),
    "C fwd 1024x784x1024": (1024, 1024, 784, False, False),
    "C dW 784x1024x1024": (784, 1024, 1024, True, False),
    "C dx 1024x1024x784": (1024, 784, 1024, False, True),
    "D fwd 2048x784x2048": (2048, 2048, 784, False, False),
    "D fwd2 2048x2048x1000": (2048, 1000, 2048, False, False),
    "D dW2 2048x2048x1000": (2048, 1000, 2048, True, False),
    "D dx2 2048x1000x2048": (2048, 2048, 1000, False, True),
    "tiny 1x1x1": (1, 1, 1, False, False),
    "tiny 4x4x4": (4, 4, 4, False, False),
    "small 16x16x16": (16, 16, 16, False, False),
    "small 32x64x32": (32, 64, 32, False, False),
}
QUICK = ["sq1024", "fwd 100x784x50", "dW 784x100x50 (xT.dout)", "dx 100x50x784 (dout.WT)", "fwd2 100x50x10",
         "C fwd 1024x784x1024", "tiny 4x4x4"]


def operands(M, N, K, ta, tb, dtype, mixed):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32 if mixed else dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    return a, b


def variants(M, N, K, ta, tb, dtype, mixed):
    a, b = operands(M, N, K, ta, tb, dtype, mixed)
    at, bt = (a.T if ta else a), (b.T if tb else b)  # NumPy gets the same transposed views
    yield "numpy", (lambda: np.dot(at, bt)), (at, bt)
    yield "bpfast", (lambda: _core._gemm(a, b, None, ta, tb)), (at, bt)


def time_call(f, reps):
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", nargs="*")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64", "mixed"])
    args = ap.parse_args()
    if args.threads:
        _core.set_num_threads(args.threads)
    peak = {dt: max(_core._peak_gflops(dt, 0.2) for _ in range(3)) for dt in ("float32", "float64")}
    names = args.shapes or (QUICK if args.quick else list(SHAPES))
    cases = []
    for name in names:
        M, N, K, ta, tb = SHAPES[name]
        for dt in args.dtypes:
            mixed = dt == "mixed"
            dtype = np.float64 if mixed else np.dtype(dt).type
            if mixed and M * N * K > 2048**3 // 4:
                continue
            vs = list(variants(M, N, K, ta, tb, dtype, mixed))
            ref = vs[0][1]()
            for vname, f, (at, bt) in vs:
                out = f()
                tol = 1e-3 if dtype == np.float32 else 1e-9
                scale = np.sqrt(K) * (np.abs(ref).max() if ref.size else 1)
                assert out.shape == ref.shape and np.allclose(out, ref, rtol=tol, atol=tol * scale), (name, dt, vname)
            t = time_call(vs[1][1], 3)
            reps = int(min(max(0.02 / max(t, 1e-7), 3), 2000))
            cases.append((name, dt, M, N, K, vs, reps))
    times = {(c[0], c[1], v[0]): [] for c in cases for v in c[5]}
    for _ in range(args.rounds):
        for name, dt, M, N, K, vs, reps in cases:
            for vname, f, _ops in vs:
                times[(name, dt, vname)].append(time_call(f, reps))
                if vname == "numpy":
                    wait_for_quiet_threads()  # OpenBLAS spins ~0.1 s after a call: not on our time
    print(f"threads={_core.get_num_threads()} path={_core.info()['kernel_path']} gemm={_core.info()['gemm']} "
          f"rounds={args.rounds}; GFLOP/s min-time (median-time); ratio = numpy time / bpfast time; "
          f"peak {peak['float32']:.0f} GFLOP/s float32, {peak['float64']:.0f} float64 (measured)")
    print(f"{'shape':26s} {'dtype':8s} {'bpfast':>16s} {'numpy':>16s} {'ratio min':>9s} {'ratio med':>9s} {'%peak':>6s}")
    for name, dt, M, N, K, vs, reps in cases:
        flop = 2.0 * M * N * K
        tb_, tn = times[(name, dt, "bpfast")], times[(name, dt, "numpy")]
        gb = flop / min(tb_) / 1e9
        gbm = flop / statistics.median(tb_) / 1e9
        gn = flop / min(tn) / 1e9
        gnm = flop / statistics.median(tn) / 1e9
        print(f"{name:26s} {dt:8s} {gb:7.1f} ({gbm:6.1f}) {gn:7.1f} ({gnm:6.1f}) {min(tn) / min(tb_):9.2f} "
              f"{statistics.median(tn) / statistics.median(tb_):9.2f} {100 * gb / peak['float32' if dt == 'float32' else 'float64']:5.0f}%")


if __name__ == "__main__":
    main()
