"""Binding-level tests of the compiled core: every op against the NumPy reference, the fast
kernels against their _ref twins, on every kernel path this machine can run, with awkward
shapes and layouts, and the errors the bindings raise on bad input."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

import numpy as np
import pytest

_core = pytest.importorskip("bpfast._core")
from bpfast.backends import cpp, numpy_ref  # noqa: E402

DTYPES = [np.float32, np.float64]
INFO = _core.info()
PATHS = [p for p in ("generic", "avx2", "avx512") if p in INFO["kernel_paths_compiled"]]
LAYOUTS = ["c", "transposed", "strided", "readonly", "misaligned"]
# (N, D, M): batch 1, K = 1, empty batch, D = 0, M = 0, sizes off every register block, MNIST-sized.
AFFINE_SHAPES = [
    (1, 1, 1), (1, 3, 7), (7, 17, 33), (3, 65, 129), (33, 129, 17), (17, 1, 65), (15, 31, 47),
    (0, 5, 3), (4, 0, 3), (4, 5, 0), (300, 784, 50),
]




def rng_array(shape, dtype, seed=0, scale=1.0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dtype)


def layout(a, kind):
    """The same values as a, laid out as kind says (C-contiguous copies keep a's values)."""
    if kind == "c":
        return a.copy()
    if kind == "transposed":
        return np.asfortranarray(a)
    if kind == "strided":
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype) if a.ndim else a.copy()
        view = wide[..., ::2] if a.ndim else wide
        view[...] = a
        return view
    if kind == "readonly":
        r = a.copy()
        r.flags.writeable = False
        return r
    if kind == "misaligned":
        buf = bytearray(a.nbytes + 1)
        m = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        m[...] = a
        assert a.dtype.itemsize == 1 or a.size == 0 or not m.flags.aligned
        return m
    raise AssertionError(kind)


def elementwise_tol(dtype):
    return {"rtol": 1e-5, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-12, "atol": 1e-14}


def matmul_tol(dtype, K):
    eps = np.finfo(dtype).eps
    r = max(4 * np.sqrt(max(K, 1)) * eps, 1e-10 if dtype == np.float64 else 0.0)
    return {"rtol": r, "atol": r * np.sqrt(max(K, 1))}


def assert_fresh(out, *inputs):
    for a in inputs:
        assert not np.shares_memory(out, a)


# ---------------------------------------------------------------------------------- affine


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", AFFINE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_affine_matches_reference(cpu_path, dtype, shape):
    N, D, M = shape
    x, W, b, dout = rng_array((N, D), dtype, 1), rng_array((D, M), dtype, 2), rng_array(M, dtype, 3), rng_array((N, M), dtype, 4)
    out = _core.affine_forward(x, W, b)
    assert out.dtype == dtype and out.shape == (N, M)
    np.testing.assert_allclose(out, numpy_ref.affine_forward(x, W, b), **matmul_tol(dtype, D))
    dx, dW, db = _core.affine_backward(dout, x, W)
    rdx, rdW, rdb = numpy_ref.affine_backward(dout, x, W)
    assert (dx.shape, dW.shape, db.shape) == ((N, D), (D, M), (M,))
    assert dx.dtype == dW.dtype == db.dtype == dtype
    np.testing.assert_allclose(dx, rdx, **matmul_tol(dtype, M))
    np.testing.assert_allclose(dW, rdW, **matmul_tol(dtype, N))
    np.testing.assert_allclose(db, rdb, **matmul_tol(dtype, N))
    assert _core.affine_backward(dout, x, W, need_dx=False)[0] is None
    for a in (out, dx, dW, db):
        assert_fresh(a, x, W, b, dout)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_affine_any_layout(cpu_path, dtype, kind):
    x, W, b, dout = rng_array((9, 13), dtype, 1), rng_array((13, 21), dtype, 2), rng_array(21, dtype, 3), rng_array((9, 21), dtype, 4)
    args = [layout(a, kind) for a in (x, W, b)]
    np.testing.assert_allclose(cpp.affine_forward(*args), numpy_ref.affine_forward(x, W, b), **matmul_tol(dtype, 13))
    got = cpp.affine_backward(layout(dout, kind), args[0], args[1])
    for g, r, K in zip(got, numpy_ref.affine_backward(dout, x, W), (21, 9, 9)):
        np.testing.assert_allclose(g, r, **matmul_tol(dtype, K))


