"""Every op × dtype × backend against the NumPy reference and the book's formulas.

Shapes: batch 1, sizes that are not multiples of 8 or 16, K=1, empty batches, 4-D
Affine input. Layouts: contiguous, transposed, strided, negative strides, read-only,
misaligned. Mixed dtypes follow NumPy promotion.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import DTYPES, LAYOUTS, Book, arrange, assert_matches, labels, normal, one_hot, oracle

import bpfast
from bpfast import functions as F
from bpfast.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss

dtype_param = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
layout_param = pytest.mark.parametrize("layout", LAYOUTS)

# (N, D, M): batch 1, K=1, sizes 1, 3, 7, 17, 33, 65, 129, empty batches.
AFFINE_SHAPES = [
    (1, 1, 1),
    (1, 3, 7),
    (3, 1, 5),
    (7, 17, 33),
    (17, 33, 65),
    (33, 65, 129),
    (65, 129, 17),
    (129, 7, 3),
    (0, 5, 3),
    (0, 1, 1),
    (100, 784, 50),  # the book's first layer
    (260, 300, 140),  # more than one GEMM block (MC=112-128, KC=256) each way on the generic and AVX2 paths
    (19, 2100, 37),  # several K blocks on the AVX-512 path too (KC=2048 float32, 1024 float64)
]
# Shapes for elementwise ops and softmax: 1-D, 2-D (batch 1, awkward sizes, empty), N-D.
ELEMENTWISE_SHAPES = [(1,), (7,), (129,), (1, 1), (1, 17), (3, 33), (17, 65), (65, 129), (0, 7), (2, 3, 5), (4, 1, 3, 7)]
SOFTMAX_SHAPES = [(1,), (3,), (129,), (1, 1), (1, 7), (3, 17), (17, 33), (33, 65), (7, 129), (0, 3), (2, 3, 5), (2, 1, 4, 9)]
# C=1 is left out: the book's ``t.size == y.size`` then takes labels for one-hot.
LOSS_SHAPES = [(1, 2), (1, 10), (3, 3), (7, 17), (17, 33), (65, 10), (33, 129)]


def affine_run(x, W, b, dout):
    layer = Affine(W, b)
    out = layer.forward(x)
    dx = layer.backward(dout)
    return out, dx, layer.dW, layer.db


def affine_checks(x, W, b, dout):
    """Tolerances for (out, dx, dW, db): products of K terms scaled by |a|·|b|."""
    n, d, m = x.shape[0], W.shape[0], W.shape[1]
    ax, aw, ad = (np.abs(np.asarray(a, dtype=np.float64)).reshape(a.shape[0], int(np.prod(a.shape[1:]))) for a in (x, W, dout))
    return (
        {"k": d, "scale": ax @ aw + np.abs(np.asarray(b, dtype=np.float64)).reshape(-1)},
        {"k": m, "scale": (ad @ aw.T).reshape(x.shape)},
        {"k": n, "scale": ax.T @ ad},
        {"k": n, "scale": ad.sum(axis=0)},
    )


def check_affine(make):
    inputs = make()
    return oracle(make, affine_run, Book.affine, affine_checks(*inputs))


@pytest.mark.parametrize("bias", ["(M,)", "(1,M)"])
@pytest.mark.parametrize("shape", AFFINE_SHAPES, ids=str)
@dtype_param
def test_affine_shapes(backend, shape, dtype, bias):
    n, d, m = shape

    def make():
        b = normal(3, (m,) if bias == "(M,)" else (1, m), dtype)
        return normal(1, (n, d), dtype), normal(2, (d, m), dtype), b, normal(4, (n, m), dtype)

    out, dx, dW, db = check_affine(make)
    assert out.shape == (n, m) and dx.shape == (n, d) and dW.shape == (d, m) and db.shape == (m,)


@layout_param
@dtype_param
def test_affine_layouts(backend, layout, dtype):
    n, d, m = 17, 33, 65

    def make():
        return (
            normal(1, (n, d), dtype, layout),
            normal(2, (d, m), dtype, layout),
            normal(3, (m,), dtype, layout),
            normal(4, (n, m), dtype, layout),
        )

    check_affine(make)


@dtype_param
def test_affine_transposed_input(backend, dtype):
    """x is the transpose of a (D, N) array: the book's x.T case."""

    def make():
        xt = normal(1, (65, 7), dtype)
        return xt.T, normal(2, (65, 3), dtype), normal(3, (3,), dtype), normal(4, (7, 3), dtype)

    check_affine(make)


