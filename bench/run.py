#!/usr/bin/env python
"""bpfast's benchmark: the book's TwoLayerNet SGD step and its kernels, against NumPy and peers.

    python bench/run.py [--quick] [--only PATTERN] [--rounds N]
    bpfast bench [--quick] [--only PATTERN] [--rounds N]   (the copy installed with the package)

What it does (see bench/README.md for the cases):

- Re-runs itself in a child process with ``OPENBLAS_CORETYPE`` and ``OPENBLAS_L2_SIZE``
  removed (they force OpenBLAS onto AVX2 kernels here; a user's machine does not set them)
  and with ``MALLOC_TRIM_THRESHOLD_``/``MALLOC_TOP_PAD_``/``MALLOC_MMAP_THRESHOLD_`` raised so
  that freed heap stays mapped and no variant pays page faults for fresh memory (setting the
  first two fixes glibc's mmap threshold at 128 KiB, so arrays above it would still come
  from fresh mmaps without the third). It prints that it did so.
- Validates every variant against the reference (the book's layers in plain NumPy,
  ``bench/book_numpy.py``) on the same inputs and initial weights before timing it; a
  variant that disagrees is reported as failed and not timed.
- Times the variants of a case in interleaved rounds in one process (round r runs every
  variant once, in a rotated order), PyTorch and JAX each in a worker process of its own
  (``peers_*.py``), still one sample per round. Reports min and median per call, speedup
  ratios against baselines from the same run, GFLOP/s and GB/s against the machine's limits.
- Writes ``bench/results/latest.md`` and ``latest.json`` (from the installed copy,
  ``./bpfast-bench-results/``).

``main(argv)`` is the entry point for other callers (it returns the exit status).
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import gc
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from _quiet import wait_for_quiet_threads, warm_up

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
IN_CHECKOUT = (REPO / "pyproject.toml").is_file()  # else: the copy installed as bpfast/bench
# Results: bench/results in a checkout; from an installed copy (``bpfast bench``), the current folder.
RESULTS = HERE / "results" if IN_CHECKOUT else Path.cwd() / "bpfast-bench-results"
MNIST_DIR = REPO.parent / "shared" / "data" / "mnist"  # a checkout's ../shared/data (not beside an install)

CHILD_FLAG = "BPFAST_BENCH_CHILD"
NOTES_VAR = "BPFAST_BENCH_ENV_NOTES"
REMOVED_VARS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
MALLOC_VARS = {"MALLOC_TRIM_THRESHOLD_": "1073741824", "MALLOC_TOP_PAD_": "67108864",
               "MALLOC_MMAP_THRESHOLD_": "1073741824"}

# "% peak" divides by the FMA rate of bpfast's kernel path measured at the start of the run
# (measure_peak); without the compiled core, by these nominal figures (a 2-core AVX-512 machine).
NOMINAL_PEAK_GFLOPS = {"float32": 467.0, "float64": 233.0}
PEAK_PROBE_S = 0.2  # per probe; the best of three per dtype
# Not measured: the nominal figures for main memory, normal and non-temporal stores. The GB/s of
# a case is not a share of them: data that fits the caches (softmax (1024, 1000): 8 MB) runs faster.
BANDWIDTH_GBS = (40.0, 55.0)
LR = 0.1
PARAM_KEYS = ("W1", "b1", "W2", "b2")
BACKENDS = ("numpy", "numba", "cpp")
PEERS = {"torch": "PyTorch eager", "jax": "jax.jit"}
# What a peer's step does not hand out: no loss (theirs is log-softmax, without the book's
# log(y + 1e-7)); the jitted JAX step no gradients either (checked by its updates).
PEER_STEP_OMITS = {"torch": ("loss",), "jax": ("loss", "dW1", "db1", "dW2", "db2")}
# The hand-tuned variants by family; their classes are "Numpy..."/"Numba..." in bench/tuned_step.py
# (the step) and bench/tuned_kernels.py (softmax, ReLU).
TUNED = {"numpy": "hand-tuned NumPy", "numba": "hand-tuned Numba"}
BEST_COMPETITOR = "best competitor"
# max |a - b| / max |reference|, per array; in the ELEMENTWISE groups, per element against
# |reference| (with that share of the array's largest value as a floor, for values near 0):
# softmax's small probabilities count as much as its large ones. The GEMM outputs cancel, so
# they are judged against the array's largest value (a normwise bound, as BLAS's own).
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
ELEMENTWISE = {"softmax": 1e-9, "relu": 1e-9}
PEER_QUIET_S = 0.02  # after a peer's sample, let its thread pool go to sleep
BLAS_FAMILIES = ("numpy", "numba")  # in-process variants on OpenBLAS (NumPy's, SciPy's for Numba)
LOOP_CHECK_SEED = 5  # np.random's seed for the batch a loop variant is validated on
WARMUP_S = 0.01  # untimed calls before each sample (at least one): see _quiet.warm_up


# ----------------------------------------------------------------------------- environment


def rerun_in_bench_environment(flag: str) -> None:
    """For the scripts beside this one that time in their own process (gemm_bench.py,
    gemm_concurrency.py): re-execute the running script with REMOVED_VARS unset and MALLOC_VARS set,
    unless it has them already or ``flag`` is set (the re-executed process and its children)."""
    if os.environ.get(flag) == "1":
        return
    if not any(var in os.environ for var in REMOVED_VARS) and all(
        os.environ.get(k) == v for k, v in MALLOC_VARS.items()
    ):
        return
    env = {k: v for k, v in os.environ.items() if k not in REMOVED_VARS}
    env.update(MALLOC_VARS)
    env[flag] = "1"
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def environment_note(environ=os.environ) -> str:
    """How a benchmark runs, for its output: OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (unset, or their
    values) and every MALLOC_* variable that is set."""
    blas = [f"{var}={environ[var]}" if var in environ else f"{var} unset" for var in REMOVED_VARS]
    malloc = [f"{var}={value}" for var, value in sorted(environ.items()) if var.startswith("MALLOC_")]
    return ", ".join(blas + (malloc or ["no MALLOC_* variable set"]))


def clean_environment(environ) -> tuple[dict, list[str]]:
    """The child's environment and the notes saying what changed."""
    env = dict(environ)
    notes = []
    for var in REMOVED_VARS:
        if var in env:
            notes.append(f"removed {var}={env.pop(var)} (forces OpenBLAS's slower kernels; users do not set it)")
        else:
            notes.append(f"{var} was not set")
    for var, value in MALLOC_VARS.items():
        notes.append(f"set {var}={value} (freed heap stays mapped: no page faults for fresh memory, every variant alike)")
        env[var] = value
    env[CHILD_FLAG] = "1"
    env[NOTES_VAR] = json.dumps(notes)
    return env, notes


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if os.environ.get(CHILD_FLAG) != "1":
        env, notes = clean_environment(os.environ)
        print("bench: re-running in a child process with a cleaned environment:")
        for note in notes:
            print(f"  - {note}")
        sys.stdout.flush()
        return subprocess.call([sys.executable, str(Path(__file__).resolve()), *argv], env=env)
    return Harness(args, argv).run()


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="bench/run.py" if IN_CHECKOUT else "bpfast bench",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, small time budget per case (< ~2 min)")
    parser.add_argument("--only", metavar="PATTERN", help="run the cases whose id contains PATTERN or matches it as a glob; several: comma-separated")
    parser.add_argument("--rounds", type=positive_int, help="interleaved rounds per case (default 25, --quick 5)")
    parser.add_argument("--no-peers", action="store_true", help="skip PyTorch and JAX")
    parser.add_argument(
        "--random-data",
        action="store_true",
        help="step and loop cases on seeded uniform [0,1) images instead of MNIST's (no zero pixels: the "
        "GEMM's zero skipping finds nothing to skip)",
    )
    parser.add_argument("--list", action="store_true", help="list the case ids and exit")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where latest.md/latest.json go")
    return parser.parse_args(argv)


