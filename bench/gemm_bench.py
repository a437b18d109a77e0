"""bpfast's GEMM against NumPy's np.dot (OpenBLAS) and PyTorch's torch.mm (MKL), interleaved.

Usage: python bench/gemm_bench.py [--rounds R] [--quick] [--shapes NAME ...] [--threads T]
                                  [--dtypes float32 float64 mixed] [--no-peers]

Re-executes itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (so OpenBLAS picks its own
kernels: "OpenBLAS auto") and with bench/run.py's malloc settings (fresh pages are not what is
measured). torch.mm, when PyTorch is installed, runs in a process of its own (peers_torch.py,
through _peer.py's protocol; its thread pool would otherwise spin on our cores): the product
that PyTorch's Linear layers run, so steps C and D of bench/run.py can be read product by
product. It takes float32 and float64 (no mixed dtypes). Every variant is checked first against a
float64 product of the same inputs, element by element (bound() gives the tolerance); one that
disagrees is reported and not timed. All three allocate their result per call (see main).
A shape's rounds run back to back; each round times every variant once, in an order that
rotates; a sample is the mean of back-to-back calls lasting ~20 ms, after ~5 ms of
untimed ones. Reports GFLOP/s from the min (median) sample, the time ratios numpy/bpfast and
torch/bpfast of medians (of mins), and % of the peak measured just before the row's rounds
(_core._peak_gflops: independent FMAs on bpfast's kernel path and threads, best of three). The
machine's FMA rate drifts with its other tenants: in one run, a single probe at the start read 6%
under what later rows reached.
Exits 1 when a variant disagrees with the float64 product.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from run import Peer, environment_note, rerun_in_bench_environment, rotated  # bench/run.py's environment and peers

rerun_in_bench_environment("_BPFAST_GEMM_BENCH")

import numpy as np  # noqa: E402

from _quiet import wait_for_quiet_threads, warm_up  # noqa: E402
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


SAMPLE_S = 0.02  # seconds of back-to-back calls per sample
WARM_S = 0.005  # untimed calls before each sample
PEAK_PROBE_S = 0.2  # seconds per FMA probe (best of three)
# bound()'s constant. Measured over every shape and dtype above, in units of BOUND_C = 1: the honest
# variants err by at most 10.5 (bpfast float32 on the AVX-512 path, "D dW2"; its AVX2 and generic
# paths 3.5, NumPy 3.1, PyTorch 3.3); a result scaled by 1.001 by at least 3069.
BOUND_C = 64


def operands(M, N, K, ta, tb, dtype, mixed):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(np.float32 if mixed else dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    return a, b


def local_sampler(f):
    """sample(reps): the mean seconds of ``reps`` back-to-back calls of f, after WARM_S of untimed ones."""

    def sample(reps):
        warm_up(f, WARM_S)
        start = time.perf_counter()
        for _ in range(reps):
            f()
        return (time.perf_counter() - start) / reps

    return sample


def start_torch(threads):
    """The PyTorch worker (peers_torch.py), or (None, why not)."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH", "")) if p)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    tmp = tempfile.TemporaryDirectory()
    peer = Peer("torch", env, tmp.name)
    peer.tmp = tmp  # kept as long as the worker
    if peer.skip:
        peer.close()
        return None, str(peer.skip)
    return peer, f"torch {peer.about.get('version', '')}, {peer.about.get('threads')} threads"


def bound(at, bt, dtype):
    """The largest |C - op(A)·op(B)| accepted for each element of C computed in ``dtype``:
    BOUND_C · eps(dtype) · sqrt(K) · max_k |A[i,k]| · max_k |B[k,j]|. The K roundings of a dot
    product add up like a random walk, hence sqrt(K) (not K, the worst case). In float64 the
    reference is NumPy's own product: the check bounds the distance between two float64 products."""
    rows = np.abs(at).max(axis=1, initial=0)[:, None]
    cols = np.abs(bt).max(axis=0, initial=0)[None, :]
    return BOUND_C * np.finfo(dtype).eps * np.sqrt(at.shape[1]) * rows * cols


def disagreement(out, ref, tol):
    """None when every element of ``out`` is within ``tol`` of ``ref``, else what is wrong."""
    if out.shape != ref.shape:
        return f"shape {out.shape}, not {ref.shape}"
    err = np.abs(out - ref)
    bad = ~(err <= tol)  # a NaN is bad too
    if not bad.any():
        return None
    i = np.unravel_index(np.argmax(bad), bad.shape)
    return f"off by {err[i]:.3g} at {tuple(map(int, i))}, bound {tol[i]:.3g}"


def ratio(times, other):
    """(median, min) time ratios other/bpfast, or None when either was not timed."""
    if other not in times or "bpfast" not in times:
        return None
    t, b = times[other], times["bpfast"]
    return statistics.median(t) / statistics.median(b), min(t) / min(b)


