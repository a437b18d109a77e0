"""The elementwise and row-wise kernels of the compiled core on every kernel path: bpfast's vector
exp against np.exp in ulps, every kernel x dtype x path x size around the vector widths against
the NumPy reference and the _ref twins, special values, and results that do not depend on the
thread count."""

from __future__ import annotations

import numpy as np
import pytest

_core = pytest.importorskip("bpfast._core")
import bpfast  # noqa: E402
from bpfast.backends import numpy_ref  # noqa: E402
from conftest import assert_exp_special_values, assert_exp_within_ulps  # noqa: E402
from test_core_bindings import elementwise_tol, one_hot, rng_array  # noqa: E402

DTYPES = [np.float32, np.float64]
# Around the vector widths (4, 8, 16 floats; 2, 4, 8 doubles) and the unrolled loops, plus large.
SIZES = [0, 1, 7, 15, 16, 17, 31, 33, 63, 65, 1000, 100003]


@pytest.fixture
def threads():
    """Restores the thread count after the test."""
    before = bpfast.get_num_threads()
    yield
    bpfast.set_num_threads(before)


# ---------------------------------------------------------------------------------------- exp

@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_ulp_sweep(cpu_path, dtype):
    assert_exp_within_ulps(_core._exp, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_special_values(cpu_path, dtype):
    assert_exp_special_values(_core._exp, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_exp_sizes(cpu_path, dtype, n):
    x = rng_array(n, dtype, scale=10)
    np.testing.assert_allclose(_core._exp(x), np.exp(x), rtol=4 * np.finfo(dtype).eps)


# ------------------------------------------------------------------------------ elementwise ops


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_relu(cpu_path, dtype, n):
    x = rng_array(n, dtype)
    x[::5] = 0
    out, mask = _core.relu_forward(x)
    rout, rmask = numpy_ref.relu_forward(x)
    np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_array_equal(out, rout)
    assert not np.signbit(out).any()
    dout, rdout, tdout = (rng_array(n, dtype, 5) for _ in range(3))
    _core.relu_backward(dout, mask)
    numpy_ref.relu_backward(rdout, rmask)
    _core._ref.relu_backward(tdout, mask)
    np.testing.assert_array_equal(dout, rdout)
    np.testing.assert_array_equal(tdout, rdout)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_streaming_forward(cpu_path, dtype):
    """Outputs of 16 MiB and more take the non-temporal-store kernel (after a head that brings out
    to 64-byte alignment); odd lengths and every special value, against the reference."""
    n = (16 << 20) // np.dtype(dtype).itemsize + 13
    x = rng_array(n, dtype)
    x[::5] = 0
    x[1:70:7] = np.array([np.nan, -np.nan, np.inf, -np.inf, -0.0, 1e-30, -1e-30, 0.0, 1.0, -1.0], dtype)
    rout, rmask = numpy_ref.relu_forward(x)
    starts = set()  # out's offset from a 64-byte line: the head runs when it is not 0
    for k in range(8):
        spacer = np.empty(16 * k + 1, np.uint8)  # may move where the next large block starts
        poison = np.full(n, np.nan, dtype)  # out's memory then holds NaN, not an earlier call's answer
        del poison
        out, mask = _core.relu_forward(x)
        np.testing.assert_array_equal(mask, rmask)
        np.testing.assert_array_equal(out, rout)
        assert not np.signbit(out[~np.isnan(out)]).any()
        starts.add(out.ctypes.data % 64)
        del out, mask, spacer
        if starts - {0}:
            break
    if not starts - {0}:
        pytest.skip("every output started on a 64-byte line: the head before the streaming stores did not run")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_special_values(cpu_path, dtype):
    x = np.tile(np.array([0.0, -0.0, 1.0, -1.0, np.nan, np.inf, -np.inf, 1e-30, -1e-30, -np.nan], dtype), 7)
    out, mask = _core.relu_forward(x)
    rout, rmask = numpy_ref.relu_forward(x)
    np.testing.assert_array_equal(mask, rmask)
    np.testing.assert_array_equal(out, rout)
    assert np.array_equal(np.signbit(out), np.signbit(rout) & np.isnan(rout))  # -0.0 becomes +0.0
    assert mask.view(np.uint8).max() <= 1  # proper bools


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", SIZES)
def test_sigmoid(cpu_path, dtype, n):
    x = rng_array(n, dtype, scale=8)
    out = _core.sigmoid_forward(x)
    np.testing.assert_allclose(out, numpy_ref.sigmoid_forward(x), **elementwise_tol(dtype))
    np.testing.assert_allclose(out, _core._ref.sigmoid_forward(x), **elementwise_tol(dtype))
    dout = rng_array(n, dtype, 6)
    dx = _core.sigmoid_backward(dout, out)
    np.testing.assert_array_equal(dx, numpy_ref.sigmoid_backward(dout, out))  # same operations, same order


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_special_values(cpu_path, dtype):
    x = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 50.0, -50.0, 100.0, -100.0, 800.0, -800.0, 1e30, -1e30], dtype)
    out = _core.sigmoid_forward(x)
    np.testing.assert_allclose(out, numpy_ref.sigmoid_forward(x), equal_nan=True, **elementwise_tol(dtype))
    assert out[0] == 0.5 and np.isnan(out[2]) and out[3] == 1 and out[4] == 0
    assert out[-1] == 0 and out[-2] == 1 and out[-3] == 0


