"""Bad inputs, one table (PyTorch's ``error_inputs`` style): every row on every backend.

Each row names a call, its arguments, the exception type and a pattern its message must
match. Where the book crashes or silently does the wrong thing, bpfast answers clearly.
"""

from __future__ import annotations

import re
import time
import warnings
from fractions import Fraction
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest

import bpfast
from conftest import DTYPES, normal

from bpfast import functions as F
from bpfast.gradient import numerical_gradient
from bpfast.layers import Affine, MulLayer, Relu, Sigmoid, SoftmaxWithLoss
from bpfast.nets import TwoLayerNet


class BadInput(NamedTuple):
    name: str
    call: Callable[..., Any]
    args: tuple
    error: type[Exception]
    match: str


def swl_forward(x, t):
    return SoftmaxWithLoss().forward(x, t)


def affine_forward(x, W, b):
    return Affine(W, b).forward(x)


def affine_backward(x, W, b, dout):
    layer = Affine(W, b)
    layer.forward(x)
    return layer.backward(dout)


def after_forward(layer_type, x, dout):
    layer = layer_type()
    layer.forward(x)
    return layer.backward(dout)


def backward_only(layer):
    return layer.backward(np.ones((2, 3)))


def shapes(*shapes_) -> str:
    """A pattern matching a message that names all these shapes, in order."""
    return ".*".join(re.escape(str(s)) for s in shapes_)


X23 = np.arange(6, dtype=np.float64).reshape(2, 3)
W35 = np.ones((3, 5))
B5 = np.zeros(5)
OBJECTS = np.array([[object(), 1.0]], dtype=object)
MASKED = np.ma.masked_array(X23, mask=[[False, True, False], [False, False, False]])
READ_ONLY = np.ones((2, 3))
READ_ONLY.flags.writeable = False
LOSSES = {"SoftmaxWithLoss": swl_forward, "cross_entropy_error": F.cross_entropy_error, "softmax_loss": F.softmax_loss}

def net_call(method, *args):
    """``method`` of a fresh, seeded 4-5-3 TwoLayerNet called with ``args``."""
    np.random.seed(0)
    return getattr(TwoLayerNet(4, 5, 3), method)(*args)


def no_class_net_call(method, *args):
    """``method`` of a 4-5-0 TwoLayerNet: a net of no classes, whose loss is undefined."""
    return getattr(TwoLayerNet(4, 5, 0), method)(*args)


def read_only_param_step(x, t):
    """A net whose W2 is read-only refuses the step before it updates W1 and b1."""
    net = TwoLayerNet(4, 5, 3)
    before = {key: value.copy() for key, value in net.params.items()}
    net.params["W2"].flags.writeable = False
    try:
        return net.train_step(x, t, 0.1)
    finally:
        for key, value in before.items():
            np.testing.assert_array_equal(net.params[key], value, err_msg=key)


