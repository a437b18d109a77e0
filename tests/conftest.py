"""Shared fixtures and helpers: the backend fixture, the book's formulas, awkward arrays, tolerances.

Every test that takes the ``backend`` fixture runs once per backend (numpy, numba, cpp)
inside ``bpfast.use_backend(name)``; a backend that does not load here is skipped with
the reason it gave. Results are compared with the NumPy reference backend and with the
book's formulas written out below (independent of bpfast), so the reference itself is
checked too.
"""

from __future__ import annotations

import functools
import importlib
import os
import shutil
import subprocess
import sys
import sysconfig
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import bpfast

# ``bpfast.backends`` is the function listing backends; the package of the same name is here.
_backends = importlib.import_module("bpfast.backends")

BACKENDS = ("numpy", "numba", "cpp")
DTYPES = (np.float32, np.float64)
LAYOUTS = ("contiguous", "transposed", "strided", "negative_stride", "readonly", "misaligned")
MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@functools.cache
def unavailable_reason(name: str) -> str | None:
    """None when backend ``name`` loads here, else why not (checked once per session)."""
    if _backends.importable(name):
        return None
    try:
        _backends.load(name)
    except ImportError as exc:
        return f"backend {name!r} is not available here: {exc}"
    return None


@pytest.fixture(params=BACKENDS)
def backend(request):
    """The name of the backend under test; the test body runs inside ``use_backend(name)``."""
    reason = unavailable_reason(request.param)
    if reason:
        pytest.skip(reason)
    with bpfast.use_backend(request.param):
        yield request.param


@pytest.fixture
def rng():
    return np.random.default_rng(20240501)


def available_backends() -> list[str]:
    """The backends that load here, fastest first (the order ``bpfast.backends()`` gives)."""
    return [name for name in _backends.PREFERENCE if unavailable_reason(name) is None]


# --- The book's formulas (common/functions.py, common/layers.py), written out plainly ---


class Book:
    """The book's code, as printed (with ``reshape(N, D)`` where the book's -1 fails on N=0)."""

    @staticmethod
    def sigmoid(x):
        with np.errstate(over="ignore"):
            return 1 / (1 + np.exp(-x))

    @staticmethod
    def sigmoid_grad(x):
        return (1.0 - Book.sigmoid(x)) * Book.sigmoid(x)

    @staticmethod
    def relu(x):
        return np.maximum(0, x)

    @staticmethod
    def relu_grad(x):
        grad = np.zeros_like(x)
        grad[x >= 0] = 1
        return grad

    @staticmethod
    def step_function(x):
        return np.array(x > 0, dtype=int)

    @staticmethod
    def softmax(x):
        x = x - np.max(x, axis=-1, keepdims=True)
        return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)

    @staticmethod
    def sum_squared_error(y, t):
        return 0.5 * np.sum((y - t) ** 2)

    @staticmethod
    def cross_entropy_error(y, t):
        if y.ndim == 1:
            t = t.reshape(1, t.size)
            y = y.reshape(1, y.size)
        if t.size == y.size:
            t = t.argmax(axis=1)
        batch_size = y.shape[0]
        return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size

    @staticmethod
    def softmax_loss(x, t):
        return Book.cross_entropy_error(Book.softmax(x), t)

    @staticmethod
    def softmax_with_loss(x, t):
        """SoftmaxWithLoss forward then backward(1): (loss, y, dx)."""
        y = Book.softmax(x)
        loss = Book.cross_entropy_error(y, t)
        batch_size = t.shape[0]
        if t.size == y.size:
            dx = (y - t) / batch_size
        else:
            dx = y.copy()
            dx[np.arange(batch_size), t] -= 1
            dx = dx / batch_size
        return loss, y, dx

    @staticmethod
    def affine(x, W, b, dout):
        """Affine forward then backward: (out, dx, dW, db)."""
        x2 = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))
        out = np.dot(x2, W) + b
        dx = np.dot(dout, W.T).reshape(*x.shape)
        return out, dx, np.dot(x2.T, dout), np.sum(dout, axis=0)

    @staticmethod
    def relu_layer(x, dout):
        """Relu forward then backward: (out, mask, dx)."""
        mask = x <= 0
        out = x.copy()
        out[mask] = 0
        dout = dout.copy()
        dout[mask] = 0
        return out, mask, dout

    @staticmethod
    def sigmoid_layer(x, dout):
        """Sigmoid forward then backward: (out, dx)."""
        out = Book.sigmoid(x)
        return out, dout * (1.0 - out) * out


