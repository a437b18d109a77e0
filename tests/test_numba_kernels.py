"""The Numba backend against the NumPy reference, op by op, over dtypes, shapes and layouts."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

numba = pytest.importorskip("numba")

from bpfast.backends import numba_kernels as nk  # noqa: E402
from bpfast.backends import numpy_ref as ref  # noqa: E402
from conftest import assert_exp_special_values, assert_exp_within_ulps, assert_matches  # noqa: E402

DTYPES = [np.float32, np.float64]
LAYOUTS = ["contiguous", "strided", "transposed", "readonly", "misaligned"]
AFFINE_SHAPES = [  # (N, D, M)
    (1, 1, 1), (1, 3, 7), (3, 7, 17), (17, 33, 65), (65, 17, 3), (7, 1, 33), (100, 784, 50), (0, 7, 3), (5, 0, 3),
]
ANY_SHAPES = [(1,), (7,), (1, 1), (3, 17), (33, 65), (0, 7), (2, 3, 5), ()]
SOFTMAX_SHAPES = [(1, 1), (1, 10), (3, 7), (17, 33), (65, 3), (100, 10), (0, 10), (4, 1003)]


def over(shapes, layouts=LAYOUTS):
    """Parametrise a test over dtype, shape and layout."""

    def wrap(test):
        test = pytest.mark.parametrize("kind", layouts)(test)
        test = pytest.mark.parametrize("shape", shapes, ids=str)(test)
        return pytest.mark.parametrize("dtype", DTYPES)(test)

    return wrap


def layout(a, kind):
    """A copy of a with the same values, laid out as kind says."""
    a = np.asarray(a)
    if kind == "contiguous":
        return a.copy()
    if kind == "strided":  # every other element of a wider buffer, along the last axis
        if a.ndim == 0:
            return a.copy()
        wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        wide[..., ::2] = a
        return wide[..., ::2]
    if kind == "transposed":  # Fortran order: the transpose of a C array
        return a.T.copy(order="C").T
    if kind == "readonly":
        out = a.copy()
        out.setflags(write=False)
        return out
    if kind == "misaligned":  # one byte past an aligned buffer, read-only like np.frombuffer(bytes)
        return np.frombuffer(b"\0" + a.tobytes(), dtype=a.dtype, offset=1).reshape(a.shape)
    raise AssertionError(kind)


def writable_misaligned(a):
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    out[...] = a
    return out


def check_layout(a, kind):
    if kind == "misaligned" and a.size and a.dtype.itemsize > 1:
        assert not a.flags.aligned
    if kind == "readonly":
        assert not a.flags.writeable
    if kind == "strided" and a.size > 1:
        assert not a.flags.c_contiguous


def tolerance(dtype):
    """(rtol, atol) for elementwise results."""
    return (1e-5, 1e-6) if dtype == np.float32 else (1e-12, 1e-14)


def assert_elementwise(actual, expected, dtype):
    assert actual.dtype == dtype and actual.shape == expected.shape
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def assert_product(actual, expected, magnitude, K, dtype):
    """A matrix product over K terms; magnitude is the product of the absolute values."""
    assert actual.dtype == dtype and actual.shape == expected.shape
    if dtype == np.float64:
        bound = 1e-10 * magnitude
    else:
        bound = 4 * math.sqrt(max(K, 1)) * np.finfo(np.float32).eps * magnitude
    assert np.all(np.abs(actual.astype(np.float64) - expected) <= bound + 1e-30)


def fresh(result, *inputs):
    for arr in inputs:
        assert not np.shares_memory(result, arr)


# ---------------------------------------------------------------------------- exp


@numba.njit
def _exp_each(x, out):
    for i in range(x.shape[0]):
        out[i] = nk._exp(x[i])


def numba_exp(x):
    out = np.empty_like(x)
    _exp_each(x, out)
    return out


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_ulp_sweep(dtype):
    # float64: the Taylor polynomial without FMA rounds last-bit differently more often than float32
    assert_exp_within_ulps(numba_exp, dtype, min_exact=0.9 if dtype == np.float32 else 0.85)


@pytest.mark.parametrize("dtype", DTYPES)
def test_exp_special_values(dtype):
    assert_exp_special_values(numba_exp, dtype)


# ---------------------------------------------------------------------------- Affine


@over(AFFINE_SHAPES)
def test_affine_forward(dtype, shape, kind):
    N, D, M = shape
    rng = np.random.default_rng(1)
    x0, W0, b0 = (rng.standard_normal(s).astype(dtype) for s in ((N, D), (D, M), (M,)))
    x, W, b = layout(x0, kind), layout(W0, kind), layout(b0, kind)
    check_layout(x, kind)
    out = nk.affine_forward(x, W, b)
    expected = ref.affine_forward(x0.astype(np.float64), W0.astype(np.float64), b0.astype(np.float64))
    magnitude = np.abs(x0.astype(np.float64)) @ np.abs(W0.astype(np.float64)) + np.abs(b0)
    assert_product(out, expected, magnitude, D, dtype)
    fresh(out, x, W, b)
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("need_dx", [True, False])
@over(AFFINE_SHAPES)
def test_affine_backward(dtype, shape, kind, need_dx):
    N, D, M = shape
    rng = np.random.default_rng(2)
    d0, x0, W0 = (rng.standard_normal(s).astype(dtype) for s in ((N, M), (N, D), (D, M)))
    dout, x, W = layout(d0, kind), layout(x0, kind), layout(W0, kind)
    dx, dW, db = nk.affine_backward(dout, x, W, need_dx=need_dx)
    e_dx, e_dW, e_db = ref.affine_backward(*(a.astype(np.float64) for a in (d0, x0, W0)))
    a_d, a_x, a_W = (np.abs(a.astype(np.float64)) for a in (d0, x0, W0))
    if need_dx:
        assert_product(dx, e_dx, a_d @ a_W.T, M, dtype)
        fresh(dx, dout, x, W)
    else:
        assert dx is None
    assert_product(dW, e_dW, a_x.T @ a_d, N, dtype)
    assert_product(db, e_db, a_d.sum(axis=0), N, dtype)
    fresh(dW, dout, x, W)
    fresh(db, dout, x, W)
    if N == 0:
        assert not dW.any() and not db.any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_mixed_layouts(dtype):
    rng = np.random.default_rng(3)
    x0, W0, b0, d0 = (rng.standard_normal(s).astype(dtype) for s in ((17, 33), (33, 65), (65,), (17, 65)))
    x, W, b, d = layout(x0, "transposed"), layout(W0, "misaligned"), layout(b0, "strided"), layout(d0, "readonly")
    np.testing.assert_array_equal(nk.affine_forward(x, W, b), nk.affine_forward(x0, W0, b0))
    for got, want in zip(nk.affine_backward(d, x, W), nk.affine_backward(d0, x0, W0)):
        np.testing.assert_array_equal(got, want)


def test_affine_sees_weights_updated_in_place():
    rng = np.random.default_rng(4)
    x, W, b = rng.standard_normal((3, 4)), rng.standard_normal((4, 5)), rng.standard_normal(5)
    nk.affine_forward(x, W, b)
    W -= 0.5
    b += 1.0
    np.testing.assert_allclose(nk.affine_forward(x, W, b), ref.affine_forward(x, W, b), rtol=1e-12)


@pytest.mark.parametrize(
    "shapes",
    [((3, 4), (5, 2), (2,)), ((3, 4), (4, 2), (3,)), ((3, 4), (4, 2), (1, 2)), ((12,), (4, 3), (3,))],
    ids=str,
)
def test_affine_forward_rejects_bad_shapes(shapes):
    x, W, b = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError, match="affine_forward"):
        nk.affine_forward(x, W, b)


def test_affine_backward_rejects_bad_shapes():
    with pytest.raises(ValueError, match="affine_backward"):
        nk.affine_backward(np.zeros((3, 2)), np.zeros((4, 4)), np.zeros((4, 2)))


# ---------------------------------------------------------------------------- ReLU


def relu_input(shape, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    if x.size:
        x.flat[:: max(1, x.size // 3)] = 0  # zeros are masked (x <= 0)
    return x


@over(ANY_SHAPES)
def test_relu_forward(dtype, shape, kind):
    x0 = relu_input(shape, dtype, np.random.default_rng(5))
    x = layout(x0, kind)
    out, mask = nk.relu_forward(x)
    e_out, e_mask = ref.relu_forward(x0)
    assert mask.dtype == np.bool_ and mask.shape == shape
    np.testing.assert_array_equal(mask, e_mask)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_array_equal(out, e_out)
    fresh(out, x)
    fresh(mask, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_forward_nan_inf(dtype):
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 0.0, -1.0, 2.0], dtype)
    out, mask = nk.relu_forward(x)
    e_out, e_mask = ref.relu_forward(x)
    np.testing.assert_array_equal(mask, e_mask)
    np.testing.assert_array_equal(out, e_out)  # NaN stays NaN and is not masked
    assert np.isnan(out[0]) and not mask[0]
    assert not np.signbit(out[3])


@over(ANY_SHAPES, ["contiguous", "strided", "transposed", "misaligned"])
def test_relu_backward_in_place(dtype, shape, kind):
    rng = np.random.default_rng(6)
    _, mask0 = ref.relu_forward(relu_input(shape, dtype, rng))
    d0 = rng.standard_normal(shape).astype(dtype)
    dout = writable_misaligned(d0) if kind == "misaligned" else layout(d0, kind)
    mask = layout(mask0, "strided" if kind == "contiguous" else "contiguous")
    expected = d0.copy()
    ref.relu_backward(expected, mask0)
    assert nk.relu_backward(dout, mask) is None
    np.testing.assert_array_equal(dout, expected)


def test_relu_backward_writes_through_a_view():
    base = np.arange(1.0, 13.0).reshape(3, 4)
    view = base[:, 1:3]
    nk.relu_backward(view, np.array([[True, False]] * 3))
    np.testing.assert_array_equal(base[:, 1], 0)
    np.testing.assert_array_equal(base[:, 2], [3.0, 7.0, 11.0])


@pytest.mark.parametrize("kind", ["readonly", "misaligned"])
def test_relu_backward_never_writes_read_only(kind):
    dout = layout(np.ones((2, 3)), kind)
    with pytest.raises(ValueError):
        nk.relu_backward(dout, np.ones((2, 3), bool))
    np.testing.assert_array_equal(dout, 1.0)


def test_relu_backward_rejects_bad_mask():
    with pytest.raises(ValueError, match="relu_backward"):
        nk.relu_backward(np.ones((2, 3)), np.ones((3, 2), bool))
    with pytest.raises(ValueError, match="bool"):
        nk.relu_backward(np.ones(3), np.ones(3))


# ---------------------------------------------------------------------------- Sigmoid


@over(ANY_SHAPES)
def test_sigmoid(dtype, shape, kind):
    rng = np.random.default_rng(7)
    x0 = (4 * rng.standard_normal(shape)).astype(dtype)
    d0 = rng.standard_normal(shape).astype(dtype)
    x = layout(x0, kind)
    out = nk.sigmoid_forward(x)
    assert_elementwise(out, ref.sigmoid_forward(x0), dtype)
    fresh(out, x)
    y0 = ref.sigmoid_forward(x0)
    dx = nk.sigmoid_backward(layout(d0, kind), layout(y0, kind))
    assert_sigmoid_backward(dx, d0, y0)


def assert_sigmoid_backward(dx, dout, out):
    """dx against the reference's dout·(1 - out)·out from the same out: within the dtype's rtol of
    it plus |dout|·out (1 - out cancels only near out = 1), so a tiny out still counts."""
    scale = np.abs(dout.astype(np.float64)) * out + np.finfo(out.dtype).tiny  # the floor: subnormal results
    assert_matches(dx, ref.sigmoid_backward(dout, out), scale=scale, what="sigmoid_backward")


# Where sigmoid is 0, subnormal (x = -88.5 in float32, -709.5 in float64), tiny, 1/2, near 1 and 1.
TAILS = [-1000.0, -709.5, -700.0, -88.5, -80.0, -30.0, 0.0, 15.0, 30.0, 100.0, 700.0, 1000.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes(dtype):
    x = np.array(TAILS + [np.inf, -np.inf, np.nan], dtype)
    np.testing.assert_array_equal(nk.sigmoid_forward(x), ref.sigmoid_forward(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_backward_tails(dtype):
    """out = sigmoid(x) far out: tiny or subnormal (x < 0) or 1 - out tiny or 0 (x > 0)."""
    x = np.array(TAILS, dtype)
    out = ref.sigmoid_forward(x)
    assert (out[x < 0] < 1e-13).all() and ((out > 0) & (out < np.finfo(dtype).tiny)).any()
    dout = np.random.default_rng(11).standard_normal(out.shape).astype(dtype)
    assert_sigmoid_backward(nk.sigmoid_backward(dout, out), dout, out)


def test_sigmoid_backward_rejects_bad_shapes():
    with pytest.raises(ValueError, match="sigmoid_backward"):
        nk.sigmoid_backward(np.ones(3), np.ones(4))


# ---------------------------------------------------------------------------- Softmax and loss


def logits(shape, dtype, rng, scale=3.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


@over(SOFTMAX_SHAPES)
def test_softmax(dtype, shape, kind):
    x0 = logits(shape, dtype, np.random.default_rng(8))
    x = layout(x0, kind)
    y = nk.softmax(x)
    assert_elementwise(y, ref.softmax(x0), dtype)
    fresh(y, x)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_large_and_non_finite(dtype):
    x = np.array(
        [[1000.0, 999.0, -1000.0], [np.inf, 0.0, 1.0], [-np.inf, 0.0, 1.0], [np.nan, 0.0, 1.0], [-np.inf] * 3], dtype
    )
    with np.errstate(invalid="ignore"):
        expected = ref.softmax(x)
    y = nk.softmax(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    assert np.isnan(y[1]).all()  # a row with +inf is NaN, like the reference
    assert_elementwise(y, expected, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("column", [0, 5, 7, 8, 15, 16, 18])
def test_softmax_non_finite_in_any_column(dtype, column):
    """Rows of 19: the row maximum runs eight lanes over 16 columns, then a tail of 3."""
    rng = np.random.default_rng(column)
    x = logits((6, 19), dtype, rng)
    x[0, column] = np.nan
    x[1, column] = np.inf
    x[2, column] = -np.inf
    x[3, column] = 50.0  # the maximum, in this column
    x[4, :] = -np.inf
    x[5, column] = np.finfo(dtype).max
    with np.errstate(invalid="ignore", over="ignore"):
        expected = ref.softmax(x)
    y = nk.softmax(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    assert np.isnan(y[[0, 1, 4]]).all()
    assert_elementwise(y, expected, dtype)


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "onehot"])
@over(SOFTMAX_SHAPES)
def test_softmax_xent(dtype, shape, kind, onehot):
    rng = np.random.default_rng(9)
    N, C = shape
    x0 = logits(shape, dtype, rng)
    labels = rng.integers(0, C, N)
    t0 = np.eye(C, dtype=dtype)[labels] if onehot else labels
    x, t = layout(x0, kind), layout(t0, kind)
    with np.errstate(invalid="ignore"):  # the reference's 0/0 for an empty batch
        e_y, e_loss = ref.softmax_xent_forward(x0, t0)
    y, loss = nk.softmax_xent_forward(x, t)
    assert_elementwise(y, e_y, dtype)
    assert type(loss) is np.dtype(dtype).type
    if N:
        rtol = 1e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(loss, e_loss, rtol=rtol)
    else:
        assert np.isnan(loss)
    fresh(y, x)
    dx = nk.softmax_xent_backward(layout(e_y, kind), t)
    assert_elementwise(dx, ref.softmax_xent_backward(e_y, t0), dtype)
    fresh(dx, y, t)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_xent_onehot_ties_and_nan_take_numpy_argmax(dtype):
    x = logits((4, 3), dtype, np.random.default_rng(10))
    t = np.array([[0, 1, 1], [1, 1, 1], [0.2, np.nan, 0.9], [np.nan, 0.5, np.nan]], dtype)
    y, loss = nk.softmax_xent_forward(x, t)
    labels = t.argmax(axis=1)
    np.testing.assert_array_equal(labels, [1, 0, 1, 0])
    _, e_loss = ref.softmax_xent_forward(x, labels)
    np.testing.assert_allclose(loss, e_loss, rtol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("label", [-1, 3, 2**40])
@pytest.mark.parametrize("fn", [nk.softmax_xent_forward, nk.softmax_xent_backward], ids=lambda f: f.__name__)
def test_softmax_xent_labels_out_of_range_raise(fn, label):
    with pytest.raises(ValueError, match="label out of range"):
        fn(np.zeros((2, 3)), np.array([0, label]))


@pytest.mark.parametrize("fn", [nk.softmax_xent_forward, nk.softmax_xent_backward], ids=lambda f: f.__name__)
@pytest.mark.parametrize("xshape, tshape", [((2, 3), (3,)), ((2, 3), (2, 2)), ((6,), (6,)), ((2, 0), (2,))], ids=str)
def test_softmax_xent_rejects_bad_shapes(fn, xshape, tshape):
    with pytest.raises(ValueError, match=fn.__name__):
        fn(np.zeros(xshape), np.zeros(tshape, np.int64 if len(tshape) == 1 else np.float64))


def test_softmax_rejects_bad_shapes():
    for shape in [(3,), (2, 0), (2, 3, 4)]:
        with pytest.raises(ValueError, match="softmax"):
            nk.softmax(np.zeros(shape))


# ---------------------------------------------------------------------------- Backend-wide


def test_interface_matches_the_reference():
    import inspect

    assert nk.name == "numba"
    public = {n for n, v in vars(ref).items() if inspect.isfunction(v) and not n.startswith("_")}
    for fn in sorted(public):
        assert inspect.signature(getattr(nk, fn)) == inspect.signature(getattr(ref, fn)), fn


def test_rejects_other_dtypes():
    with pytest.raises(TypeError, match="float32 or float64"):
        nk.relu_forward(np.ones(3, np.float16))


def test_one_specialisation_per_dtype_whatever_the_flags():
    x = np.arange(-3.0, 4.0)
    for kind in LAYOUTS:
        nk.relu_forward(layout(x, kind))
    assert len(nk._relu_forward[np.dtype(np.float64)].overloads) == 1


def test_second_process_loads_the_cache(tmp_path):
    script = (
        "import numpy as np\n"
        "from bpfast.backends import numba_kernels as nk\n"
        "nk.affine_forward(np.ones((2, 3)), np.ones((3, 4)), np.ones(4))\n"
        "stats = nk._affine_forward[np.dtype(np.float64)].stats\n"
        "print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))\n"
    )
    python_dir = Path(nk.__file__).resolve().parents[2]
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path), PYTHONPATH=str(python_dir))

    def run():
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True)
        return tuple(int(v) for v in done.stdout.split())

    assert run()[0] == 0
    assert run()[0] >= 1