def fmt_ratio(r):
    return f"{r[0]:5.2f} ({r[1]:4.2f})" if r else f"{'-':>12s}"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--shapes", nargs="*", choices=list(SHAPES), metavar="SHAPE")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--dtypes", nargs="*", default=["float32", "float64", "mixed"], choices=["float32", "float64", "mixed"])
    ap.add_argument("--no-peers", action="store_true", help="without PyTorch's torch.mm")
    args = ap.parse_args(argv)
    if args.threads:
        _core.set_num_threads(args.threads)
    torch, torch_about = (None, "--no-peers") if args.no_peers else start_torch(args.threads)
    names = args.shapes or (QUICK if args.quick else list(SHAPES))
    print(f"threads={_core.get_num_threads()} path={_core.info()['kernel_path']} gemm={_core.info()['gemm']} "
          f"rounds={args.rounds}; torch.mm: {torch_about}; GFLOP/s of the min (median) sample; "
          f"ratio = other's time / bpfast's, of medians (of mins); "
          f"%peak of an FMA probe just before each row")
    print(f"environment: {environment_note()}")
    print(f"{'shape':26s} {'dtype':8s} {'bpfast':>15s} {'numpy':>15s} {'torch':>15s} {'numpy/bpfast':>12s} "
          f"{'torch/bpfast':>12s} {'%peak':>6s}")
    failed = []
    for name in names:
        M, N, K, ta, tb = SHAPES[name]
        for dt in args.dtypes:
            mixed = dt == "mixed"
            dtype = np.float64 if mixed else np.dtype(dt).type
            if mixed and M * N * K > 2048**3 // 4:
                continue
            a, b = operands(M, N, K, ta, tb, dtype, mixed)
            at, bt = (a.T if ta else a), (b.T if tb else b)  # NumPy gets the same transposed views
            ref, tol = at.astype(np.float64) @ bt.astype(np.float64), bound(at, bt, dtype)
            # Each allocates its result per call: _core._gemm takes no output array, so np.dot gets
            # no out= either, nor torch.mm in PyTorch's worker (peers_torch.Gemm).
            calls = {"numpy": lambda: np.dot(at, bt), "bpfast": lambda: _core._gemm(a, b, None, ta, tb)}
            results = {vname: f() for vname, f in calls.items()}
            samplers = {vname: local_sampler(f) for vname, f in calls.items()}
            if torch and not mixed:
                arrays = {"a": a, "b": b, "trans_a": np.array(ta), "trans_b": np.array(tb)}
                remote = torch.variant(f"gemm-{M}x{N}x{K}-{dt}", arrays, kind="gemm")
                results["torch"] = remote.check()["c"]
                # (its run() sleeps after the sample, while the worker's pool goes quiet)
                samplers["torch"] = lambda reps, remote=remote: remote.run(reps, WARM_S) / reps
            problems = {vname: disagreement(out, ref, tol) for vname, out in results.items()}
            rejected = [vname for vname, problem in problems.items() if problem]
            failed += [f"{name} {dt} {vname}: {problems[vname]}" for vname in rejected]
            samplers = {vname: s for vname, s in samplers.items() if vname not in rejected}  # not timed
            if not samplers:
                print(f"{name:26s} {dt:8s} every variant failed validation", flush=True)
                continue
            row_peak = max(_core._peak_gflops("float32" if dt == "float32" else "float64", PEAK_PROBE_S)
                           for _ in range(3))
            lead = "bpfast" if "bpfast" in samplers else next(iter(samplers))
            reps = int(min(max(SAMPLE_S / max(samplers[lead](1), 1e-7), 1), 2000))
            times = {vname: [] for vname in samplers}
            for r in range(args.rounds):
                for vname in rotated(list(samplers), r):
                    times[vname].append(samplers[vname](reps))
                    if vname == "numpy":
                        wait_for_quiet_threads()  # OpenBLAS spins ~0.1 s after a call: not on our time
            flop = 2.0 * M * N * K

            def gflops(vname):
                if vname not in times:
                    return f"{'failed' if vname in rejected else '-':>15s}"
                return f"{flop / min(times[vname]) / 1e9:6.1f} ({flop / statistics.median(times[vname]) / 1e9:6.1f})"

            pct = f"{100 * flop / min(times['bpfast']) / 1e9 / row_peak:5.0f}%" if "bpfast" in times else "-"
            print(f"{name:26s} {dt:8s} {gflops('bpfast')} {gflops('numpy')} {gflops('torch')} "
                  f"{fmt_ratio(ratio(times, 'numpy')):>12s} {fmt_ratio(ratio(times, 'torch')):>12s} {pct:>6s}",
                  flush=True)
    if torch:
        torch.close()
    for what in failed:
        print(f"FAILED, not timed: {what} (against the float64 product)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