# ------------------------------------------------------------------------------ softmax and loss

SOFTMAX_SHAPES = [(3, c) for c in SIZES if c] + [(0, 5), (100, 10), (1, 100003), (257, 3)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax(cpu_path, dtype, shape):
    x = rng_array(shape, dtype, scale=10)
    y = _core.softmax(x)
    np.testing.assert_allclose(y, numpy_ref.softmax(x), **elementwise_tol(dtype))
    np.testing.assert_allclose(y, _core._ref.softmax(x), **elementwise_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("C", [1, 7, 16, 17, 33])
def test_softmax_special_rows(cpu_path, dtype, C):
    x = rng_array((9, C), dtype, scale=3)
    x[0] += 1000  # large logits
    x[1] = -np.inf  # all -inf: NaN
    x[2, -1] = np.inf  # +inf: NaN
    x[3, 0] = np.nan  # NaN: NaN
    x[4] = -1e30  # huge negative, all equal
    x[5, 1:] = -np.inf  # one finite entry: [1, 0, ...]
    x[6, -1] = np.nan
    x[7, :] = np.finfo(dtype).max
    x[8, 0] = -np.inf
    with np.errstate(all="ignore"):
        expected = numpy_ref.softmax(x)
    got = _core.softmax(x)
    np.testing.assert_allclose(got, expected, equal_nan=True, **elementwise_tol(dtype))
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_short_rows_same_bits_as_long(cpu_path, dtype):
    """Rows of up to two vectors (the book's ten classes) run in registers, in one pass; longer rows
    in passes over memory. The same operations in the same order: a short row gives the bits it
    gives with -inf columns after it, which add exact zeros to its sum (128 columns: the long path
    on every vector width), and so does its loss."""
    lanes = {"generic": 16, "avx2": 32, "avx512": 64}[cpu_path] // np.dtype(dtype).itemsize
    rng = np.random.default_rng(21)
    for C in range(1, 2 * lanes + 1):
        x = (rng.standard_normal((12, C)) * 20).astype(dtype)
        x[0, 0] = np.nan
        x[1, -1] = np.inf
        x[2] = -np.inf
        x[3, C // 2] = -np.inf
        x[4] = 0
        x[5, 0] = -0.0
        x[6, -1] = 80
        padded = np.full((12, 128), -np.inf, dtype)
        padded[:, :C] = x
        labels = rng.integers(0, C, 12)
        with np.errstate(all="ignore"):
            short, long = _core.softmax(x), _core.softmax(padded)
            (y, loss), (py, ploss) = _core.softmax_xent_forward(x, labels), _core.softmax_xent_forward(padded, labels)
        for got, want in ((short, long[:, :C]), (y, py[:, :C])):  # NaN where NaN (of either sign), else the bits
            nan = np.isnan(want)
            np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"C={C}")
            np.testing.assert_array_equal(got[~nan].view(np.uint8), want[~nan].view(np.uint8), err_msg=f"C={C}")
        assert (long[:, C:][~np.isnan(long[:, C:])] == 0).all()
        assert loss.tobytes() == ploss.tobytes() or (np.isnan(loss) and np.isnan(ploss))


@pytest.mark.parametrize("n_threads", [1, 2])
def test_softmax_long_float32_rows_sum_in_float64(cpu_path, threads, n_threads):
    """Rows of 2,000,000 floats: the row's sum of exponentials is accumulated in float64 (block
    by block), so the float32 probabilities sum to 1 within 6e-8 here; summed in float32 within
    each block they were off by 3.4e-7. (Fixed data: the kernels are deterministic.)"""
    bpfast.set_num_threads(n_threads)
    x = np.random.default_rng(1).standard_normal((2, 2_000_000)).astype(np.float32)
    y = _core.softmax(x)
    assert np.abs(y.sum(axis=1, dtype=np.float64) - 1).max() < 1.5e-7


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 1), (3, 17), (4, 64), (5, 1000), (9, 33), (3, 5000)], ids=str)
def test_softmax_rows_do_not_mix(cpu_path, dtype, shape):
    """Each row of a batch comes out bit for bit as it does alone (the kernel runs rows in
    chunks and reads ahead into the next row), special values in the neighbours included."""
    x = rng_array(shape, dtype, scale=5)
    x[1, 0] = np.nan
    x[-1, :] = -np.inf
    if shape[0] > 3:
        x[2, -1] = np.inf
    with np.errstate(all="ignore"):
        together = _core.softmax(x)
        for i in range(shape[0]):
            np.testing.assert_array_equal(together[i], _core.softmax(x[i : i + 1])[0], err_msg=f"row {i}")
            y, _ = _core.softmax_xent_forward(x[i : i + 1], np.zeros(1, np.int64))
            np.testing.assert_array_equal(together[i], y[0], err_msg=f"row {i}, softmax_xent_forward")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 16), (4, 17), (65, 10), (2, 1000), (1, 100003), (300, 33)], ids=str)