def test_affine_accepts_row_bias():
    x, W, b = rng_array((4, 3), np.float64), rng_array((3, 5), np.float64, 1), rng_array((1, 5), np.float64, 2)
    np.testing.assert_allclose(_core.affine_forward(x, W, b), x @ W + b, rtol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", AFFINE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_affine_matches_ref_twin(cpu_path, dtype, shape):
    N, D, M = shape
    x, W, b, dout = rng_array((N, D), dtype, 1), rng_array((D, M), dtype, 2), rng_array(M, dtype, 3), rng_array((N, M), dtype, 4)
    np.testing.assert_allclose(_core.affine_forward(x, W, b), _core._ref.affine_forward(x, W, b), **matmul_tol(dtype, D))
    for g, r, K in zip(_core.affine_backward(dout, x, W), _core._ref.affine_backward(dout, x, W), (M, N, N)):
        np.testing.assert_allclose(g, r, **matmul_tol(dtype, K))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("mnk", [(1, 1, 1), (14, 32, 256), (15, 33, 257), (29, 65, 513), (113, 17, 3), (5, 4100, 2)])
def test_gemm_transposes_and_blocks(cpu_path, dtype, trans_a, trans_b, mnk):
    M, N, K = mnk
    a = rng_array((K, M) if trans_a else (M, K), dtype, 1)
    b = rng_array((N, K) if trans_b else (K, N), dtype, 2)
    bias = rng_array(N, dtype, 3)
    expected = (a.T if trans_a else a) @ (b.T if trans_b else b)
    tol = matmul_tol(dtype, K)
    np.testing.assert_allclose(_core._gemm(a, b, trans_a=trans_a, trans_b=trans_b), expected, **tol)
    np.testing.assert_allclose(_core._gemm(a, b, bias, trans_a, trans_b), expected + bias, **tol)
    np.testing.assert_allclose(_core._ref.gemm(a, b, bias, trans_a, trans_b), expected + bias, **tol)


def test_gemm_k0_gives_bias():
    a, b, bias = np.zeros((3, 0)), np.zeros((0, 4)), np.arange(4.0)
    np.testing.assert_array_equal(_core._gemm(a, b, bias), np.tile(bias, (3, 1)))
    np.testing.assert_array_equal(_core._gemm(a, b), np.zeros((3, 4)))


# ------------------------------------------------------------------------ elementwise ops

ELEMENTWISE_SHAPES = [(0,), (1,), (7,), (3, 17), (2, 3, 65), (0, 4), (129, 33)]


def special_values(dtype):
    return np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-30, -1e-30, 700.0, -800.0], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_relu(dtype, shape, kind):
    x = rng_array(shape, dtype)
    out, mask = cpp.relu_forward(layout(x, kind))
    rout, rmask = numpy_ref.relu_forward(x)
    assert mask.dtype == np.bool_ and out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_array_equal(out, rout)
    dout, rdout = rng_array(shape, dtype, 5), rng_array(shape, dtype, 5)
    numpy_ref.relu_backward(rdout, rmask)
    if kind != "readonly":
        d = layout(dout, kind)
        assert cpp.relu_backward(d, layout(mask, kind)) is None
        np.testing.assert_array_equal(d, rdout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(dtype):
    x = special_values(dtype)
    out, mask = _core.relu_forward(x)
    rout, rmask = numpy_ref.relu_forward(x)
    np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_array_equal(out, rout)  # NaN stays NaN, -0.0 becomes 0
    assert not mask[4] and np.isnan(out[4])


def test_relu_backward_readonly_never_writes():
    dout = np.arange(6.0) - 3
    dout.flags.writeable = False
    mask = dout <= 0
    for f in (_core.relu_backward, cpp.relu_backward):
        with pytest.raises(ValueError, match="read-only"):
            f(dout, mask)
    np.testing.assert_array_equal(dout, np.arange(6.0) - 3)


def test_relu_backward_core_refuses_noncontiguous():
    dout = np.ones((4, 6))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous and aligned"):
        _core.relu_backward(dout, dout > 0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_sigmoid(dtype, shape, kind):
    x, dout = rng_array(shape, dtype, scale=5), rng_array(shape, dtype, 6)
    out = cpp.sigmoid_forward(layout(x, kind))
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, numpy_ref.sigmoid_forward(x), **elementwise_tol(dtype))
    dx = cpp.sigmoid_backward(layout(dout, kind), layout(out, kind))
    np.testing.assert_allclose(dx, numpy_ref.sigmoid_backward(dout, out), **elementwise_tol(dtype))
    assert_fresh(dx, out, dout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_special_values(dtype):
    x = special_values(dtype)
    out = _core.sigmoid_forward(x)
    np.testing.assert_allclose(out, numpy_ref.sigmoid_forward(x), equal_nan=True, **elementwise_tol(dtype))
    assert out[-1] == 0 and out[-2] == 1


# -------------------------------------------------------------------- softmax and loss

SOFTMAX_SHAPES = [(1, 1), (1, 10), (3, 7), (17, 33), (0, 5), (100, 10)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
def test_softmax(dtype, shape, kind):
    x = rng_array(shape, dtype, scale=10)
    y = cpp.softmax(layout(x, kind))
    assert y.dtype == dtype and y.shape == shape
    np.testing.assert_allclose(y, numpy_ref.softmax(x), **elementwise_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_and_special_rows(dtype):
    x = np.array([[1000, 1001, 999], [-np.inf] * 3, [0, np.inf, 1], [0, np.nan, 1], [-np.inf, 0, -np.inf]], dtype)
    with np.errstate(all="ignore"):
        expected = numpy_ref.softmax(x)
    np.testing.assert_allclose(_core.softmax(x), expected, equal_nan=True, **elementwise_tol(dtype))


def one_hot(labels, C, dtype):
    t = np.zeros((labels.size, C), dtype)
    t[np.arange(labels.size), labels] = 1
    return t


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [s for s in SOFTMAX_SHAPES if s[0]], ids=str)
@pytest.mark.parametrize("kind", LAYOUTS)
@pytest.mark.parametrize("target", ["labels", "onehot"])
def test_softmax_xent(dtype, shape, kind, target):
    N, C = shape
    x = rng_array(shape, dtype, scale=3)
    labels = np.random.default_rng(7).integers(0, C, N)
    t = labels if target == "labels" else one_hot(labels, C, dtype)
    y, loss = cpp.softmax_xent_forward(layout(x, kind), layout(t, kind))
    ry, rloss = numpy_ref.softmax_xent_forward(x, t)
    assert type(loss) is np.dtype(dtype).type and y.dtype == dtype
    np.testing.assert_allclose(y, ry, **elementwise_tol(dtype))
    np.testing.assert_allclose(loss, rloss, **elementwise_tol(dtype))
    dx = cpp.softmax_xent_backward(layout(y, kind), layout(t, kind))
    np.testing.assert_allclose(dx, numpy_ref.softmax_xent_backward(y, t), **elementwise_tol(dtype))
    assert_fresh(dx, y)


def test_softmax_xent_onehot_ties_take_first_max():
    x = rng_array((3, 4), np.float64)
    t = np.array([[0, 1, 1, 0], [0.5, 0.5, 0.5, 0.5], [0, 0, 0, 2]], np.float64)
    np.testing.assert_allclose(_core.softmax_xent_forward(x, t)[1], numpy_ref.softmax_xent_forward(x, t)[1], rtol=1e-12)


@pytest.mark.parametrize("label_dtype", [np.int8, np.int32, np.uint8, np.uint64])
def test_softmax_xent_accepts_integer_labels(label_dtype):
    x, labels = rng_array((5, 4), np.float64), np.array([0, 3, 1, 2, 3])
    expected = numpy_ref.softmax_xent_forward(x, labels)[1]
    np.testing.assert_allclose(_core.softmax_xent_forward(x, labels.astype(label_dtype))[1], expected, rtol=1e-12)
    y = _core.softmax(x)
    np.testing.assert_allclose(
        _core.softmax_xent_backward(y, labels.astype(label_dtype)), numpy_ref.softmax_xent_backward(y, labels), rtol=1e-12
    )


def test_softmax_xent_backward_empty_batch():
    y = np.zeros((0, 3))
    assert _core.softmax_xent_backward(y, np.zeros(0, np.int64)).shape == (0, 3)


# -------------------------------------------------------------------------- bad inputs

f32, f64 = np.ones((3, 4), np.float32), np.ones((3, 4))
BAD_INPUTS = [
    ("int dtype", lambda: _core.affine_forward(np.ones((2, 3), int), np.ones((3, 2)), np.ones(2)), TypeError, "x has dtype int64"),
    ("mixed dtypes", lambda: _core.affine_forward(np.ones((2, 3)), np.ones((3, 2), np.float32), np.ones(2)), TypeError, "x has dtype float64 but W has dtype float32"),
    ("float16", lambda: _core.sigmoid_forward(np.ones(3, np.float16)), TypeError, "float16"),
    ("big-endian", lambda: _core.sigmoid_forward(np.ones(3, ">f8")), TypeError, "expected float32 or float64"),
    ("x vs W", lambda: _core.affine_forward(np.ones((3, 5)), np.ones((4, 2)), np.ones(2)), ValueError, r"affine_forward: x has shape \(3, 5\) but W has shape \(4, 2\)"),
    ("W vs b", lambda: _core.affine_forward(np.ones((3, 4)), np.ones((4, 2)), np.ones(3)), ValueError, r"W has shape \(4, 2\) but b has shape \(3,\)"),
    ("x 1-D", lambda: _core.affine_forward(np.ones(4), np.ones((4, 2)), np.ones(2)), ValueError, "x must be 2-D"),
    ("dout vs x", lambda: _core.affine_backward(np.ones((2, 2)), np.ones((3, 4)), np.ones((4, 2))), ValueError, r"dout has shape \(2, 2\) but x has shape \(3, 4\)"),
    ("dout vs W", lambda: _core.affine_backward(np.ones((3, 3)), np.ones((3, 4)), np.ones((4, 2))), ValueError, r"dout has shape \(3, 3\) but W has shape \(4, 2\)"),
    ("gemm K", lambda: _core._gemm(np.ones((2, 3)), np.ones((2, 3))), ValueError, r"a has shape \(2, 3\) but b has shape \(2, 3\)"),
    ("sigmoid shapes", lambda: _core.sigmoid_backward(np.ones(3), np.ones(4)), ValueError, r"dout has shape \(3,\) but out has shape \(4,\)"),
    ("relu mask dtype", lambda: _core.relu_backward(np.ones(3), np.ones(3)), TypeError, "mask has dtype float64; expected bool"),
    ("relu shapes", lambda: _core.relu_backward(np.ones(3), np.ones(4, bool)), ValueError, r"dout has shape \(3,\) but mask has shape \(4,\)"),
    ("label too big", lambda: _core.softmax_xent_forward(f64, np.array([0, 1, 4])), ValueError, r"label 4 at index 2 is outside \[0, 4\)"),
    ("label negative", lambda: _core.softmax_xent_backward(f64, np.array([0, -1, 2])), ValueError, r"label -1 at index 1"),
    ("label uint64 2**63", lambda: _core.softmax_xent_forward(f64, np.array([0, 2**63, 1], np.uint64)), ValueError, r"label 9223372036854775808 at index 1"),
    ("label uint64 max", lambda: _core.softmax_xent_forward(f64, np.array([2**64 - 1, 0, 1], np.uint64)), ValueError, r"label 18446744073709551615 at index 0"),
    ("float labels", lambda: _core.softmax_xent_forward(f64, np.array([0.0, 1.0, 2.0])), TypeError, "expected an integer dtype"),
    ("labels length", lambda: _core.softmax_xent_forward(f64, np.array([0, 1])), ValueError, r"x has shape \(3, 4\) but t has shape \(2,\)"),
    ("one-hot shape", lambda: _core.softmax_xent_forward(f64, np.ones((3, 5))), ValueError, r"x has shape \(3, 4\) but t has shape \(3, 5\)"),
    ("one-hot dtype", lambda: _core.softmax_xent_forward(f64, f32), TypeError, "x has dtype float64 but t has dtype float32"),
    ("t 3-D", lambda: _core.softmax_xent_backward(f64, np.ones((3, 4, 1))), ValueError, "t must be"),
    ("xent empty batch", lambda: _core.softmax_xent_forward(np.ones((0, 4)), np.zeros(0, np.int64)), ValueError, "empty batch"),
    ("xent no classes", lambda: _core.softmax_xent_forward(np.ones((2, 0)), np.ones((2, 0))), ValueError, "no classes"),
    *(
        (f"{name} no classes", lambda call=call, t=t, lr=lr: call(np.ones((3, 4)), t, np.ones((4, 5)), np.zeros(5), np.ones((5, 0)), np.zeros(0), *lr),
         ValueError, rf"{name}: the loss needs at least one class \(W2 has shape \(5, 0\)\)")
        for name, call, lr in (("two_layer_gradient", _core.two_layer_gradient, ()), ("two_layer_train_step", _core.two_layer_train_step, (0.1,)))
        for t in (np.zeros((3, 0)), np.zeros(3, np.int64))
    ),
    *(
        (f"{name} {which} length", lambda call=call, lr=lr, b1=b1, b2=b2: call(np.ones((3, 4)), np.zeros(3, np.int64), np.ones((4, 5)), b1, np.ones((5, 3)), b2, *lr),
         ValueError, rf"{name}: {pattern}")
        for name, call, lr in (("two_layer_gradient", _core.two_layer_gradient, ()), ("two_layer_train_step", _core.two_layer_train_step, (0.1,)))
        for which, b1, b2, pattern in (("b1", np.zeros(4), np.zeros(3), r"W1 has shape \(4, 5\) but b1 has shape \(4,\)"),
                                       ("b2", np.zeros(5), np.zeros(2), r"W2 has shape \(5, 3\) but b2 has shape \(2,\)"))
    ),
    ("set_num_threads too many", lambda: _core.set_num_threads(_core.MAX_THREADS + 1), ValueError, r"at most 65536, got 65537"),
    ("set_num_threads past int", lambda: _core.set_num_threads(2**40), ValueError, r"at most 65536, got 1099511627776"),
    ("softmax 0-D", lambda: _core.softmax(np.ones(())), ValueError, "at least one axis"),
    ("object dtype", lambda: _core.relu_forward(np.array([None, 1])), TypeError, "object"),
    ("peak dtype", lambda: _core._peak_gflops("float16"), ValueError, "'float32' or 'float64', not 'float16'"),
    ("peak no time", lambda: _core._peak_gflops("float32", 0.0), ValueError, r"seconds must be in \(0, 60\]"),
    ("peak NaN time", lambda: _core._peak_gflops("float64", float("nan")), ValueError, r"seconds must be in \(0, 60\]"),
]


@pytest.mark.parametrize("call, exc, pattern", [b[1:] for b in BAD_INPUTS], ids=[b[0] for b in BAD_INPUTS])
def test_bad_inputs(call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


# ------------------------------------------------------------------- dispatch and info


def test_info_describes_build_and_path():
    info = _core.info()
    for key in ("compiler", "build_flags", "cpu_features", "kernel_path", "kernel_path_reason", "num_threads"):
        assert key in info
    assert info["kernel_path"] in info["kernel_paths_compiled"]
    assert info["num_threads"] == _core.get_num_threads() >= 1
    assert "-march=native" not in str(info["build_flags"]) and "fast-math" not in str(info["build_flags"])


def test_peak_gflops_measures_the_fma_rate(cpu_path):
    """The benchmarks' peak: finite, positive, float32 about twice float64 (twice the lanes per
    vector, the same FMAs). The probe times the wall clock, and on a busy machine another process
    may hold the core for part of a probe (a round read 1.1x while a build ran beside the suite):
    so one thread, each probe's rate rescaled by its wall time over the CPU time the process got,
    the two dtypes in turn, five rounds, the median of the per-round ratios."""

    def rate_while_running(dtype):
        wall, cpu = time.perf_counter(), time.process_time()
        gflops = _core._peak_gflops(dtype, 0.03)
        return gflops * (time.perf_counter() - wall) / (time.process_time() - cpu)

    threads = _core.get_num_threads()
    _core.set_num_threads(1)
    try:
        rounds = [(rate_while_running("float32"), rate_while_running("float64")) for _ in range(5)]
    finally:
        _core.set_num_threads(threads)
    assert all(0.5 < f64 < 1e6 and 0.5 < f32 < 1e6 for f32, f64 in rounds), rounds
    assert 1.5 < statistics.median(f32 / f64 for f32, f64 in rounds) < 2.7, rounds


def run_with_cpu_env(value):
    code = "import bpfast._core as c; i = c.info(); print(i['kernel_path']); print(i['kernel_path_reason'])"
    env = dict(os.environ, BPFAST_CPU=value, PYTHONPATH=os.pathsep.join(sys.path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.splitlines()


@pytest.mark.parametrize("path", PATHS)
def test_bpfast_cpu_env_forces_path(path):
    chosen, reason = run_with_cpu_env(path)
    if chosen == path:
        assert reason == f"BPFAST_CPU={path}"
    else:
        assert "ignored" in reason


def test_bpfast_cpu_env_unknown_falls_back():
    chosen, reason = run_with_cpu_env("pentium")
    assert chosen in PATHS and "BPFAST_CPU=pentium ignored" in reason


def test_set_cpu_path_unknown_falls_back():
    try:
        assert _core._set_cpu_path("nonsense") in PATHS
        assert "ignored" in _core.info()["kernel_path_reason"]
    finally:
        _core._set_cpu_path(os.environ.get("BPFAST_CPU") or None)