# --- Awkward arrays ---


def arrange(values: np.ndarray, layout: str) -> np.ndarray:
    """An array equal to ``values`` laid out as ``layout`` (one of LAYOUTS)."""
    values = np.asarray(values)
    if layout == "contiguous":
        return values.copy()
    if layout == "transposed":  # x.T of a C-contiguous array of the reversed shape
        a = np.ascontiguousarray(values.T).T
        assert values.ndim < 2 or min(values.shape) < 2 or not a.flags.c_contiguous
        return a
    if layout == "strided":  # every other element of the last axis
        big = np.zeros(values.shape[:-1] + (2 * values.shape[-1],), dtype=values.dtype)
        a = big[..., ::2]
        a[...] = values
        assert values.size < 2 or not a.flags.c_contiguous
        return a
    if layout == "negative_stride":
        a = np.flip(np.flip(values).copy())
        assert all(s <= 0 for s in a.strides)
        return a
    if layout == "readonly":
        a = values.copy()
        a.flags.writeable = False
        return a
    if layout == "misaligned":  # a buffer view one byte off the itemsize
        buffer = bytearray(values.nbytes + 1)
        a = np.frombuffer(buffer, dtype=values.dtype, offset=1, count=values.size).reshape(values.shape)
        a[...] = values
        assert values.dtype.itemsize == 1 or not a.flags.aligned
        return a
    raise ValueError(layout)


def normal(seed, shape, dtype, layout="contiguous"):
    """Seeded standard normal values of ``dtype`` laid out as ``layout``."""
    values = np.random.default_rng(seed).standard_normal(shape).astype(dtype)
    return arrange(values, layout)


def labels(seed, n, c):
    return np.random.default_rng(seed).integers(0, c, size=n)


def one_hot(t, c, dtype=np.float64):
    out = np.zeros((len(t), c), dtype=dtype)
    out[np.arange(len(t)), t] = 1
    return out


# --- Tolerances by dtype ---

ELEMENTWISE_RTOL = {np.dtype(np.float32): 1e-5, np.dtype(np.float64): 1e-12, np.dtype(np.float16): 1e-3}


def matmul_rtol(dtype, k: int) -> float:
    """Matrix products and sums of k terms: 1e-10 in float64, 4·sqrt(k)·eps in float32."""
    dtype = np.dtype(dtype)
    if dtype == np.float64:
        return 1e-10
    return 4 * np.sqrt(max(k, 1)) * float(np.finfo(dtype).eps)