@pytest.mark.parametrize("n", [1, 3, 0])
@dtype_param
def test_affine_4d_input(backend, dtype, n):
    """(N, 1, 28, 28) input is flattened to (N, 784); dx comes back as (N, 1, 28, 28)."""

    def make():
        return normal(1, (n, 1, 28, 28), dtype), normal(2, (784, 10), dtype), normal(3, (10,), dtype), normal(4, (n, 10), dtype)

    out, dx, _, _ = check_affine(make)
    assert out.shape == (n, 10)
    assert dx.shape == (n, 1, 28, 28)


MIXED_AFFINE = [
    # (x, W, b, dout) dtypes
    (np.float32, np.float64, np.float64, np.float64),
    (np.float64, np.float32, np.float32, np.float64),
    (np.float32, np.float32, np.float64, np.float32),
    (np.float32, np.float32, np.float32, np.float64),
    (np.int64, np.float32, np.float32, np.float32),
    (np.int32, np.float64, np.float64, np.float64),
    (np.uint8, np.float32, np.float32, np.float32),
    (np.float16, np.float16, np.float16, np.float16),
    (np.float16, np.float32, np.float32, np.float32),
    (np.float32, np.float32, np.float32, np.int32),
    (np.int64, np.int64, np.int64, np.int64),
    (np.int32, np.float32, np.float32, np.float32),  # float64 results: NumPy's int32 with float32
    (np.uint32, np.float32, np.float32, np.float32),
]


@pytest.mark.parametrize("dtypes", MIXED_AFFINE, ids=lambda ds: "-".join(np.dtype(d).name for d in ds))
def test_affine_mixed_dtypes(backend, dtypes):
    """Result dtypes are what the book's NumPy formulas give; values match them."""
    tx, tw, tb, td = dtypes

    def values(seed, shape, dtype):
        a = np.random.default_rng(seed).standard_normal(shape) * (4 if np.dtype(dtype).kind in "iu" else 1)
        return np.abs(a).astype(dtype) if np.dtype(dtype).kind == "u" else a.astype(dtype)

    def make():
        return values(1, (5, 7), tx), values(2, (7, 3), tw), values(3, (3,), tb), values(4, (5, 3), td)

    x, W, b, dout = make()
    got = affine_run(*make())
    expected = Book.affine(*make())
    # Each product is as precise as NumPy's dtype for its two operands (x·W in float32 when
    # both are float32, even if b makes the result float64); float64 means computed in float64.
    operands = ((x, W), (dout, W), (x, dout), (dout, dout))
    for g, e, options, pair in zip(got, expected, affine_checks(x, W, b, dout), operands):
        # float16 and integer results have no kernel: the reference computes them, exactly.
        if np.dtype(e.dtype) in (np.float32, np.float64):
            assert_matches(g, e, tol_dtype=np.result_type(*pair, np.float32), **options)
        else:
            assert_matches(g, e, exact=True)


# --- Relu ---


def relu_run(x, dout):
    layer = Relu()
    out = layer.forward(x)
    dx = layer.backward(dout)
    assert dx is dout, "Relu.backward must return dout itself, zeroed in place"
    return out, layer.mask, dx