X34 = np.linspace(-1, 1, 12).reshape(3, 4)
T3 = np.array([0, 1, 2])
# Labels beyond 2**31 and 2**32, unsigned and narrow: every label is checked as what it is,
# never truncated to 32 bits before the range check.
HUGE_LABELS = {
    "2**31": (np.array([0, 2**31, 1]), r"label 2147483648 at index 1 .*outside \[0, 3\)"),
    "2**32+1": (np.array([0, 1, 2**32 + 1]), r"label 4294967297 at index 2 .*outside \[0, 3\)"),
    "-2**63": (np.array([np.iinfo(np.int64).min, 0, 1]), r"label -9223372036854775808 at index 0"),
    "uint64-max": (np.array([0, 1, 2**64 - 1], dtype=np.uint64), r"label 18446744073709551615 at index 2"),
    "int8-negative": (np.array([0, -1, 2], dtype=np.int8), r"label -1 at index 1"),
    "big-endian": (np.array([0, 3, 1], dtype=">i8"), r"label 3 at index 1"),
}
NET_ROWS = [
    *(
        BadInput(f"TwoLayerNet.{method}-labels-{name}", net_call, (method, X34, t), ValueError, pattern)
        for method in ("loss", "gradient", "numerical_gradient")
        for name, (t, pattern) in HUGE_LABELS.items()
    ),
    *(
        BadInput(f"TwoLayerNet.train_step-labels-{name}", net_call, ("train_step", X34, t, 0.1), ValueError, pattern)
        for name, (t, pattern) in HUGE_LABELS.items()
    ),
    BadInput("TwoLayerNet.gradient-bool-labels", net_call, ("gradient", X34, T3 > 0), TypeError, r"labels must be integers.*bool"),
    BadInput("TwoLayerNet.gradient-x-vs-W1", net_call, ("gradient", np.ones((3, 5)), T3), ValueError, shapes((3, 5), (4, 5))),
    BadInput("TwoLayerNet.gradient-x-1d", net_call, ("gradient", np.ones(4), T3[:1]), ValueError, shapes((4,), (4, 5))),
    BadInput("TwoLayerNet.gradient-x-none", net_call, ("gradient", None, T3), TypeError, r"x must be a numeric array"),
    BadInput("TwoLayerNet.gradient-empty", net_call, ("gradient", np.ones((0, 4)), T3[:0]), ValueError, r"empty batch"),
    BadInput("TwoLayerNet.gradient-onehot", net_call, ("gradient", X34, np.eye(4)[:3]), ValueError, shapes((3, 3), (3, 4))),
    BadInput("TwoLayerNet.predict-strings", net_call, ("predict", np.array([["a"] * 4])), TypeError, r"real numeric array"),
    BadInput("TwoLayerNet.train_step-lr-string", net_call, ("train_step", X34, T3, "0.1"), TypeError, r"lr must be a real number.*got str"),
    BadInput("TwoLayerNet.train_step-lr-bool", net_call, ("train_step", X34, T3, True), TypeError, r"lr must be a real number.*got bool"),
    BadInput("TwoLayerNet.train_step-lr-fraction", net_call, ("train_step", X34, T3, Fraction(1, 10)), TypeError, r"got Fraction"),
    BadInput("TwoLayerNet.train_step-lr-1d", net_call, ("train_step", X34, T3, np.array([0.1])), TypeError, r"got ndarray"),
    BadInput("TwoLayerNet.train_step-lr-none", net_call, ("train_step", X34, T3, None), TypeError, r"lr must be a real number"),
    BadInput("TwoLayerNet.train_step-read-only", read_only_param_step, (X34, T3), ValueError, r"params \['W2'\] are read-only"),
    *(
        BadInput(f"TwoLayerNet.{method}-no-classes-{kind}", no_class_net_call, (method, X34, t, *lr), ValueError,
                 r"SoftmaxWithLoss: x needs at least one class, got shape \(3, 0\)")
        for method, lr in (("gradient", ()), ("train_step", (0.1,)))
        for kind, t in (("one-hot", np.zeros((3, 0))), ("labels", np.zeros(3, dtype=int)))
    ),
]