@pytest.mark.parametrize("target", ["labels", "onehot"])
def test_softmax_xent(cpu_path, dtype, shape, target):
    N, C = shape
    x = rng_array(shape, dtype, scale=4)
    labels = np.random.default_rng(7).integers(0, C, N)
    t = labels if target == "labels" else one_hot(labels, C, dtype)
    y, loss = _core.softmax_xent_forward(x, t)
    ry, rloss = numpy_ref.softmax_xent_forward(x, t)
    ty, tloss = _core._ref.softmax_xent_forward(x, t)
    np.testing.assert_allclose(y, ry, **elementwise_tol(dtype))
    np.testing.assert_allclose(loss, rloss, **elementwise_tol(dtype))
    np.testing.assert_allclose(loss, tloss, rtol=1e-5 if dtype == np.float32 else 1e-13)
    dx = _core.softmax_xent_backward(y, t)
    np.testing.assert_array_equal(dx, numpy_ref.softmax_xent_backward(y, t))  # same operations, same order
    np.testing.assert_array_equal(dx, _core._ref.softmax_xent_backward(y, t))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_special_rows(cpu_path, dtype):
    x = rng_array((4, 19), dtype, scale=3)
    x[0, 3] = 200  # the label's probability 1: log(1 + 1e-7)
    x[1, 4] = 200  # the label's probability ~0: log(1e-7)
    x[2] = -np.inf
    labels = np.array([3, 5, 0, 18])
    with np.errstate(all="ignore"):
        ry, rloss = numpy_ref.softmax_xent_forward(x, labels)
        rfinite = numpy_ref.softmax_xent_forward(x[[0, 1, 3]], labels[[0, 1, 3]])[1]
    y, loss = _core.softmax_xent_forward(x, labels)
    np.testing.assert_allclose(y, ry, equal_nan=True, **elementwise_tol(dtype))
    assert np.isnan(loss) and np.isnan(rloss)
    np.testing.assert_allclose(_core.softmax_xent_forward(x[[0, 1, 3]], labels[[0, 1, 3]])[1], rfinite, rtol=1e-5)
    t = np.zeros((6, 4), dtype)
    t[0, [1, 2]] = 1  # ties: the first max
    t[1, 3] = np.nan  # NaN counts as the max
    t[2, 0] = -1  # all <= 0: index 1 (the first 0)
    t[3] = [np.nan, 0.5, np.nan, 1]  # the first NaN wins, first lane
    t[4] = [0.2, np.nan, 0.9, np.nan]  # ... after a smaller value, before a larger one
    t[5] = [1, 2, 2, np.nan]  # ... after the max
    np.testing.assert_array_equal(t.argmax(axis=1), [1, 3, 1, 0, 1, 3])
    x6 = rng_array((6, 4), dtype)
    for row in range(6):  # each row alone: a wrong label moves the loss by far more than rtol
        got = _core.softmax_xent_forward(x6[row : row + 1], t[row : row + 1])[1]
        np.testing.assert_allclose(got, numpy_ref.softmax_xent_forward(x6[row : row + 1], t[row : row + 1])[1], rtol=1e-5)


# ------------------------------------------------------------------------------ thread counts

@pytest.mark.parametrize("dtype", DTYPES)
def test_results_do_not_depend_on_thread_count(cpu_path, threads, dtype):
    x = rng_array(300_001, dtype, scale=5)
    logits = rng_array((2049, 100), dtype, scale=4)
    labels = np.random.default_rng(3).integers(0, 100, 2049)
    t = one_hot(labels, 100, dtype)
    wide = rng_array((5, 40_000), dtype, scale=4)

    def run():
        dout = rng_array(x.size, dtype, 9)
        out, mask = _core.relu_forward(x)
        _core.relu_backward(dout, mask)
        s = _core.sigmoid_forward(x)
        y, loss = _core.softmax_xent_forward(logits, labels)
        y1, loss1 = _core.softmax_xent_forward(logits, t)
        return [out, mask, dout, s, _core.sigmoid_backward(x, s), _core._exp(x), _core.softmax(logits),
                y, np.array(loss), y1, np.array(loss1), _core.softmax_xent_backward(y, labels),
                _core.softmax_xent_backward(y, t), _core.softmax(wide)]

    results = {}
    for n in (1, 2, 3):
        bpfast.set_num_threads(n)
        results[n] = run()
    for n in (2, 3):
        for a, b in zip(results[1], results[n]):
            assert a.tobytes() == b.tobytes()