def import_bpfast():
    """bpfast as installed, else from this checkout's python/ directory (with a note)."""
    try:
        import bpfast
    except ImportError:
        sys.path.insert(0, str(REPO / "python"))
        import bpfast

        return bpfast, f"bpfast is not installed: imported from {REPO / 'python'}"
    return bpfast, None


# ----------------------------------------------------------------------------- variants


@dataclass
class Variant:
    """One competitor in a case: ``run(inner, warm_s)`` does ``inner`` calls (after ``warm_s``
    seconds of untimed calls, when not 0) and returns their seconds; ``check()`` returns the outputs compared with
    the reference (dict of arrays). ``family`` names the thread pool it runs on: a round runs
    the variants of one family back to back."""

    name: str
    run: Callable[[int, float], float] | None = None
    check: Callable[[], dict] | None = None
    family: str = ""
    status: str = "ok"  # ok | skipped | failed
    note: str = ""
    remote: bool = False
    inner: int = 1
    omits: tuple = ()  # outputs of the reference this variant does not hand out (the rest it must)
    samples: list = field(default_factory=list)
    error: float | None = None

    @classmethod
    def skipped(cls, name, note):
        return cls(name, status="skipped", note=note)


def local(name, fn, check, reset=None, *, backend=None, bpfast=None, family=None):
    """A variant timed in this process, under bpfast backend ``backend`` when given.

    ``reset()``, when given, puts the variant back in the state it was validated in before each
    sample (untimed): a training step would otherwise time weights trained for thousands of steps
    on one batch. Its family is ``family``, else the backend (the NumPy variants share NumPy's
    OpenBLAS with bpfast numpy)."""

    def run(inner, warm_s=0.0):
        ctx = bpfast.use_backend(backend) if backend else _nullcontext()
        with ctx:
            if reset:
                reset()
            if warm_s:
                warm_up(fn, warm_s)
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            return time.perf_counter() - start

    def checked():
        with bpfast.use_backend(backend) if backend else _nullcontext():
            return check()

    return Variant(name, run, checked, family=family or backend or "numpy")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


@dataclass
class Case:
    id: str
    group: str  # step | loop | affine | softmax | relu
    title: str
    dtype: str  # the dtype the work is done in (for the peak)
    build: Callable[[], list]  # variants, the reference first
    baselines: tuple = ()
    # The competitors for BEST_COMPETITOR, a baseline that is the fastest of them in this run.
    competitors: tuple = ()
    flops: float | None = None
    nbytes: float | None = None
    detail: str = ""
    variants: list = field(default_factory=list)
    seconds: float = 0.0


# ----------------------------------------------------------------------------- peers