ROWS = [
    # Labels outside [0, C), negative labels, float labels, one-hot of the wrong shape, empty batches.
    *(
        row
        for loss_name, loss in LOSSES.items()
        for row in (
            BadInput(f"{loss_name}-label-too-big", loss, (X23, np.array([0, 3])), ValueError, r"label 3 .*outside \[0, 3\)"),
            BadInput(f"{loss_name}-label-negative", loss, (X23, np.array([-1, 0])), ValueError, r"label -1 .*outside \[0, 3\)"),
            BadInput(f"{loss_name}-label-float", loss, (X23, np.array([0.0, 1.0])), TypeError, r"labels must be integers.*float64"),
            BadInput(f"{loss_name}-onehot-shape", loss, (X23, np.zeros((2, 4))), ValueError, shapes((2, 3), (2, 4))),
            BadInput(f"{loss_name}-labels-count", loss, (X23, np.array([0, 1, 2])), ValueError, shapes((2, 3), (3,))),
            BadInput(f"{loss_name}-empty-batch", loss, (np.zeros((0, 3)), np.zeros(0, dtype=int)), ValueError, r"empty batch"),
            BadInput(f"{loss_name}-no-classes", loss, (np.zeros((2, 0)), np.zeros(2, dtype=int)), ValueError, r"at least one class"),
            BadInput(f"{loss_name}-3d", loss, (np.zeros((2, 3, 4)), np.zeros(2, dtype=int)), ValueError, shapes((2, 3, 4))),
            BadInput(f"{loss_name}-t-none", loss, (X23, None), TypeError, r"t must be a numeric array.*NoneType"),
            BadInput(f"{loss_name}-t-string", loss, (X23, "01"), TypeError, r"t must be a numeric array.*str"),
            BadInput(f"{loss_name}-x-none", loss, (None, np.array([0, 1])), TypeError, r"must be a numeric array.*NoneType"),
        )
    ),
    # None, strings, object arrays, complex numbers: TypeError.
    *(
        BadInput(f"{fname}-{vname}", f, (value,), TypeError, pattern)
        for fname, f in {
            "sigmoid": F.sigmoid,
            "relu": F.relu,
            "softmax": F.softmax,
            "step_function": F.step_function,
            "relu_grad": F.relu_grad,
            "Relu.forward": lambda x: Relu().forward(x),
            "Sigmoid.forward": lambda x: Sigmoid().forward(x),
            "Affine.forward": lambda x: Affine(W35, B5).forward(x),
        }.items()
        for vname, value, pattern in (
            ("none", None, r"x must be a numeric array, got NoneType"),
            ("string", "1.0", r"x must be a numeric array, got str"),
            ("bytes", b"1", r"x must be a numeric array, got bytes"),
            ("objects", OBJECTS, r"x must be a real numeric array, got dtype object"),
            ("strings-array", np.array(["1", "2"]), r"x must be a real numeric array, got dtype <U1"),
            ("complex", np.ones(3, dtype=complex), r"x must be a real numeric array, got dtype complex128"),
            ("ragged-list", [[1.0, 2.0], [3.0]], r"x must be a numeric array"),
        )
    ),
    # Masked arrays: no kernel would honour the mask, so none is given one.
    *(
        BadInput(f"{fname}-masked", f, args, TypeError, r"masked array")
        for fname, f, args in (
            ("Relu.forward", lambda x: Relu().forward(x), (MASKED,)),
            ("softmax", F.softmax, (MASKED,)),
            ("SoftmaxWithLoss", swl_forward, (MASKED, np.array([0, 1]))),
            ("Affine.forward-x", affine_forward, (MASKED, W35, B5)),
            ("Affine.forward-b", affine_forward, (X23, W35, np.ma.masked_array(B5))),
        )
    ),
    BadInput("Affine-W-none", affine_forward, (X23, None, B5), TypeError, r"W must be a numeric array"),
    BadInput("Affine-b-string", affine_forward, (X23, W35, "0"), TypeError, r"b must be a numeric array"),
    # Shape mismatches name both shapes.
    BadInput("Affine-x-vs-W", affine_forward, (np.ones((2, 4)), W35, B5), ValueError, shapes((2, 4), (3, 5))),
    BadInput("Affine-4d-x-vs-W", affine_forward, (np.ones((2, 1, 2, 2)), W35, B5), ValueError, shapes((2, 1, 2, 2), (3, 5))),
    BadInput("Affine-b-vs-W", affine_forward, (X23, W35, np.zeros(4)), ValueError, shapes((4,), (3, 5))),
    BadInput("Affine-b-2d-vs-W", affine_forward, (X23, W35, np.zeros((2, 5))), ValueError, shapes((2, 5), (3, 5))),
    BadInput("Affine-W-1d", affine_forward, (X23, np.ones(3), B5), ValueError, shapes((2, 3), (3,))),
    BadInput("Affine-x-scalar", affine_forward, (np.float64(1.0), W35, B5), ValueError, r"batch axis"),
    BadInput("Affine.backward-dout", affine_backward, (X23, W35, B5, np.ones((2, 4))), ValueError, shapes((2, 4), (2, 5))),
    BadInput("Affine.backward-dout-T", affine_backward, (X23, W35, B5, np.ones((5, 2))), ValueError, shapes((5, 2), (2, 5))),
    BadInput("Relu.backward-dout", after_forward, (Relu, X23, np.ones((3, 2))), ValueError, shapes((3, 2), (2, 3))),
    BadInput("Sigmoid.backward-dout", after_forward, (Sigmoid, X23, np.ones(6)), ValueError, shapes((6,), (2, 3))),
    BadInput("Relu.backward-read-only", after_forward, (Relu, X23, READ_ONLY), ValueError, r"read-only"),
    BadInput("Relu.backward-dout-none", after_forward, (Relu, X23, None), TypeError, r"dout must be a numeric array"),
    BadInput("sum_squared_error-shapes", F.sum_squared_error, (np.ones(3), np.ones(4)), ValueError, shapes((3,), (4,))),
    BadInput("softmax-empty-last-axis", F.softmax, (np.zeros((2, 0)),), ValueError, shapes((2, 0))),
    BadInput("softmax-scalar", F.softmax, (np.float64(1.0),), ValueError, r"non-empty last axis"),
    # Backward before forward.
    *(
        BadInput(f"{type(layer).__name__}-backward-before-forward", backward_only, (layer,), RuntimeError, r"backward called before")
        for layer in (Affine(W35, B5), Relu(), Sigmoid(), SoftmaxWithLoss())
    ),
    # The gradient helpers and the net.
    BadInput("numerical_gradient-list", numerical_gradient, (lambda x: 0.0, [1.0, 2.0]), TypeError, r"ndarray"),
    BadInput("numerical_gradient-read-only", numerical_gradient, (lambda x: 0.0, READ_ONLY), ValueError, r"read-only"),
    # x + h would be truncated (the book's version returns garbage there) or rounded away
    BadInput("numerical_gradient-int", numerical_gradient, (lambda x: 0.0, np.arange(3)), TypeError, r"float32 or float64, got int64"),
    BadInput("numerical_gradient-float16", numerical_gradient, (lambda x: 0.0, np.ones(3, np.float16)), TypeError, r"got float16"),
    BadInput("TwoLayerNet-int-dtype", lambda: TwoLayerNet(2, 2, 2, dtype=np.int32), (), TypeError, r"float32 or float64"),
    BadInput("MulLayer-backward-before-forward", lambda: MulLayer().backward(1.0), (), RuntimeError, r"backward called before"),
    *NET_ROWS,
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_bad_input(backend, row):
    with pytest.raises(row.error, match=row.match):
        row.call(*row.args)


def test_read_only_rows_left_untouched():
    np.testing.assert_array_equal(READ_ONLY, np.ones((2, 3)))


def test_row_names_are_unique():
    assert len({row.name for row in ROWS}) == len(ROWS)


# --- Array-likes are converted as NumPy would ---

LIST_CASES = {
    "sigmoid": lambda x: F.sigmoid(x),
    "relu": lambda x: F.relu(x),
    "softmax": lambda x: F.softmax(x),
    "step_function": lambda x: F.step_function(x),
    "relu_grad": lambda x: F.relu_grad(x),
    "Relu": lambda x: Relu().forward(x),
    "Sigmoid": lambda x: Sigmoid().forward(x),
    "Affine": lambda x: Affine(np.linspace(-1, 1, 15).reshape(3, 5), np.arange(5.0)).forward(x),
    "SoftmaxWithLoss": lambda x: swl_forward(x, [0, 2]),
    "cross_entropy_error": lambda x: F.cross_entropy_error(F.softmax(x), [[1, 0, 0], [0, 0, 1]]),
}


@pytest.mark.parametrize("name", list(LIST_CASES))
@pytest.mark.parametrize("values", [[[1.5, -2.0, 0.0], [3.0, 0.25, -1.0]], [[1, -2, 0], [3, 0, -1]]], ids=["floats", "ints"])
def test_lists_convert_as_numpy_would(backend, name, values):
    from_list = LIST_CASES[name](values)
    from_array = LIST_CASES[name](np.array(values))
    assert np.asarray(from_list).dtype == np.asarray(from_array).dtype
    np.testing.assert_array_equal(from_list, from_array)


def test_lists_in_layer_backward(backend):
    layer = Affine(np.ones((3, 2)), np.zeros(2))
    layer.forward([[1.0, 2.0, 3.0]])
    dx = layer.backward([[1.0, -1.0]])
    np.testing.assert_array_equal(dx, [[0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(layer.dW, [[1.0, -1.0], [2.0, -2.0], [3.0, -3.0]])
    sig = Sigmoid()
    sig.forward([0.0, 0.0])
    np.testing.assert_array_equal(sig.backward([1.0, 2.0]), [0.25, 0.5])


# --- Empty batches: empty outputs from the layers ---


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_empty_batch_gives_empty_outputs(backend, dtype):
    layer = Affine(normal(1, (4, 3), dtype), normal(2, (3,), dtype))
    out = layer.forward(np.zeros((0, 2, 2), dtype=dtype))
    assert out.shape == (0, 3) and out.dtype == dtype
    dx = layer.backward(np.zeros((0, 3), dtype=dtype))
    assert dx.shape == (0, 2, 2) and dx.dtype == dtype
    np.testing.assert_array_equal(layer.dW, np.zeros((4, 3), dtype=dtype), strict=True)
    np.testing.assert_array_equal(layer.db, np.zeros(3, dtype=dtype), strict=True)
    for layer_type in (Relu, Sigmoid):
        act = layer_type()
        out = act.forward(np.zeros((0, 5), dtype=dtype))
        assert out.shape == (0, 5) and out.dtype == dtype
        assert act.backward(np.zeros((0, 5), dtype=dtype)).shape == (0, 5)


def test_no_features_and_no_outputs_take_no_time(backend):
    """x (N, 0), W (0, 0): nothing to compute, whatever N (a stride-0 view of 2**36 rows here;
    2**30 on numba, whose np.dot takes C int sizes). The compiled backward once walked db's rows
    one by one, summing nothing (about 90 s for these)."""
    n = 2**30 if backend == "numba" else 2**36
    x = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(n, 0), strides=(0, 8))
    layer = Affine(np.zeros((0, 0)), np.zeros(0))
    start = time.perf_counter()
    out = layer.forward(x)
    dx = layer.backward(out)
    elapsed = time.perf_counter() - start
    assert out.shape == dx.shape == (n, 0)
    assert layer.dW.shape == (0, 0) and layer.db.shape == (0,)
    assert elapsed < 10, f"{elapsed:.1f} s for no work"


# --- Odd but valid input: every backend gives the reference's answer, dtype included ---


def with_specials(values):
    """``values`` with NaN, +inf and -inf in the first row (the rest stays finite)."""
    values = values.astype(np.float64)
    values[0, :3] = np.nan, np.inf, -np.inf
    return values


class Tagged(np.ndarray):
    """A user's ndarray subclass that adds nothing."""


def as_matrix(values):
    """np.matrix(values), without its PendingDeprecationWarning (users still have them)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return np.matrix(values)


VALUES = np.linspace(-3, 3, 35).reshape(5, 7)
ODD_INPUTS = {
    "big-endian-f8": lambda: VALUES.astype(">f8"),
    "big-endian-f4": lambda: VALUES.astype(">f4"),
    "float16": lambda: VALUES.astype(np.float16),
    "longdouble": lambda: VALUES.astype(np.longdouble),
    "int16": lambda: (VALUES * 3).astype(np.int16),
    "uint8": lambda: (VALUES * 3 + 9).astype(np.uint8),
    "broadcast": lambda: np.broadcast_to(VALUES[2], VALUES.shape),
    "broadcast-column": lambda: np.broadcast_to(VALUES[:, :1], VALUES.shape),
    "nan-inf": lambda: with_specials(VALUES),
    "nan-inf-f4": lambda: with_specials(VALUES).astype(np.float32),
    # subclasses: computed as the plain arrays they hold, on every backend
    "matrix": lambda: as_matrix(VALUES),
    "matrix-f4": lambda: as_matrix(VALUES.astype(np.float32)),
    "subclass": lambda: VALUES.view(Tagged),
}
LABELS5 = np.array([0, 6, 3, 3, 1])


def layer_pass(layer, x, *forward_args):
    """A layer's forward output, then its backward result(s) for dout = ones, then its grads."""
    out = layer.forward(x, *forward_args)
    back = layer.backward(np.ones_like(out)) if forward_args == () else layer.backward()
    grads = [getattr(layer, name) for name in ("dW", "db") if hasattr(layer, name)]
    return [out, *(back if isinstance(back, tuple) else (back,)), *grads]


ODD_OPS = {
    "identity_function": lambda x: [F.identity_function(x)],
    "step_function": lambda x: [F.step_function(x)],
    "sigmoid": lambda x: [F.sigmoid(x)],
    "sigmoid_grad": lambda x: [F.sigmoid_grad(x)],
    "relu": lambda x: [F.relu(x)],
    "relu_grad": lambda x: [F.relu_grad(x)],
    "softmax": lambda x: [F.softmax(x)],
    "softmax-1d": lambda x: [F.softmax(x[1])],
    "sum_squared_error": lambda x: [F.sum_squared_error(x, np.full(x.shape, 0.5))],
    "cross_entropy_error": lambda x: [F.cross_entropy_error(np.abs(x) / 10, LABELS5)],
    "softmax_loss": lambda x: [F.softmax_loss(x, LABELS5)],
    "Relu": lambda x: layer_pass(Relu(), x),
    "Sigmoid": lambda x: layer_pass(Sigmoid(), x),
    "Affine-x": lambda x: layer_pass(Affine(np.linspace(-1, 1, 21).reshape(7, 3), np.arange(3.0)), x),
    "Affine-W": lambda x: layer_pass(Affine(x.T, np.arange(5.0)), np.linspace(-1, 1, 14).reshape(2, 7)),
    "SoftmaxWithLoss-labels": lambda x: layer_pass(SoftmaxWithLoss(), x, LABELS5),
    "SoftmaxWithLoss-onehot": lambda x: layer_pass(SoftmaxWithLoss(), x, np.eye(7)[LABELS5]),
    "MulLayer": lambda x: mul_pass(x),
}


def mul_pass(x):
    layer = MulLayer()
    out = layer.forward(x, 2.5)
    return [out, *layer.backward(np.ones_like(out))]


def tolerance(dtype):
    """Relative tolerance for results computed in ``dtype`` (exact for integers and bools)."""
    return {2: 2e-3, 4: 1e-5}.get(dtype.itemsize, 1e-12) if dtype.kind == "f" else 0


def run_quietly(op, x):
    """``op(x)`` with NumPy's floating-point warnings off (NaN and inf inputs raise them), and
    np.matrix's deprecation notice (arithmetic on a matrix makes new ones)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        return [np.asarray(r) for r in op(x)]


@pytest.mark.parametrize("op", list(ODD_OPS))
@pytest.mark.parametrize("kind", list(ODD_INPUTS))
def test_odd_input_gives_the_reference_answer(backend, op, kind):
    if op == "MulLayer" and kind.startswith("matrix"):
        pytest.skip("np.matrix's * is a matrix product, and MulLayer is the book's x * y on what it is given")
    x = ODD_INPUTS[kind]()
    before = x.copy()
    with bpfast.use_backend("numpy"):
        expected = run_quietly(ODD_OPS[op], ODD_INPUTS[kind]())
    got = run_quietly(ODD_OPS[op], x)
    np.testing.assert_array_equal(x, before, err_msg="the input was modified")
    assert len(got) == len(expected)
    for i, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == e.dtype and g.shape == e.shape, f"result {i}: {g.dtype}{g.shape} vs {e.dtype}{e.shape}"
        np.testing.assert_array_equal(np.isnan(g), np.isnan(e), err_msg=f"result {i}: NaN positions")
        rtol = max(tolerance(g.dtype), tolerance(np.result_type(x, np.float16)))  # float32 work in a float64 result
        np.testing.assert_allclose(g, e, rtol=rtol, atol=rtol, equal_nan=True, err_msg=f"result {i}")


@pytest.mark.parametrize("value", [np.float64(0.5), np.float32(-2.0), 0.5, np.array(1.5)], ids=["f8", "f4", "float", "0-d"])
@pytest.mark.parametrize("name", ["sigmoid", "sigmoid_grad", "relu", "relu_grad", "step_function", "softmax"])
def test_scalars_come_back_as_the_reference_gives_them(backend, name, value):
    """A scalar in gives what the reference gives: a NumPy scalar or a 0-d array, same dtype, same value."""
    got = getattr(F, name)(value) if name != "softmax" else F.softmax(np.atleast_1d(value))
    with bpfast.use_backend("numpy"):
        expected = getattr(F, name)(value) if name != "softmax" else F.softmax(np.atleast_1d(value))
    assert type(got) is type(expected) and np.asarray(got).dtype == np.asarray(expected).dtype
    np.testing.assert_allclose(got, expected, rtol=tolerance(np.asarray(got).dtype))


@pytest.mark.parametrize(
    "value",
    [np.float16(1.5), np.int8(-2), np.array(3, np.int16), True, np.float64(-0.5), np.array(0.5, np.float32)],
    ids=["f2", "i1", "0-d-i2", "bool", "f8", "0-d-f4"],
)
def test_layers_on_scalars(backend, value):
    """Relu and Sigmoid on a 0-d input give what the book's formulas give, types included: a
    0-d out and a NumPy bool mask from Relu, a NumPy scalar from Sigmoid (kernel dtypes or not),
    and backward after them the reference's answer."""

    def passes():
        relu, sigmoid = Relu(), Sigmoid()
        relu_out, sigmoid_out = relu.forward(value), sigmoid.forward(value)
        mask = relu.mask
        return relu_out, mask, relu.backward(np.array(2.0)), sigmoid_out, sigmoid.backward(np.array(2.0))

    got = passes()
    with bpfast.use_backend("numpy"):
        expected = passes()
    for g, e in zip(got, expected):
        assert type(g) is type(e) and np.asarray(g).dtype == np.asarray(e).dtype
        np.testing.assert_allclose(g, e, rtol=1e-6)


@pytest.mark.parametrize("t", [np.array([[0.0, 0.0, 1.0]]), np.array([0.0, 0.0, 1.0]), 2, np.array([2]), np.array([[2]])],
                         ids=["onehot-1xC", "onehot-C", "label", "label-1", "label-1x1"])
def test_cross_entropy_of_one_sample_takes_the_book_targets(backend, t):
    """The book reshapes t to (1, t.size) for a 1-D y: one-hot when it has y's size, else a label."""
    y = np.array([0.2, 0.3, 0.5])
    expected = -np.log(0.5 + 1e-7)
    assert F.cross_entropy_error(y, t) == pytest.approx(expected, rel=1e-12)
    assert swl_forward(np.log(y), t) == pytest.approx(expected, rel=1e-9)  # softmax(log y) is y


def test_one_sample_with_a_batch_of_targets_names_their_shape(backend):
    with pytest.raises(ValueError, match=shapes((1, 3), (2, 3))):
        F.cross_entropy_error(np.array([0.2, 0.3, 0.5]), np.eye(3)[:2])


@pytest.mark.parametrize("x_dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("dout", [2.0, 3, np.float32(2.0), np.float64(2.0), np.array([1.0, -2.0, 3.0]), np.array([[2.0], [3.0]])],
                         ids=["float", "int", "f4", "f8", "row", "column"])
def test_sigmoid_backward_broadcasts_dout_as_the_book(backend, dout, x_dtype):
    """The book's dout * (1 - out) * out broadcasts a dout that fits out's shape, and promotes as
    NumPy does (a Python number keeps float32 float32; np.float64 does not)."""
    layer = Sigmoid()
    out = layer.forward(X23.astype(x_dtype))
    got = layer.backward(dout)
    expected = dout * (1.0 - out) * out
    assert got.shape == X23.shape and got.dtype == expected.dtype
    np.testing.assert_allclose(got, expected, rtol=1e-6 if expected.dtype == np.float32 else 1e-15)


def test_relu_backward_returns_the_dout_it_was_given(backend):
    """The book returns its dout, zeroed in place: a subclass comes back as itself."""
    layer = Relu()
    layer.forward(X23 - 2.0)
    dout = as_matrix(np.ones((2, 3)))
    assert layer.backward(dout) is dout
    np.testing.assert_array_equal(np.asarray(dout), (X23 - 2.0 > 0).astype(float))


def test_rejected_loss_forward_leaves_the_layer_as_it_was(backend):
    layer = SoftmaxWithLoss()
    t = np.array([0, 2])
    loss = layer.forward(X23, t)
    y = layer.y.copy()
    with pytest.raises(ValueError, match="label 5"):
        layer.forward(X23 * 2, np.array([5, 0]))
    assert layer.t is t and layer.loss == loss
    np.testing.assert_array_equal(layer.y, y)


def test_matrix_bias_is_a_row_of_biases(backend):
    """b as a (1, M) np.matrix is the book's (1, M) bias: the same output on every backend."""
    out = affine_forward(X23, W35, as_matrix(np.arange(5.0)))
    assert type(out) is np.ndarray
    np.testing.assert_array_equal(out, X23 @ W35 + np.arange(5.0))


def test_numerical_gradient_of_an_empty_array(backend):
    grad = numerical_gradient(lambda x: float(np.sum(x**2)), np.zeros((0, 3)))
    assert grad.shape == (0, 3) and grad.dtype == np.float64