def assert_matches(got, expected, *, exact=False, k=None, scale=0.0, tol_dtype=None, what="result"):
    """Same dtype and shape; values exact, or within the dtype's tolerance.

    The bound is ``rtol * (|expected| + scale)``: elementwise rtol by default, the matrix
    product rtol for ``k`` terms when ``k`` is given (pass ``scale = |x|·|W|`` then).
    ``tol_dtype`` takes the tolerance of another dtype (mixed inputs: the least precise).
    """
    got_a = np.asarray(got)
    exp_a = np.asarray(expected)
    assert got_a.dtype == exp_a.dtype, f"{what}: dtype {got_a.dtype}, expected {exp_a.dtype}"
    assert got_a.shape == exp_a.shape, f"{what}: shape {got_a.shape}, expected {exp_a.shape}"
    if exact or exp_a.dtype.kind not in "fc":
        np.testing.assert_array_equal(got_a, exp_a, err_msg=what, strict=True)
        return
    tol_dtype = np.dtype(tol_dtype or exp_a.dtype)
    rtol = ELEMENTWISE_RTOL[tol_dtype] if k is None else matmul_rtol(tol_dtype, k)
    bound = rtol * (np.abs(exp_a.astype(np.float64)) + scale)
    with np.errstate(invalid="ignore"):
        diff = np.abs(got_a.astype(np.float64) - exp_a.astype(np.float64))
        same_special = (np.isnan(got_a) & np.isnan(exp_a)) | (got_a == exp_a)
    bad = ~(same_special | (np.isfinite(exp_a) & (diff <= bound)))
    assert not bad.any(), (
        f"{what}: {int(bad.sum())} of {bad.size} elements off; worst |diff| {diff[bad].max():.3g} "
        f"at {np.unravel_index(np.argmax(np.where(bad, diff, -1)), bad.shape)}, rtol {rtol:.3g}"
    )


def oracle(make_inputs, api, book, checks):
    """Run ``api`` on the active backend and on the numpy reference, and ``book``.

    ``make_inputs()`` builds fresh inputs for each run (so in-place writes do not leak);
    ``api``/``book`` take them and return a tuple of results; ``checks`` holds one dict of
    ``assert_matches`` options per result. The reference must match the book, and the
    backend under test the reference.
    """
    got = api(*make_inputs())
    with bpfast.use_backend("numpy"):
        ref = api(*make_inputs())
    expected = book(*make_inputs())
    assert len(got) == len(ref) == len(expected) == len(checks)
    for i, (g, r, e, options) in enumerate(zip(got, ref, expected, checks)):
        assert_matches(r, e, what=f"numpy reference vs the book, result {i}", **options)
        assert_matches(g, r, what=f"{bpfast.get_backend()} vs numpy reference, result {i}", **options)
    return got


# --- exp in ulps (the compiled core's vector exp and the Numba backend's) ---

INT_OF = {np.float32: np.int32, np.float64: np.int64}
EXP_SPECIALS = [0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 88.0, 88.72, 88.7229, 89.0,
                -87.0, -87.34, -100.0, -103.9, -103.98, -104.0, 709.78, 709.7828, 710.0, -708.0, -745.13,
                -745.14, -746.0, 1e300, -1e300]


def ulp_distance(got, want):
    """|got - want| in units in the last place (NaN vs NaN is 0), via the ordered integer images."""
    dtype = got.dtype.type
    itype = INT_OF[dtype]
    low = np.iinfo(itype).min

    def ordered(a):
        i = a.view(itype).astype(np.int64)
        return np.where(i < 0, low - i, i)

    d = np.abs(ordered(got) - ordered(want))
    d[np.isnan(got) & np.isnan(want)] = 0
    return d


def exp_sweep(dtype):
    """A dense sweep of the whole range where exp is finite and nonzero, its edges, and specials."""
    rng = np.random.default_rng(1)
    if dtype == np.float32:
        bits = np.arange(0, 2**32, 509, dtype=np.uint64).astype(np.uint32)  # every 509th float
        x = bits.view(np.float32)
        x = x[(x > -110) & (x < 95)]
        edges = [rng.uniform(a, b, 200_000) for a, b in ((-104, -87), (88, 89), (-1, 1))]
    else:
        x = rng.uniform(-750, 712, 2_000_000)
        edges = [rng.uniform(a, b, 200_000) for a, b in ((-746, -708), (709, 710), (-1, 1), (-1e-6, 1e-6))]
    specials = np.array(EXP_SPECIALS)
    specials = specials[~(np.abs(specials) > np.finfo(dtype).max)]
    return np.concatenate([x.astype(dtype)] + [e.astype(dtype) for e in edges] + [specials.astype(dtype)])