class Peer:
    """A PyTorch or JAX worker process (``peers_<name>.py``), kept for the whole run."""

    def __init__(self, name, env, tmpdir):
        self.name = name
        self.tmpdir = tmpdir
        self.stderr_path = Path(tmpdir) / f"{name}.stderr"
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / f"peers_{name}.py")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=open(self.stderr_path, "w"),
            text=True,
            env=env,
        )
        hello = self._read()
        self.skip = hello.get("skip") or hello.get("error")
        self.about = {k: v for k, v in hello.items() if k != "ready"}

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            tail = self.stderr_path.read_text()[-800:] if self.stderr_path.exists() else ""
            return {"error": f"worker exited ({tail.strip()})"}
        return json.loads(line)

    def ask(self, **request):
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.name} worker is gone")
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if "error" in answer:
            raise RuntimeError(answer["error"])
        return answer

    def variant(self, case_id, arrays, kind="step"):
        """A remote variant running this worker's model of ``kind`` (the step, softmax) on ``arrays``."""
        npz = Path(self.tmpdir) / f"{case_id}.npz"
        np.savez(npz, **arrays)
        self.ask(cmd="setup", kind=kind, npz=str(npz), lr=LR)

        def run(inner, warm_s=0.0):
            seconds = self.ask(cmd="time", inner=inner, warm_s=warm_s)["seconds"]
            time.sleep(PEER_QUIET_S)
            return seconds

        def check():
            out = Path(self.tmpdir) / f"{case_id}-{self.name}-out.npz"
            self.ask(cmd="validate", out=str(out))
            with np.load(out) as data:
                got = {key: data[key] for key in data.files}
            if kind != "step":
                return got
            result = updates(arrays, got)
            result.update({"d" + k: got["d" + k] for k in PARAM_KEYS if "d" + k in got})
            return result

        omits = PEER_STEP_OMITS[self.name] if kind == "step" else ()
        v = Variant(f"{PEERS[self.name]} {self.about.get('version', '')}".strip(), run, check, family=self.name,
                    remote=True, omits=omits)
        return v

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()


# ----------------------------------------------------------------------------- data


def mnist_train():
    """MNIST's training images (float32 in [0, 1], flattened) and int64 labels, found the way
    ``load_mnist`` finds them (a checkout's ../shared/data/mnist first when there is one, then
    $BPFAST_DATA and the user cache; never downloaded), or None."""
    from bpfast.datasets import DatasetNotFoundError, load_mnist

    try:
        (x, t), _ = load_mnist(data_dir=MNIST_DIR if MNIST_DIR.is_dir() else None, download=False)
    except DatasetNotFoundError:
        return None
    return x, t.astype(np.int64)


def initial_params(D, H, O, dtype, seed=1):
    """The book's initialisation (0.01 * randn weights, zero biases), seeded, in ``dtype``."""
    rng = np.random.default_rng(seed)
    return {
        "W1": (0.01 * rng.standard_normal((D, H))).astype(dtype),
        "b1": np.zeros(H, dtype),
        "W2": (0.01 * rng.standard_normal((H, O))).astype(dtype),
        "b2": np.zeros(O, dtype),
    }


def one_hot(labels, classes, dtype):
    t = np.zeros((labels.size, classes), dtype=dtype)
    t[np.arange(labels.size), labels] = 1
    return t


def measure_peak(bpfast):
    """({dtype: GFLOP/s}, how it was obtained): the FMA rate of bpfast's kernel path on its threads
    (independent FMAs through the GEMM microkernel's vectors, best of three probes), or the nominal
    figures when the compiled core is not loaded."""
    try:
        from bpfast import _core
    except ImportError:
        return dict(NOMINAL_PEAK_GFLOPS), "nominal: no compiled core to measure with"
    peak = {dt: max(_core._peak_gflops(dt, PEAK_PROBE_S) for _ in range(3)) for dt in ("float32", "float64")}
    info = bpfast.info()
    how = (
        f"measured: independent FMAs on the {info.get('kernel_path')} path, {info.get('num_threads')} threads, "
        f"best of three {PEAK_PROBE_S} s probes"
    )
    return peak, how


# ----------------------------------------------------------------------------- the harness