def relu_inputs(shape, dtype, layout="contiguous"):
    dout_layout = "contiguous" if layout == "readonly" else layout  # backward writes into dout

    def make():
        x = normal(1, shape, dtype)
        if x.size:
            x.flat[:: max(1, x.size // 5)] = 0  # exact zeros: the mask is x <= 0
        return arrange(x, layout), normal(2, shape, dtype, dout_layout)

    return make


EXACT3 = ({"exact": True},) * 3


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@dtype_param
def test_relu_layer_shapes(backend, shape, dtype):
    oracle(relu_inputs(shape, dtype), relu_run, Book.relu_layer, EXACT3)


@layout_param
@dtype_param
def test_relu_layer_layouts(backend, layout, dtype):
    oracle(relu_inputs((17, 33), dtype, layout), relu_run, Book.relu_layer, EXACT3)


# --- Sigmoid ---


def sigmoid_run(x, dout):
    layer = Sigmoid()
    out = layer.forward(x)
    return out, layer.backward(dout)


SIGMOID_CHECKS = ({}, {"scale": 1.0})  # dx = dout·(1-out)·out cancels near out = 1


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@dtype_param
def test_sigmoid_layer_shapes(backend, shape, dtype):
    oracle(lambda: (normal(1, shape, dtype) * 4, normal(2, shape, dtype)), sigmoid_run, Book.sigmoid_layer, SIGMOID_CHECKS)


@layout_param
@dtype_param
def test_sigmoid_layer_layouts(backend, layout, dtype):
    def make():
        return normal(1, (17, 33), dtype, layout), normal(2, (17, 33), dtype, layout)

    oracle(make, sigmoid_run, Book.sigmoid_layer, SIGMOID_CHECKS)


# --- Functions of one array ---

ELEMENTWISE_FUNCTIONS = {
    "sigmoid": (F.sigmoid, Book.sigmoid, {}),
    "sigmoid_grad": (F.sigmoid_grad, Book.sigmoid_grad, {"scale": 1.0}),
    "relu": (F.relu, Book.relu, {"exact": True}),
    "relu_grad": (F.relu_grad, Book.relu_grad, {"exact": True}),
    "step_function": (F.step_function, Book.step_function, {"exact": True}),
    "identity_function": (F.identity_function, lambda x: x, {"exact": True}),
    "softmax": (F.softmax, Book.softmax, {}),
}
function_param = pytest.mark.parametrize("name", list(ELEMENTWISE_FUNCTIONS))


def check_function(name, make):
    api, book, options = ELEMENTWISE_FUNCTIONS[name]
    return oracle(make, lambda x: (api(x),), lambda x: (book(x),), (options,))


@pytest.mark.parametrize("shape", ELEMENTWISE_SHAPES, ids=str)
@dtype_param
@function_param
def test_function_shapes(backend, name, shape, dtype):
    if name == "softmax" and shape[-1] == 0:
        pytest.skip("softmax of an empty last axis is a bad input (test_bad_inputs)")

    def make():
        x = normal(1, shape, dtype) * 3
        if x.size:
            x.flat[:: max(1, x.size // 4)] = 0
        return (x,)

    check_function(name, make)


@layout_param
@dtype_param
@function_param
def test_function_layouts(backend, name, layout, dtype):
    check_function(name, lambda: (normal(1, (17, 33), dtype, layout) * 3,))


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
@dtype_param
def test_softmax_shapes(backend, shape, dtype):
    (y,) = check_function("softmax", lambda: (normal(1, shape, dtype) * 5,))
    np.testing.assert_allclose(y.sum(axis=-1), 1, rtol=1e-5 if dtype == np.float32 else 1e-12)


INPUT_DTYPES = [np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_]


@pytest.mark.parametrize("in_dtype", INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
@function_param
def test_function_input_dtypes(backend, name, in_dtype):
    """float16 and integer input give what NumPy gives, dtype included (float16 stays float16)."""
    if in_dtype is np.bool_ and name in ("softmax", "sigmoid", "sigmoid_grad"):
        pytest.skip("NumPy cannot negate or subtract booleans: the book's formula fails on them")
    if in_dtype is np.uint8 and name == "softmax":
        pytest.skip("the book's x - max wraps around in uint8")
    x = (np.random.default_rng(1).standard_normal((3, 7)) * 3).astype(in_dtype)
    api, book, _ = ELEMENTWISE_FUNCTIONS[name]
    got = api(x)
    expected = book(x)
    assert_matches(got, expected, k=7 if name == "softmax" else None, scale=1.0)


# --- Losses ---

targets_param = pytest.mark.parametrize("target", ["labels", "one-hot"])


def loss_inputs(shape, dtype, target, scale=3.0, layout="contiguous"):
    n, c = shape

    def make():
        t = labels(2, n, c)
        if target == "one-hot":
            t = one_hot(t, c, dtype)
        return normal(1, shape, dtype, layout) * scale, arrange(t, layout)

    return make


def softmax_with_loss_run(x, t):
    layer = SoftmaxWithLoss()
    loss = layer.forward(x, t)
    return loss, layer.y, layer.backward()


def loss_checks(n, c, tol_dtype=None):
    # loss sums n logs; dx = (y - t)/N cancels where y is near 1.
    return ({"k": max(n, c)}, {}, {"scale": 1.0 / n, "tol_dtype": tol_dtype})


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@targets_param
@dtype_param
def test_softmax_with_loss_shapes(backend, shape, dtype, target):
    loss, y, dx = oracle(loss_inputs(shape, dtype, target), softmax_with_loss_run, Book.softmax_with_loss, loss_checks(*shape))
    assert np.ndim(loss) == 0 and dx.shape == shape


@layout_param
@targets_param
@dtype_param
def test_softmax_with_loss_layouts(backend, layout, dtype, target):
    shape = (17, 33)
    oracle(loss_inputs(shape, dtype, target, layout=layout), softmax_with_loss_run, Book.softmax_with_loss, loss_checks(*shape))


@pytest.mark.parametrize("t_dtype", [np.int64, np.int32, np.uint8, np.float32, np.float64], ids=lambda d: np.dtype(d).name)
@dtype_param
def test_softmax_with_loss_target_dtypes(backend, dtype, t_dtype):
    """Labels of any integer dtype; one-hot of another dtype promotes dx as (y - t)/N does."""
    n, c = 5, 7
    kind = "labels" if np.dtype(t_dtype).kind in "iu" else "one-hot"

    def make():
        t = labels(2, n, c)
        t = t.astype(t_dtype) if kind == "labels" else one_hot(t, c, t_dtype)
        return normal(1, (n, c), dtype) * 3, t

    # dx may be float64 (float64 one-hot), but y was rounded in x's dtype.
    oracle(make, softmax_with_loss_run, Book.softmax_with_loss, loss_checks(n, c, tol_dtype=dtype))


@pytest.mark.parametrize("shape", LOSS_SHAPES, ids=str)
@targets_param
@dtype_param
def test_softmax_loss_and_cross_entropy(backend, shape, dtype, target):
    n, c = shape
    make = loss_inputs(shape, dtype, target)
    options = ({"k": n},)
    oracle(make, lambda x, t: (F.softmax_loss(x, t),), lambda x, t: (Book.softmax_loss(x, t),), options)

    def make_probabilities():
        x, t = make()
        return Book.softmax(x), t

    oracle(
        make_probabilities,
        lambda y, t: (F.cross_entropy_error(y, t),),
        lambda y, t: (Book.cross_entropy_error(y, t),),
        options,
    )


@targets_param
@dtype_param
def test_losses_of_one_sample(backend, dtype, target):
    """1-D y is a batch of one (the book reshapes it to (1, C))."""
    c = 10
    y = Book.softmax(normal(1, (c,), dtype))
    t = np.int64(3) if target == "labels" else one_hot([3], c, dtype)[0]
    expected = Book.cross_entropy_error(y, t)
    assert_matches(F.cross_entropy_error(y, t), expected)
    assert_matches(F.softmax_loss(normal(1, (c,), dtype), t), expected, k=c)


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 17), (2, 3, 5)], ids=str)
@dtype_param
def test_sum_squared_error(backend, shape, dtype):
    make = lambda: (normal(1, shape, dtype), normal(2, shape, dtype))  # noqa: E731
    size = int(np.prod(shape))
    for api in (F.sum_squared_error, F.mean_squared_error):
        oracle(make, lambda y, t: (api(y, t),), lambda y, t: (Book.sum_squared_error(y, t),), ({"k": size},))


# --- Large logits, NaN and inf ---


@pytest.mark.parametrize("big", [1000.0, 1e4])
@dtype_param
def test_softmax_large_logits_without_warnings(backend, dtype, big):
    """Softmax and the loss stay finite for large logits and raise no warnings (filterwarnings=error)."""
    x = np.array([[big, big + 1, big + 2], [big, 0.0, -big], [-big, -big, -big]], dtype=dtype)
    expected = Book.softmax(x.astype(np.float64)).astype(dtype)
    y = F.softmax(x)
    assert_matches(y, expected)
    assert np.isfinite(y).all()
    t = np.array([2, 0, 1])
    loss, y2, dx = softmax_with_loss_run(x, t)
    assert np.isfinite(loss) and np.isfinite(dx).all()
    assert_matches(loss, Book.softmax_with_loss(x, t)[0], k=3)


SPECIAL_ROWS = np.array(
    [
        [np.nan, 1.0, 2.0],
        [np.inf, 1.0, 2.0],
        [-np.inf, 1.0, 2.0],
        [np.inf, np.inf, 1.0],
        [-np.inf, -np.inf, -np.inf],
        [np.inf, -np.inf, 0.0],
        [np.nan, np.nan, np.nan],
        [0.0, 1.0, 2.0],
    ]
)


def quietly(function, *args):
    """The value NumPy gives, without its invalid/overflow warnings (which backends need not raise)."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        return function(*args)


@pytest.mark.parametrize(
    "name", ["softmax", "sigmoid", "relu", "sigmoid_grad", "relu_grad", "step_function"]
)
@dtype_param
def test_nan_and_inf_give_what_numpy_gives(backend, name, dtype):
    api, book, _ = ELEMENTWISE_FUNCTIONS[name]
    x = SPECIAL_ROWS.astype(dtype)
    expected = quietly(book, x)
    got = quietly(api, x)
    assert_matches(got, expected, scale=1.0)


@dtype_param
def test_nan_and_inf_in_layers(backend, dtype):
    x = SPECIAL_ROWS.astype(dtype)
    dout = np.ones_like(x)
    out, mask, dx = quietly(relu_run, x, dout.copy())
    e_out, e_mask, e_dx = Book.relu_layer(x, dout)
    assert_matches(out, e_out, exact=True)
    assert_matches(mask, e_mask, exact=True)
    assert_matches(dx, e_dx, exact=True)
    for got, expected in zip(quietly(sigmoid_run, x, dout), quietly(Book.sigmoid_layer, x, dout)):
        assert_matches(got, expected, scale=1.0)


@pytest.mark.parametrize("backend", ["cpp", "numba"], indirect=True)  # not the reference: see below
@pytest.mark.parametrize("special", [np.nan, np.inf])
@pytest.mark.parametrize("n, d, m", [(1, 5, 1), (1, 1, 4), (2, 5, 1), (1, 5, 2)], ids=str)
@dtype_param
def test_zero_times_nan_in_affine_is_nan(backend, dtype, n, d, m, special):
    """IEEE's 0 · NaN and 0 · inf are NaN, in every product of Affine, whatever the shapes.

    NumPy's np.dot takes a 1x1 operand as a scalar and scales the other by it with BLAS's axpy,
    which skips a scale of 0: the numpy reference (the book's formulas) gives 0 there, so
    dx is 0 for a (1, 1) dout of 0 and a NaN in W, while a (2, 1) or (1, 2) dout gives NaN.
    The compiled and Numba backends give NaN for every shape; the property tests leave these
    products of a 1x1 operand with special values out (test_properties.affine_cases)."""
    W = np.ones((d, m), dtype)
    W[d // 2, 0] = special
    x = np.zeros((n, d), dtype)
    layer = Affine(W, np.zeros(m, dtype))
    out = layer.forward(x)
    dx = layer.backward(np.zeros((n, m), dtype))
    assert np.isnan(out[:, 0]).all() and np.isfinite(out[:, 1:]).all()  # x · W: 0 · special
    assert np.isnan(dx[:, d // 2]).all() and (np.delete(dx, d // 2, axis=1) == 0).all()  # dout · Wᵀ
    layer.forward(np.full((n, d), special, dtype))
    layer.backward(np.zeros((n, m), dtype))
    assert np.isnan(layer.dW).all()  # xᵀ · dout: special · 0


def test_numpy_backend_is_the_reference():
    """The oracle helper compares against ``use_backend("numpy")``; make sure it is numpy_ref."""
    from bpfast.backends import numpy_ref

    with bpfast.use_backend("numpy"):
        from bpfast._backend import current

        assert current() is numpy_ref