def correctly_rounded_exp(x):
    """exp(x) in x's dtype; float32 as exp in float64 rounded once (nearly always correctly rounded)."""
    with np.errstate(over="ignore", under="ignore"):
        return np.exp(x.astype(np.float64)).astype(x.dtype) if x.dtype == np.float32 else np.exp(x)


def assert_exp_within_ulps(exp, dtype, min_exact=0.9):
    """exp (array -> array) is within 2 ulp over exp_sweep, and exact for most arguments."""
    x = exp_sweep(dtype)
    got = exp(x)
    want = correctly_rounded_exp(x)
    d = ulp_distance(got, want)
    worst = int(d.argmax())
    assert d.max() <= 2, f"{d.max()} ulp at x={x[worst]!r}: got {got[worst]!r}, want {want[worst]!r}"
    assert np.mean(d == 0) > min_exact  # mostly exact, not just within 2 ulp


def assert_exp_special_values(exp, dtype):
    """inf, -inf, NaN, zeros, far out of range, and denormal results (not flushed to zero)."""
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0, 1e4, -1e4], dtype)
    got = exp(x)
    assert got[0] == np.inf and got[1] == 0 and np.isnan(got[2]) and got[3] == 1 and got[4] == 1
    assert got[5] == np.inf and got[6] == 0
    tiny = np.finfo(dtype).smallest_subnormal
    x = np.log(np.array([tiny * 3, tiny * 1000, np.finfo(dtype).tiny / 2], np.float64)).astype(dtype)
    sub = exp(x)
    assert np.all(sub > 0) and np.all(sub < np.finfo(dtype).tiny)  # denormal results, not flushed
    assert np.all(ulp_distance(sub, correctly_rounded_exp(x)) <= 2)


# --- Subprocesses ---


def python_env(**overrides: str) -> dict[str, str]:
    """The environment for a child Python that imports this bpfast (installed or not)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BPFAST_")}
    package_parent = str(Path(bpfast.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.update(overrides)
    return env


def run_python(args, **env_overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], env=python_env(**env_overrides), capture_output=True, text=True, timeout=120
    )


def console_script(name: str = "bpfast") -> str:
    """The path of the installed ``name`` console script: beside ``sys.executable``, in this
    interpreter's scripts folder, then on PATH (a venv's python run by its path leaves the venv's
    bin off PATH). Skips when bpfast is not installed (a source tree on PYTHONPATH has no
    scripts); fails when it is installed and the script is nowhere."""
    try:
        declared = {ep.name for ep in metadata.distribution("bpfast").entry_points.select(group="console_scripts")}
    except metadata.PackageNotFoundError:
        pytest.skip(f"bpfast is not installed for {sys.executable} (imported from {Path(bpfast.__file__).parent}): "
                    f"the {name} console script comes with pip install")
    assert name in declared, f"bpfast's metadata declares the console scripts {sorted(declared)}, not {name}"
    folders = [Path(sys.executable).parent, Path(sysconfig.get_path("scripts"))]
    for exe in [shutil.which(name, path=str(folder)) for folder in folders] + [shutil.which(name)]:
        if exe:
            return exe
    pytest.fail(f"bpfast is installed but its {name} script is not in {', '.join(map(str, folders))} nor on PATH")


KERNEL_PATHS = ("generic", "avx2", "avx512")


@pytest.fixture(params=KERNEL_PATHS)
def cpu_path(request):
    """Run the test on one kernel path of the compiled core (skipped where it cannot run)."""
    core = pytest.importorskip("bpfast._core", reason="the compiled core is not built")
    if request.param not in core.info()["kernel_paths_compiled"]:
        pytest.skip(f"{request.param} is not compiled into this build")
    chosen = core._set_cpu_path(request.param)
    try:
        if chosen != request.param:
            pytest.skip(f"{request.param}: {core.info()['kernel_path_reason']}")
        yield chosen
    finally:
        core._set_cpu_path(os.environ.get("BPFAST_CPU") or None)