class Harness:
    def __init__(self, args, argv):
        self.args = args
        self.argv = argv
        self.quick = args.quick
        self.rounds = args.rounds or (5 if args.quick else 25)
        self.budget_s = 6.0 if args.quick else 40.0  # per case, after the minimum rounds
        self.min_rounds = min(3, self.rounds)
        self.target_sample_s = 0.004 if args.quick else 0.01
        self.bpfast, note = import_bpfast()
        self.notes = json.loads(os.environ.get(NOTES_VAR, "[]"))
        if note:
            self.notes.append(note)
        self.available = self.bpfast.backends()
        self.tmp = tempfile.TemporaryDirectory(prefix="bpfast-bench-")
        self.peers = None
        self.mnist = None if args.random_data else mnist_train()
        self.data_note = (
            "x: the first MNIST training images (bpfast.datasets.load_mnist: "
            + (f"{MNIST_DIR}, " if MNIST_DIR.is_dir() else "")
            + "$BPFAST_DATA, the user cache; float32 in [0,1]; 81% of the pixels are 0, which the GEMM's zero skipping leaves out "
            "of the first layer's products, with the same results)"
            if self.mnist is not None
            else "x: seeded uniform [0,1) float32 ("
            + ("--random-data" if args.random_data else "MNIST not found")
            + "; no zeros: zero skipping finds nothing to skip)"
        )

    # ------------------------------------------------------------------ running

    def run(self) -> int:
        cases = self.cases()
        if self.args.list:
            for case in cases:
                print(f"{case.id:28s} {case.title}")
            return 0
        if self.args.only:
            patterns = [p for p in self.args.only.split(",") if p]
            cases = [c for c in cases if any(matches(c.id, p) for p in patterns)]
            if not cases:
                print(f"bench: no case matches {self.args.only!r} (see --list)", file=sys.stderr)
                return 2
        self.log(f"bench: {len(cases)} cases, up to {self.rounds} rounds each; bpfast backends here: {self.available}")
        started = time.perf_counter()
        self.load_before = os.getloadavg()
        if self.load_before[0] > 1.0:
            self.log(
                f"bench: WARNING: load average {self.load_before[0]:.1f} on {os.cpu_count()} cores: other work is running; "
                "multi-threaded variants suffer most (a thread waits for a descheduled partner), so trust ratios of mins over medians"
            )
        self.peak, self.peak_source = measure_peak(self.bpfast)
        self.log(
            f"bench: peak {self.peak['float32']:.0f} GFLOP/s float32, {self.peak['float64']:.0f} float64 ({self.peak_source})"
        )
        try:
            for case in cases:
                self.run_case(case)
        finally:
            if self.peers:
                for peer in self.peers.values():
                    peer.close()
        total = time.perf_counter() - started
        report = self.report(cases, total)
        self.args.output.mkdir(parents=True, exist_ok=True)
        (self.args.output / "latest.md").write_text(report["markdown"])
        (self.args.output / "latest.json").write_text(json.dumps(report["json"], indent=1) + "\n")
        print(report["markdown"])
        self.log(f"bench: wrote {self.args.output / 'latest.md'} and latest.json ({total:.0f} s)")
        failed = [f"{c.id}: {v.name}" for c in cases for v in c.variants if v.status == "failed"]
        if failed:
            self.log("bench: FAILED validation: " + "; ".join(failed))
            return 1
        return 0

    def log(self, message):
        print(message, file=sys.stderr, flush=True)

    def run_case(self, case):
        gc.collect()
        started = time.perf_counter()
        self.log(f"[{case.id}] {case.title}: building and validating")
        try:
            variants = case.build()
        except Exception as exc:  # a case that cannot be set up is reported, not fatal
            case.variants = [Variant.skipped("(case)", f"setup failed: {type(exc).__name__}: {exc}")]
            return
        case.variants = variants
        reference = variants[0]
        try:
            expected = reference.check()
        except Exception as exc:
            reference.status, reference.note = "failed", f"reference raised {type(exc).__name__}: {exc}"
            return
        for v in variants[1:]:
            if v.status != "ok":
                continue
            try:
                got = v.check()
                v.error, problem = compare(got, expected, case.dtype, v.omits, ELEMENTWISE.get(case.group))
            except Exception as exc:
                v.error, problem = None, f"raised {type(exc).__name__}: {exc}"
            if problem:
                v.status, v.note = "failed", f"validation: {problem}"
        timed = [v for v in variants if v.status == "ok"]
        for v in timed:  # warm up, then pick the calls per sample (long calls: one is enough)
            v.run(1)  # not timed: a first call may compile (Numba) or fault in pages
            once = v.run(1)
            if once < 0.1:  # a stray slow call would make a sample of one short call
                once = min(once, *(v.run(1) for _ in range(2)))
            v.inner = max(1, min(10000, round(self.target_sample_s / max(once, 1e-9))))
        self.log(f"[{case.id}] timing {', '.join(f'{v.name} (x{v.inner})' for v in timed)}")
        families = {}
        for v in timed:
            families.setdefault(v.family, []).append(v)
        groups = list(families.values())
        gc.disable()
        try:
            timing_start = time.perf_counter()
            for r in range(self.rounds):
                for group in rotated(groups, r):
                    for v in rotated(group, r):
                        v.samples.append(v.run(v.inner, WARMUP_S) / v.inner)
                    if group[0].family in BLAS_FAMILIES:
                        wait_for_quiet_threads()  # OpenBLAS spins ~0.1 s and would steal a core
                if r + 1 >= self.min_rounds and time.perf_counter() - timing_start > self.budget_s:
                    break
        finally:
            gc.enable()
        case.seconds = time.perf_counter() - started

    # ------------------------------------------------------------------ cases

    def cases(self):
        cases = []
        step_configs = [
            ("A", 784, 50, 10, 100, np.float64, "one-hot float64", "the book's: float32 images, float64 net"),
            ("B", 784, 50, 10, 100, np.float32, "one-hot float32", "A with float32 weights"),
            ("C", 784, 1024, 10, 1024, np.float32, "labels", "wide hidden layer"),
            ("D", 784, 2048, 1000, 2048, np.float32, "labels", "1000 classes"),
        ]
        for name, D, H, O, N, wdtype, targets, what in step_configs:
            dtype = np.result_type(np.float32, wdtype).name
            cases.append(
                Case(
                    id=f"step-{name}",
                    group="step",
                    title=f"SGD step {name}: {D}-{H}-{O}, batch {N}, {np.dtype(wdtype).name} weights ({what})",
                    dtype=dtype,
                    flops=6.0 * N * (D * H + H * O),
                    baselines=("book NumPy layers", "bpfast numpy", BEST_COMPETITOR),
                    competitors=(*TUNED.values(), *PEERS.values()),
                    detail=f"x float32 (N,{D}), t {targets}",
                    build=lambda cfg=(name, D, H, O, N, wdtype, targets): self.build_step(*cfg),
                )
            )
        cases.append(
            Case(
                id="loop-A",
                group="loop",
                title="train_neuralnet.py iteration, config A: draw a batch of 100, SGD step, loss",
                dtype="float64",
                flops=6.0 * 100 * (784 * 50 + 50 * 10) + 2.0 * 100 * (784 * 50 + 50 * 10),
                baselines=("book class + book NumPy layers",),
                detail="batches drawn with np.random.choice from 10000 images, one-hot float64 labels",
                build=self.build_loop,
            )
        )
        affine_shapes = [
            (100, 784, 50, np.float32),
            (100, 50, 10, np.float32),
            (100, 784, 50, np.float64),
            (100, 50, 10, np.float64),
            (1024, 1024, 1024, np.float32),
            (4096, 784, 1024, np.float32),
        ]
        for N, D, M, dt in affine_shapes:
            dtn = np.dtype(dt).name
            cases.append(
                Case(
                    id=f"affine-{N}x{D}x{M}-{dtn[5:]}",
                    group="affine",
                    title=f"Affine forward+backward, x ({N},{D}) · W ({D},{M}), {dtn}",
                    dtype=dtn,
                    flops=6.0 * N * D * M,
                    baselines=("NumPy x @ W + b",),
                    build=lambda cfg=(N, D, M, dt): self.build_affine(*cfg),
                )
            )
        for N, C in [(100, 10), (1024, 1000), (4096, 4096)]:
            cases.append(
                Case(
                    id=f"softmax-{N}x{C}",
                    group="softmax",
                    title=f"softmax of ({N},{C}) float32, rows",
                    dtype="float32",
                    nbytes=2.0 * 4 * N * C,
                    baselines=("NumPy (book formula)",),
                    build=lambda cfg=(N, C): self.build_softmax(*cfg),
                )
            )
        for n, label in [(1_000_000, "1e6"), (16_000_000, "1.6e7")]:
            cases.append(
                Case(
                    id=f"relu-{label}",
                    group="relu",
                    title=f"ReLU forward+backward, {n:,} float32",
                    dtype="float32",
                    nbytes=18.0 * n,  # fwd: read x, write out + mask; bwd: read mask, read+write dout
                    baselines=("NumPy (book Relu)",),
                    build=lambda n=n: self.build_relu(n),
                )
            )
        return cases

    def backend_variants(self, label, make):
        """One variant per bpfast backend: ``make(backend)`` returns (fn, check) or (fn, check, reset)."""
        out = []
        for backend in BACKENDS:
            name = f"{label} {backend}".strip()
            if backend not in self.available:
                out.append(Variant.skipped(name, f"backend not available here: {self.unavailable_reason(backend)}"))
                continue
            out.append(local(name, *make(backend), backend=backend, bpfast=self.bpfast))
        return out

    def unavailable_reason(self, backend):
        try:
            with self.bpfast.use_backend(backend):
                pass
        except (ImportError, ValueError) as exc:
            return str(exc)
        return f"bpfast.backends() = {self.available}"

    def step_data(self, D, O, N, wdtype, targets, seed=0):
        rng = np.random.default_rng(seed)
        if self.mnist is not None and D == 784 and N <= len(self.mnist[0]):
            x, labels = self.mnist[0][:N].copy(), self.mnist[1][:N].copy()
            if O != 10:
                labels = rng.integers(0, O, N)
        else:
            x = rng.random((N, D), dtype=np.float32)
            labels = rng.integers(0, O, N)
        if targets.startswith("one-hot"):
            t = one_hot(labels, O, np.float64 if "float64" in targets else np.float32)
        else:
            t = labels.astype(np.int64)
        return x, t

    def build_step(self, name, D, H, O, N, wdtype, targets):
        import book_numpy

        bpfast = self.bpfast
        x, t = self.step_data(D, O, N, wdtype, targets)
        init = initial_params(D, H, O, wdtype)

        def with_init(net):
            restore(net.params, init)
            return net

        def step_of(net, step):
            def fn():
                step(net)

            def reset():
                with_init(net)

            def check():
                with_init(net)
                grads = step(net)
                out = updates(init, net.params)
                out["loss"] = np.array(net.lastLayer.loss)
                if grads is not None:
                    out.update({"d" + k: np.array(grads[k]) for k in PARAM_KEYS})
                with_init(net)
                return out

            return fn, check, reset

        def sgd(net):
            return book_numpy.sgd_step(net, x, t, LR)

        book_net = with_init(book_numpy.TwoLayerNet(D, H, O, dtype=wdtype))
        variants = [local("book NumPy layers", *step_of(book_net, sgd))]
        variants += self.tuned_variants(lambda lib: self.tuned_step(lib, init, x, t))

        from bpfast.nets import TwoLayerNet

        def bpfast_net(backend):
            with bpfast.use_backend(backend):
                net = with_init(TwoLayerNet(D, H, O, dtype=wdtype))
            return step_of(net, sgd)

        variants += self.backend_variants("bpfast", bpfast_net)
        if hasattr(TwoLayerNet, "train_step"):

            def train_step(net):  # checked by its updates and loss; it hands out no gradients
                net.train_step(x, t, LR)

            steps = self.backend_variants(
                "bpfast train_step", lambda b: step_of(with_init(TwoLayerNet(D, H, O, dtype=wdtype)), train_step)
            )
            for v in steps:
                v.omits = tuple("d" + k for k in PARAM_KEYS)
            variants += steps
        else:
            variants.append(Variant.skipped("bpfast train_step", "TwoLayerNet has no train_step yet"))
        arrays = {"x": x, "t": t, **init}
        for peer_name in PEERS:
            variants.append(self.peer_variant(peer_name, f"step-{name}", arrays))
        return variants

    def tuned_variants(self, make):
        """The hand-tuned variants (TUNED); ``make(lib)`` returns (fn, check) or (fn, check, reset)
        for lib "Numpy" or "Numba", the prefix of their classes."""
        out = []
        for family, name in TUNED.items():
            if family == "numba" and "numba" not in self.available:
                out.append(Variant.skipped(name, f"Numba not available here: {self.unavailable_reason('numba')}"))
                continue
            out.append(local(name, *make(family.capitalize()), family=family))
        return out

    def tuned_step(self, lib, init, x, t):
        """(fn, check, reset) of a hand-tuned step (bench/tuned_step.py) on its own copy of the initial parameters."""
        import tuned_step

        params = {k: v.copy() for k, v in init.items()}
        step = getattr(tuned_step, lib + "Step")(params, len(x))

        def fn():
            step(x, t, LR)

        def reset():
            restore(params, init)

        def check():
            reset()
            out = {"loss": np.array(step(x, t, LR)), **{"d" + k: step.grads[k].copy() for k in PARAM_KEYS}}
            out.update(updates(init, params))
            reset()
            return out

        return fn, check, reset

    def peer_variant(self, name, case_id, arrays, kind="step"):
        if self.args.no_peers:
            return Variant.skipped(PEERS[name], "--no-peers")
        if self.peers is None:
            self.peers = {}
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), env.get("PYTHONPATH", "")) if p)
            for peer in PEERS:
                self.log(f"bench: starting the {PEERS[peer]} worker")
                self.peers[peer] = Peer(peer, env, self.tmp.name)
        peer = self.peers[name]
        if peer.skip:
            return Variant.skipped(PEERS[name], str(peer.skip))
        try:
            return peer.variant(case_id, arrays, kind)
        except RuntimeError as exc:
            return Variant.skipped(PEERS[name], f"worker failed: {exc}")

    def build_loop(self):
        import book_numpy
        import bpfast.layers
        from bpfast.nets import TwoLayerNet

        bpfast = self.bpfast
        pool = (self.mnist[0][:10000], self.mnist[1][:10000]) if self.mnist is not None else None
        if pool is None:
            rng = np.random.default_rng(0)
            pool = (rng.random((10000, 784), dtype=np.float32), rng.integers(0, 10, 10000))
        x_train, t_train = pool[0], one_hot(pool[1], 10, np.float64)
        init = initial_params(784, 50, 10, np.float64)
        x_batch, t_batch = x_train[:100], t_train[:100]

        def prepared(net):
            def reset():
                restore(net.params, init)

            reset()

            def fn():
                book_numpy.train_iteration(net, x_train, t_train, 100, LR)

            def check():  # the gradients of a fixed batch, then one timed iteration from a fixed seed
                reset()
                grads = book_numpy.sgd_step(net, x_batch, t_batch, LR)
                out = {"d" + k: np.array(grads[k]) for k in PARAM_KEYS}
                reset()
                np.random.seed(LOOP_CHECK_SEED)  # the same batch for every variant
                out["loss"] = np.array(book_numpy.train_iteration(net, x_train, t_train, 100, LR))
                out.update(updates(init, net.params))
                reset()
                return out

            return fn, check

        variants = [local("book class + book NumPy layers", *prepared(book_numpy.TwoLayerNet(784, 50, 10)))]
        variants += self.backend_variants(
            "book class + bpfast.layers", lambda b: prepared(book_numpy.TwoLayerNet(784, 50, 10, layers=bpfast.layers))
        )
        variants += self.backend_variants("bpfast.nets.TwoLayerNet", lambda b: prepared(TwoLayerNet(784, 50, 10)))
        return variants

    def build_affine(self, N, D, M, dt):
        from bpfast.layers import Affine

        rng = np.random.default_rng(2)
        x = rng.standard_normal((N, D)).astype(dt)
        W = (0.05 * rng.standard_normal((D, M))).astype(dt)
        b = rng.standard_normal(M).astype(dt)
        dout = rng.standard_normal((N, M)).astype(dt)

        def numpy_fn():
            out = x @ W + b
            return out, dout @ W.T, x.T @ dout, dout.sum(axis=0)

        def numpy_check():
            return dict(zip(("out", "dx", "dW", "db"), numpy_fn()))

        def bpfast_affine(backend):
            layer = Affine(W, b)

            def fn():
                layer.forward(x)
                layer.backward(dout)

            def check():
                out = layer.forward(x)
                dx = layer.backward(dout)
                return {"out": out, "dx": dx, "dW": layer.dW, "db": layer.db}

            return fn, check

        return [local("NumPy x @ W + b", numpy_fn, numpy_check)] + self.backend_variants("bpfast Affine", bpfast_affine)

    def build_softmax(self, N, C):
        import book_numpy
        from bpfast.functions import softmax

        x = (3.0 * np.random.default_rng(3).standard_normal((N, C))).astype(np.float32)
        ref = local("NumPy (book formula)", lambda: book_numpy.softmax(x), lambda: {"y": book_numpy.softmax(x)})
        import tuned_kernels

        def tuned(lib):
            tuned_softmax = getattr(tuned_kernels, lib + "Softmax")()
            return (lambda: tuned_softmax(x)), (lambda: {"y": tuned_softmax(x).copy()})

        variants = [ref] + self.tuned_variants(tuned) + self.backend_variants(
            "bpfast softmax", lambda b: (lambda: softmax(x), lambda: {"y": softmax(x)})
        )
        return variants + [self.peer_variant(peer, f"softmax-{N}x{C}", {"x": x}, "softmax") for peer in PEERS]

    def build_relu(self, n):
        import book_numpy
        from bpfast.layers import Relu

        rng = np.random.default_rng(4)
        x = rng.standard_normal(n, dtype=np.float32)
        dout0 = rng.standard_normal(n, dtype=np.float32)

        def relu_variant(layer):
            dout = dout0.copy()  # zeroed in place at the masked places, every call alike

            def fn():
                layer.forward(x)
                layer.backward(dout)

            def check():
                out = layer.forward(x)
                dx = layer.backward(dout0.copy())
                return {"out": out, "mask": layer.mask, "dx": dx}

            return fn, check

        import tuned_kernels

        ref = local("NumPy (book Relu)", *relu_variant(book_numpy.Relu()))
        tuned = self.tuned_variants(lambda lib: relu_variant(getattr(tuned_kernels, lib + "Relu")()))
        return [ref, *tuned] + self.backend_variants("bpfast Relu", lambda b: relu_variant(Relu()))

    # ------------------------------------------------------------------ report

    def machine(self):
        bpfast = self.bpfast
        cpu = platform.processor()
        try:  # the model name, and family and model (a VM's name may be just "AMD EPYC")
            fields = {}
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                key, _, value = line.partition(":")
                if not key.strip():
                    break  # the first processor's block is enough
                fields.setdefault(key.strip(), value.strip())
            if "model name" in fields:
                cpu = f"{fields['model name']} (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
        except OSError:
            pass
        versions = {"python": platform.python_version(), "numpy": np.__version__, "bpfast": bpfast.__version__}
        for mod in ("scipy", "numba"):
            try:
                versions[mod] = __import__(mod).__version__
            except ImportError:
                versions[mod] = None
        for name, peer in (self.peers or {}).items():
            versions[name] = peer.about.get("version") if not peer.skip else None
        try:
            info = bpfast.info()
        except Exception as exc:
            info = {"error": f"{type(exc).__name__}: {exc}"}
        bpfast_dir = Path(bpfast.__file__).resolve().parent
        commit = "outside this checkout"
        if REPO in bpfast_dir.parents:
            try:
                commit = subprocess.run(
                    ["git", "-C", str(REPO), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10
                ).stdout.strip()
            except (OSError, subprocess.SubprocessError):
                commit = None
        return {
            "git": commit,
            "cpu": cpu,
            "cores": os.cpu_count(),
            "platform": platform.platform(),
            "openblas_core": openblas_corename(),
            "versions": versions,
            "bpfast_path": str(bpfast_dir),
            "bpfast_info": info,
            "peak_gflops": self.peak,
            "peak_source": self.peak_source,
            "bandwidth_gbs": BANDWIDTH_GBS,
            "peers": {name: peer.about for name, peer in (self.peers or {}).items() if not peer.skip},
        }

    def report(self, cases, total_s):
        machine = self.machine()
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        json_cases = []
        for case in cases:
            medians = {v.name: statistics.median(v.samples) for v in case.variants if v.samples}
            mins = {v.name: min(v.samples) for v in case.variants if v.samples}
            # competitors by name; a peer's name goes on with its version ("PyTorch eager 2.13.0")
            timed = [n for n in medians if any(n == c or n.startswith(c + " ") for c in case.competitors)]
            if timed:  # the fastest competitor, by median and by min (perhaps two different ones)
                medians[BEST_COMPETITOR] = min(medians[c] for c in timed)
                mins[BEST_COMPETITOR] = min(mins[c] for c in timed)
            rows = []
            for v in case.variants:
                row = {"variant": v.name, "status": v.status, "note": v.note, "validation_error": v.error}
                if v.samples:
                    med = medians[v.name]
                    row.update(
                        min_s=min(v.samples),
                        median_s=med,
                        n=len(v.samples),
                        calls_per_sample=v.inner,
                        remote=v.remote,
                        speedup={b: medians[b] / med for b in case.baselines if b in medians},
                        speedup_of_mins={b: mins[b] / mins[v.name] for b in case.baselines if b in mins},
                    )
                    if case.flops:
                        row["gflops"] = case.flops / med / 1e9
                        row["pct_peak"] = 100 * row["gflops"] / self.peak[case.dtype]
                    if case.nbytes:
                        row["gbs"] = case.nbytes / med / 1e9
                rows.append(row)
            json_cases.append(
                {
                    "id": case.id,
                    "group": case.group,
                    "title": case.title,
                    "detail": case.detail,
                    "dtype": case.dtype,
                    "flops": case.flops,
                    "bytes": case.nbytes,
                    "baselines": list(case.baselines),
                    "best_competitor": {
                        "of": list(case.competitors),
                        "by_median": min(timed, key=medians.get) if timed else None,
                        "by_min": min(timed, key=mins.get) if timed else None,
                    },
                    "seconds": case.seconds,
                    "variants": rows,
                }
            )
        env_notes = self.notes + [
            self.data_note,
            f"interleaved rounds: up to {self.rounds} per case (at least {self.min_rounds}, then a {self.budget_s:.0f} s budget); "
            f"each sample times back-to-back calls (~{self.target_sample_s * 1e3:.0f} ms) and divides; GC off while timing",
            f"every sample follows {WARMUP_S * 1e3:.0f} ms of untimed calls, at least one "
            "(after an idle spell, such as the wait below, the first milliseconds run slow for every variant)",
            "PyTorch and JAX run in worker processes of their own, one sample per round like the rest",
            "after the NumPy and Numba variants' samples the harness waits until OpenBLAS's threads stop spinning "
            "(~0.1 s of CPU after every call), so they do not take a core from the variant timed next",
            "load average (1, 5, 15 min) before: {:.2f} {:.2f} {:.2f}, after: {:.2f} {:.2f} {:.2f} "
            "(other work on this 2-core machine slows every variant alike, but widens min-median gaps)".format(
                *self.load_before, *os.getloadavg()
            ),
        ]
        doc = {
            "date": now,
            "command": "python bench/run.py " + " ".join(shlex.quote(a) for a in self.argv),
            "total_seconds": total_s,
            "machine": machine,
            "notes": env_notes,
            "cases": json_cases,
        }
        return {"json": doc, "markdown": render_markdown(doc)}


def restore(params, init):
    """Put the initial parameters back into ``params`` (in place: a net keeps its arrays)."""
    for key in PARAM_KEYS:
        params[key][...] = init[key]


def updates(before, after):
    """What a step did to each parameter, ``before - after`` in float64 (``stepW1``, ...)."""
    return {"step" + k: before[k].astype(np.float64) - after[k] for k in PARAM_KEYS}


def rotated(items, r):
    """``items`` starting at position r (mod its length): round r's order."""
    k = r % len(items)
    return items[k:] + items[:k]


def matches(case_id, pattern):
    """Whether ``case_id`` contains ``pattern``, or matches it as a glob when it has * ? [."""
    if any(ch in pattern for ch in "*?["):
        return fnmatch.fnmatch(case_id, pattern)
    return pattern in case_id


def compare(got, expected, dtype, omits=(), floor=None):
    """(largest error, problem or None) of the arrays in ``got`` against ``expected``, which it must
    hold all of but ``omits``: max |a - b| / max |expected| per array, or with ``floor``, per
    element |a - b| / max(|expected|, floor * max |expected|)."""
    tol = TOLERANCE[dtype]
    worst = 0.0
    missing = sorted(set(expected) - set(got) - set(omits))
    if missing:
        return None, f"no {', '.join(missing)} to compare"
    for key, value in got.items():
        if key not in expected:
            return None, f"output {key} has no reference"
        a, b = np.asarray(value), np.asarray(expected[key])
        if a.shape != b.shape:
            return None, f"{key} has shape {a.shape}, the reference {b.shape}"
        if b.dtype == bool or a.dtype == bool:
            if not np.array_equal(a, b):
                return None, f"{key} differs from the reference"
            continue
        if not b.size:
            continue
        scale = float(np.max(np.abs(b))) or 1.0
        diff = np.abs(a.astype(np.float64) - b)
        if floor is None:
            err, relative_to = float(np.max(diff)) / scale, "its largest value"
        else:
            err, relative_to = float(np.max(diff / np.maximum(np.abs(b), floor * scale))), "each value"
        if not math.isfinite(err) or err > tol:
            return err, f"{key} off by {err:.2e} (relative to {relative_to}; tolerance {tol:.0e})"
        worst = max(worst, err)
    return worst, None


def openblas_corename():
    """The kernel family NumPy's OpenBLAS chose (SkylakeX, Haswell, ...), when it can be asked."""
    import ctypes

    try:
        paths = {line.split()[-1] for line in open("/proc/self/maps") if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for symbol in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename", "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(lib, symbol, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                return fn().decode()
    return None


# ----------------------------------------------------------------------------- markdown


def fmt_time(seconds):
    if seconds >= 0.9995:  # what would print as 1e+03 ms
        return f"{seconds:.3g} s"
    if seconds >= 0.9995e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"


def core_summary(info):
    """The compiled core's state in a few words: kernel path, GEMM kernels, threads."""
    if info.get("compiled_core") != "loaded":
        return str(info.get("compiled_core"))
    parts = [f"{k} {info[k]}" for k in ("kernel_path", "gemm_kernels", "gemm_zero_skipping", "num_threads") if k in info]
    return "loaded, " + ", ".join(parts)


def render_markdown(doc):
    m = doc["machine"]
    v = m["versions"]
    lines = [
        "# bpfast benchmark",
        "",
        f"{doc['date']}, `{doc['command']}`, {doc['total_seconds']:.0f} s.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores; OpenBLAS kernels: {m['openblas_core']}. "
        f"Peak {m['peak_gflops']['float32']:.0f} GFLOP/s float32, {m['peak_gflops']['float64']:.0f} float64 "
        f"({m['peak_source']}); main memory about {m['bandwidth_gbs'][0]:.0f} GB/s with normal stores, "
        f"{m['bandwidth_gbs'][1]:.0f} with non-temporal ones (nominal, not measured; a case whose data fits "
        "the caches runs faster).",
        "",
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val) + "."
        + "".join(f" {name} threads: {about['threads']}." for name, about in m["peers"].items() if about.get("threads")),
        f"bpfast from `{m['bpfast_path']}` (checkout {m['git']}); backends available: "
        f"{m['bpfast_info'].get('backends_available')}; compiled core: {core_summary(m['bpfast_info'])}.",
        "",
        "How it was run:",
        "",
    ]
    lines += [f"- {note}" for note in doc["notes"]]
    lines += [
        "",
        "Times are per call; `×` columns are speedups from this run, baseline median / variant median "
        "(in brackets: baseline min / variant min); above 1 is faster. GFLOP/s counts the book's algorithm nominally (6·N·(D·H + H·O) per step, "
        "dx of the first layer included), from the median.",
    ]
    groups = [
        ("step", "One SGD step of TwoLayerNet (`net.gradient` + `params[k] -= 0.1 * grads[k]`)"),
        ("loop", "The book's train_neuralnet.py iteration"),
        ("affine", "Affine forward + backward"),
        ("softmax", "softmax"),
        ("relu", "ReLU forward + backward"),
    ]
    for group, heading in groups:
        cases = [c for c in doc["cases"] if c["group"] == group]
        if not cases:
            continue
        lines += ["", f"## {heading}", ""]
        for case in cases:
            lines += [f"**{case['id']}**: {case['title']}" + (f"; {case['detail']}" if case["detail"] else ""), ""]
            base_cols = [f"× {b}" for b in case["baselines"]]
            rate = "GFLOP/s (% peak)" if case["flops"] else "GB/s"
            header = ["variant", "min", "median", "n", *base_cols, rate]
            lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            notes = []
            for row in case["variants"]:
                if row["status"] != "ok" or "median_s" not in row:
                    notes.append(f"{row['variant']}: {row['status']}" + (f" ({row['note']})" if row["note"] else ""))
                    continue
                speed = [
                    f"{row['speedup'][b]:.2f} ({row['speedup_of_mins'][b]:.2f})" if b in row["speedup"] else ""
                    for b in case["baselines"]
                ]
                if case["flops"]:
                    r = f"{row['gflops']:.1f} ({row['pct_peak']:.0f}%)"
                else:
                    r = f"{row['gbs']:.1f}"
                cells = [row["variant"], fmt_time(row["min_s"]), fmt_time(row["median_s"]), str(row["n"]), *speed, r]
                lines.append("| " + " | ".join(cells) + " |")
            best = case.get("best_competitor", {})
            if best.get("by_median"):
                notes.append(
                    f"{BEST_COMPETITOR}: the fastest of {', '.join(best['of'])} in this run: "
                    f"{best['by_median']} by median, {best['by_min']} by min"
                )
            if notes:
                lines += [""] + [f"- {n}" for n in notes]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    sys.exit(main())
