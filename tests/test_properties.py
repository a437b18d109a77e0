"""Property tests: every public op and layer, on every backend, equals the NumPy reference.

Hypothesis draws shapes (0-d, size-0 axes, batch 1, sizes off the 8/16/32 blocks, now
and then sizes past the compiled core's threading thresholds and GEMM blocks), both dtypes
(mixed between arguments), layouts (steps, negative steps, transposes, an offset into a
larger buffer whose gaps hold NaN, a byte buffer shifted by 1..7 bytes, read-only) and
values (moderate, large, huge, tiny, subnormal, NaN, ±inf). Each example runs the numpy
reference, checks it against the book's formulas where that is cheap, then runs every
other backend (the compiled core once per kernel path: generic, avx2, avx512) on fresh
copies of the same inputs: same dtype and shape, values within the dtype's tolerance, NaN
exactly where the reference has NaN, inputs unchanged bit for bit, outputs fresh.

Warnings: the reference is the book's NumPy code, and NumPy reports overflow, invalid and
divide-by-zero on NaN, inf and huge values (the compiled kernels report nothing); the
contract is about values, not those reports. So examples holding such values (or, for
cross_entropy_error, negative probabilities) run under ``np.errstate(all="ignore")``, and
all others (finite, |v| <= 1e6) run as the suite does, warnings being errors: there no
backend may warn.

NaN and inf follow the reference (see ``assert_softmax_contract``); the backward of
Sigmoid and SoftmaxWithLoss is compared with the reference's backward run on the layer's
own forward output, since an out that is 1 in one backend and 1 - eps in another turns
``inf * (1 - out)`` into NaN in one and inf in the other.

``BPFAST_HYPOTHESIS_PROFILE=bpfast-long`` runs many more examples, randomised.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import math
import os
from typing import NamedTuple

import numpy as np
import pytest
from conftest import DTYPES, Book, assert_matches, available_backends
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_ops_oracle import affine_checks, affine_run

import bpfast
from bpfast import functions as F
from bpfast.layers import Relu, Sigmoid, SoftmaxWithLoss

settings.register_profile(
    "bpfast",
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("bpfast-long", parent=settings.get_profile("bpfast"), max_examples=2000, derandomize=False)
PROPERTY = settings.get_profile(os.environ.get("BPFAST_HYPOTHESIS_PROFILE", "bpfast"))
# On a failure Hypothesis imports libcst (to suggest an @example), which warns on this mypy_extensions.
pytestmark = pytest.mark.filterwarnings("ignore:mypy_extensions.TypedDict is deprecated:DeprecationWarning")
dtype_param = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
TAME = 1e6  # finite values up to this size make NumPy warn nowhere in these ops


# --- Backends ---


CORE = importlib.import_module("bpfast._core") if "cpp" in available_backends() else None


def kernel_paths() -> list[str]:
    """The compiled core's kernel paths (generic, avx2, avx512) this build has and this CPU runs."""
    if "cpp" not in available_backends():
        return []
    paths = [path for path in CORE.info()["kernel_paths_compiled"] if CORE._set_cpu_path(path) == path]
    CORE._set_cpu_path(os.environ.get("BPFAST_CPU") or None)
    return paths


# Backends under test besides the reference: "cpp/<path>" is the compiled core forced onto a kernel path.
OTHER_BACKENDS = [name for name in available_backends() if name not in ("numpy", "cpp")]
OTHER_BACKENDS += [f"cpp/{path}" for path in kernel_paths()]
ALL_BACKENDS = ["numpy", *OTHER_BACKENDS]


@contextlib.contextmanager
def backend_in_use(name: str):
    """``bpfast.use_backend`` for a name of ALL_BACKENDS."""
    backend, _, path = name.partition("/")
    with bpfast.use_backend(backend):
        if not path:
            yield
            return
        CORE._set_cpu_path(path)
        try:
            yield
        finally:
            CORE._set_cpu_path(os.environ.get("BPFAST_CPU") or None)


def backend_name() -> str:
    """The backend in use, with the kernel path for the compiled core (as in ALL_BACKENDS)."""
    name = bpfast.get_backend()
    return f"cpp/{CORE.info()['kernel_path']}" if name == "cpp" else name


# --- Layouts ---


class Layout(NamedTuple):
    """How an array lies in memory: ``apply(values)`` gives a fresh array laid out so."""

    perm: tuple[int, ...]  # storage order of the axes (not the identity: a transposed view)
    steps: tuple[int, ...]  # step of each axis in its buffer (negative: reversed)
    lead: int  # elements of the buffer before the first one viewed
    shift: int  # bytes the buffer starts after an allocation (1..7: misaligned)
    readonly: bool

    def apply(self, values) -> np.ndarray:
        values = np.asarray(values)
        stored = [values.shape[axis] * abs(self.steps[axis]) for axis in self.perm]
        count = self.lead + math.prod(stored)
        # 0xFF bytes: the gaps between viewed elements are NaN (floats) or -1 (labels).
        buffer = bytearray(b"\xff") * (count * values.dtype.itemsize + self.shift)
        flat = np.frombuffer(buffer, values.dtype, count=count, offset=self.shift)
        base = flat[self.lead :].reshape(stored)
        view = base[tuple(slice(None, None, self.steps[axis]) for axis in self.perm)] if values.ndim else base
        array = view.transpose(np.argsort(self.perm))
        array[...] = values
        array.flags.writeable = not self.readonly
        return array


@st.composite
def layouts(draw, ndim: int) -> Layout:
    return Layout(
        perm=tuple(draw(st.permutations(range(ndim)))),
        steps=tuple(draw(st.lists(st.sampled_from([1, 2, -1, 3, -2]), min_size=ndim, max_size=ndim))),
        lead=draw(st.integers(0, 3)),
        shift=draw(st.sampled_from([0, 1, 4, 7]) | st.integers(0, 7)),
        readonly=draw(st.booleans()),
    )


class Arg(NamedTuple):
    """A drawn input: its values (C-contiguous) and the layout every call gets it in."""

    values: np.ndarray
    layout: Layout

    def make(self) -> np.ndarray:
        return self.layout.apply(self.values)


def contiguous(values, dtype=None) -> Arg:
    """An Arg of ``values`` (as ``dtype``) in a plain C-contiguous buffer: for explicit examples."""
    values = np.asarray(values, dtype)
    return Arg(values, Layout(tuple(range(values.ndim)), (1,) * values.ndim, lead=0, shift=0, readonly=False))


# --- Values and shapes ---


def specials(dtype, huge: bool = True):
    """Single values: NaN, ±inf, ±0, tiny, subnormal, where exp leaves the normal range
    (sigmoid and softmax give subnormals there), and (``huge``) any float of the dtype."""
    info = np.finfo(dtype)
    low, lowest = math.log(info.tiny), math.log(info.smallest_subnormal)
    exp_edges = np.array([math.log(info.max), low, (low + lowest) / 2, lowest])
    picks = [0.0, -0.0, 1.0, -1.0, info.tiny, info.smallest_subnormal, -info.smallest_subnormal]
    picks += [float(v) for v in np.concatenate([exp_edges, -exp_edges]).astype(dtype)]
    non_finite = st.sampled_from([np.nan, np.inf, -np.inf])
    if not huge:  # matrix products: whether a sum of huge terms overflows depends on its order
        return non_finite | st.sampled_from(picks) | st.floats(-1e3, 1e3, width=info.bits)
    return non_finite | st.sampled_from(picks + [info.max, -info.max]) | st.floats(width=info.bits)


@st.composite
def floats(draw, shape, dtype, huge: bool = True) -> np.ndarray:
    """Seeded normal values at a drawn scale (1, 3, 50, 1e4, huge, subnormal), a few specials set."""
    dtype = np.dtype(dtype)
    subnormal = float(np.finfo(dtype).smallest_subnormal) * 1e3
    scales = [1.0, 3.0, 50.0, subnormal] + ([1e4, 1e30 if dtype == np.float32 else 1e300] if huge else [])
    seed = draw(st.integers(0, 2**32 - 1))
    scale = draw(st.sampled_from(scales))
    values = np.array(np.random.default_rng(seed).standard_normal(shape) * scale, dtype=dtype)
    if values.size:
        spot, special = st.integers(0, values.size - 1), specials(dtype, huge)
        for _ in range(draw(st.integers(0, min(values.size, 8)))):
            values.flat[draw(spot)] = draw(special)
    return values


@st.composite
def float_args(draw, shape, dtype, huge: bool = True) -> Arg:
    values = draw(floats(shape, dtype, huge))
    return Arg(values, draw(layouts(values.ndim)))


SIDES = st.integers(1, 9) | st.sampled_from([15, 16, 17, 31, 32, 33, 63, 64, 65])
BATCHES = st.just(1) | st.integers(1, 40)
CLASSES = st.integers(1, 9) | st.sampled_from([10, 17, 33, 65])
# Large enough for the compiled core to split the work over threads (its elementwise
# kernels do from 16-64 K elements on).
PAST_THRESHOLDS = 70_000


def one_in_ten(draw) -> bool:
    """True for about one example in ten (shrinking to False): empty axes, large sizes."""
    return draw(st.integers(0, 9)) == 9


def size(draw, sides) -> int:
    return 0 if one_in_ten(draw) else draw(sides)


@st.composite
def elementwise_shapes(draw, min_last: int = 0) -> tuple[int, ...]:
    """1-d to 4-d (or 0-d, unless ``min_last``): the last axis may be long, the others are short,
    an empty one now and then."""
    if not min_last and one_in_ten(draw):
        return ()
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=4))[:-1]
    shape = (*shape, draw(SIDES) if min_last else size(draw, SIDES))
    if len(shape) > 1 and one_in_ten(draw):
        shape = (0, *shape[1:])
    if one_in_ten(draw):
        shape = (-(-PAST_THRESHOLDS // max(1, math.prod(shape))),) + shape
    return shape


def dtypes():
    return st.sampled_from(DTYPES)


@st.composite
def same_shape_pairs(draw) -> tuple[Arg, Arg]:
    """Two arrays of one shape (x and dout, y and t), their dtypes drawn apart."""
    shape = draw(elementwise_shapes())
    return draw(float_args(shape, draw(dtypes()))), draw(float_args(shape, draw(dtypes())))


# --- Running and comparing ---


def tame(*arrays) -> bool:
    """No NaN, no inf, nothing larger than TAME: NumPy must not warn on these."""
    floating = [a for a in arrays if np.asarray(a).dtype.kind == "f"]
    return all(bool(np.all(np.abs(a) <= TAME)) for a in floating)


@contextlib.contextmanager
def numpy_errors(quiet: bool):
    """NumPy's floating-point warnings ignored when ``quiet`` (see the module docstring)."""
    with np.errstate(all="ignore") if quiet else contextlib.nullcontext():
        yield


def run_on(backend, call, args, changes=()):
    """``call(*inputs)`` on ``backend``, the inputs made afresh from ``args`` (Arg each).

    Inputs not listed in ``changes`` must come back bit for bit; results must not share
    memory with them (a result that *is* an input listed in ``changes`` aside).
    """
    inputs = [arg.make() for arg in args]
    before = [np.array(a, copy=True) for a in inputs]
    with backend_in_use(backend):
        results = call(*inputs)
    for i, (a, kept) in enumerate(zip(inputs, before)):
        if i not in changes:
            assert np.asarray(a).tobytes() == kept.tobytes(), f"{backend}: {call.__name__} changed input {i}"
    for r in results:
        for i, a in enumerate(inputs):
            if isinstance(r, np.ndarray) and not (i in changes and r is a):
                assert not np.may_share_memory(r, a), f"{backend}: {call.__name__} result shares input {i}"
    return results


def compare(got, expected, checks, what):
    for i, (g, e, options) in enumerate(zip(got, expected, checks, strict=True)):
        if options is not None:
            assert_matches(g, e, what=f"{what}, result {i}", **options)


def check_backends(call, args, checks, *, book=None, book_checks=None, changes=(), quiet=None):
    """``call`` on the reference (checked against ``book`` when given), then on every other backend.

    ``checks`` holds ``assert_matches`` options per result (None: the call checks that one
    itself; ``book_checks`` then says how the reference meets the book, default ``{}``).
    Returns the reference's results and each backend's, by name.
    """
    if quiet is None:
        quiet = not tame(*(arg.values for arg in args))
    with numpy_errors(quiet):
        ref = run_on("numpy", call, args, changes)
        if book is not None:
            plain = [arg.values.copy() for arg in args]
            book_checks = book_checks or [c or {} for c in checks]
            compare(ref, book(*plain), book_checks, f"numpy reference vs the book: {call.__name__}")
        results = {"numpy": ref}
        for name in OTHER_BACKENDS:
            results[name] = got = run_on(name, call, args, changes)
            compare(got, ref, checks, f"{name} vs numpy reference: {call.__name__}")
    return results


def replayed_on_reference(layer, method, *args):
    """``layer.method(*args)`` on the numpy reference, from a copy of the layer's state."""
    twin = copy.deepcopy(layer)
    with bpfast.use_backend("numpy"):
        return getattr(twin, method)(*args)


def least_precise(*args: Arg) -> np.dtype:
    return min((arg.values.dtype for arg in args), key=lambda dtype: dtype.itemsize)


def tiny(dtype) -> float:
    """The smallest normal number: a floor for tolerances, as subnormal results hold fewer digits."""
    return float(np.finfo(dtype).tiny)


def tolerance(dtype) -> dict:
    """Elementwise tolerance, with a floor for subnormal results."""
    return {"scale": tiny(dtype)}


def sigmoid_grad_scale(x, dout=1.0, dtype=None) -> np.ndarray:
    """The scale for ``dout·(1 - s)·s``, s = sigmoid(x): an ulp of s moves it by about
    |dout|·s·eps, relative to the result where s is small (x < 0 and its tail); only near
    s = 1, where 1 - s cancels, is that |dout|·eps absolute. ``tiny(dtype)`` floors it for
    subnormal results (``dtype``: the least precise of the inputs, x's by default)."""
    with np.errstate(over="ignore", invalid="ignore"):
        s = Book.sigmoid(np.asarray(x, np.float64))
        return np.abs(np.asarray(dout, np.float64)) * s + tiny(dtype or x.dtype)


# --- Functions of one array ---

EXACT = {"exact": True}
ELEMENTWISE = {
    # name: (function, the book's, comparison options for the input's values)
    "sigmoid": (F.sigmoid, Book.sigmoid, lambda x: tolerance(x.dtype)),
    "sigmoid_grad": (F.sigmoid_grad, Book.sigmoid_grad, lambda x: {"scale": sigmoid_grad_scale(x)}),
    "relu": (F.relu, Book.relu, lambda x: EXACT),
    "relu_grad": (F.relu_grad, Book.relu_grad, lambda x: EXACT),
    "step_function": (F.step_function, Book.step_function, lambda x: EXACT),
    "identity_function": (F.identity_function, lambda x: x, lambda x: EXACT),
}


@pytest.mark.parametrize("name", list(ELEMENTWISE))
@dtype_param
@PROPERTY
@given(data=st.data())
def test_elementwise_functions(name, dtype, data):
    function, book, options = ELEMENTWISE[name]
    x = data.draw(float_args(data.draw(elementwise_shapes()), dtype))

    def call(x):
        return (function(x),)

    call.__name__ = name
    changes = (0,) if name == "identity_function" else ()  # it returns x itself
    results = check_backends(call, [x], [options(x.values)], book=lambda v: (book(v),), changes=changes)
    if name == "relu":  # masked entries are +0.0, as x.copy(); out[mask] = 0 writes them
        for backend, (out,) in results.items():
            kept = ~np.isnan(out)
            assert np.array_equal(np.signbit(out)[kept], np.signbit(results["numpy"][0])[kept]), backend


def assert_softmax_contract(x, y, what):
    """The reference's NaN/inf semantics, which every backend keeps.

    Each row is shifted by its max: a row holding NaN or +inf, or only -inf, is all NaN;
    any other row is finite, in [0, 1], exactly 0 where x is -inf, and sums to 1.
    """
    c = x.shape[-1]
    x, y = x.reshape(-1, c), y.reshape(-1, c)
    nan_rows = np.isnan(x).any(axis=1) | np.isposinf(x).any(axis=1) | np.isneginf(x).all(axis=1)
    assert np.isnan(y[nan_rows]).all(), f"{what}: rows with NaN, +inf or only -inf must be NaN"
    x, y = x[~nan_rows], y[~nan_rows]
    assert (np.isfinite(y) & (y >= 0) & (y <= 1)).all(), f"{what}: other rows lie in [0, 1]"
    assert (y[np.isneginf(x)] == 0).all(), f"{what}: -inf gives 0"
    eps = float(np.finfo(y.dtype).eps)
    np.testing.assert_allclose(y.sum(axis=1, dtype=np.float64), 1.0, rtol=2 * (c + 2) * eps, err_msg=what)


@dtype_param
@PROPERTY
@given(data=st.data())
def test_softmax(dtype, data):
    x = data.draw(float_args(data.draw(elementwise_shapes(min_last=1)), dtype))

    def softmax(x):
        return (F.softmax(x),)

    results = check_backends(softmax, [x], [tolerance(dtype)], book=lambda v: (Book.softmax(v),))
    for name, (y,) in results.items():
        assert_softmax_contract(x.values, y, name)


@dtype_param
@PROPERTY
@given(data=st.data())
def test_softmax_of_an_empty_last_axis_raises(dtype, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=3))[:-1] + (0,)
    x = data.draw(float_args(shape, dtype))
    for name in ALL_BACKENDS:
        with backend_in_use(name), pytest.raises(ValueError, match="non-empty last axis"):
            F.softmax(x.make())


@PROPERTY
@given(args=same_shape_pairs())
def test_sum_squared_error(args):
    """NumPy computes it on every backend: one run, against the book's formula on plain copies."""
    y, t = args
    with numpy_errors(not tame(y.values, t.values)):
        got = F.sum_squared_error(y.make(), t.make())
        expected = Book.sum_squared_error(y.values, t.values)
    assert_matches(got, expected, k=max(1, y.values.size), scale=tiny(np.float32), what="sum_squared_error")


def test_mean_squared_error_is_the_books_name_for_it():
    """The book's chapter 4 calls 0.5·sum((y - t)**2) mean_squared_error: the same function."""
    assert F.mean_squared_error is F.sum_squared_error


# --- Losses ---


@st.composite
def loss_cases(draw, dtype):
    """(x, t): logits (N, C) or (C,), and labels, one-hot or soft targets (argmax taken)."""
    big = one_in_ten(draw)  # past the threading thresholds of the fused loss kernels
    n, c = (1100, 65) if big else (size(draw, BATCHES), draw(CLASSES))
    one_sample = not big and draw(st.booleans())  # x is (C,), t a label, (1,) labels or (C,)
    n = 1 if one_sample else n
    x = draw(float_args((c,) if one_sample else (n, c), dtype))
    kind = draw(st.sampled_from(["labels", "one-hot", "soft"]))
    labels = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).integers(0, c, size=n)
    if kind == "labels":
        t = labels.astype(draw(st.sampled_from([np.int64, np.int32, np.uint8])))
    elif kind == "one-hot":
        t = np.zeros((n, c), draw(dtypes()))
        t[np.arange(n), labels] = 1
    else:  # any values, NaN included: argmax gives the label, (y - t)/N the gradient
        t = draw(floats((n, c), draw(dtypes())))
    if one_sample and (t.ndim == 2 or draw(st.booleans())):
        t = np.asarray(t[0])
    return x, Arg(t, draw(layouts(t.ndim)))


def loss_tolerance(x, t):
    """loss: a sum of N logs (an ulp of y moves each by about eps); dx = (y - t)/N cancels near
    y = t and is no more precise than y (float32 y with float64 t gives a float64 dx)."""
    n = batch_of(x)
    if t.values.dtype.kind == "f":  # one-hot or soft targets
        return {"k": max(x.values.shape[-1], n), "scale": 1.0}, {
            "scale": (1.0 + np.abs(t.values.astype(np.float64))) / n,
            "tol_dtype": least_precise(x, t),
        }
    return {"k": max(x.values.shape[-1], n), "scale": 1.0}, {"scale": 1.0 / n}


def batch_of(x):
    return 1 if x.values.ndim == 1 else x.values.shape[0]


@dtype_param
@PROPERTY
@given(data=st.data())
def test_softmax_with_loss(dtype, data):
    x, t = data.draw(loss_cases(dtype))
    c = x.values.shape[-1]
    if batch_of(x) == 0:
        for name in ALL_BACKENDS:
            with backend_in_use(name):
                for loss in (lambda x, t: SoftmaxWithLoss().forward(x, t), F.softmax_loss, F.cross_entropy_error):
                    with pytest.raises(ValueError, match="empty batch"):
                        loss(x.make(), t.make())
        return
    loss_check, dx_check = loss_tolerance(x, t)

    def softmax_with_loss(x, t):
        layer = SoftmaxWithLoss()
        loss = layer.forward(x, t)
        y = layer.y
        expected_dx = replayed_on_reference(layer, "backward")
        dx = layer.backward()
        assert_matches(dx, expected_dx, what=f"{backend_name()}: dx vs the reference's from this y", **dx_check)
        return loss, y, dx, F.softmax_loss(x, t)

    # The book reads C = 1 labels as one-hot (t.size == y.size) and has no 1-D SoftmaxWithLoss.
    book = None
    if c > 1 and x.values.ndim == 2:
        book = lambda x, t: Book.softmax_with_loss(x, t) + (Book.softmax_loss(x, t),)  # noqa: E731
    checks = (loss_check, tolerance(dtype), None, loss_check)
    book_checks = (loss_check, tolerance(dtype), dx_check, loss_check)
    results = check_backends(
        softmax_with_loss, [x, t], checks, book=book, book_checks=book_checks, quiet=not tame(x.values, t.values)
    )
    for name, (loss, y, dx, _) in results.items():
        assert np.ndim(loss) == 0 and loss.dtype == y.dtype == dtype and dx.shape == x.values.shape
        assert_softmax_contract(x.values, y, name)
        # The loss is NaN exactly when a row of y is; otherwise log(y + 1e-7) keeps it finite.
        assert np.isnan(loss) == np.isnan(y).any() and not np.isinf(loss), name


@dtype_param
@PROPERTY
@given(data=st.data())
def test_cross_entropy_error(dtype, data):
    """y is any probabilities (negative or NaN ones too: the book's formula decides)."""
    x, t = data.draw(loss_cases(dtype))
    y = Arg(np.abs(x.values) if data.draw(st.booleans()) else x.values, x.layout)
    if batch_of(y) == 0:
        return  # raises ValueError: checked in test_softmax_with_loss
    book = None
    if y.values.shape[-1] > 1 and y.values.ndim == 2:
        book = lambda y, t: (Book.cross_entropy_error(y, t),)  # noqa: E731
    quiet = not (tame(y.values, t.values) and (y.values >= 0).all())  # log of a negative y warns
    checks = ({"k": max(y.values.shape[-1], batch_of(y)), "scale": 1.0},)
    check_backends(lambda y, t: (F.cross_entropy_error(y, t),), [y, t], checks, book=book, quiet=quiet)


# --- Layers ---


@PROPERTY
@given(args=same_shape_pairs())
def test_relu_layer(args):
    """forward gives (out, mask); backward zeroes dout in place, or raises ValueError when it is read-only."""
    x, dout = args

    def relu_layer(x, dout):
        layer = Relu()
        out = layer.forward(x)
        if dout.flags.writeable:
            assert layer.backward(dout) is dout
        else:
            with pytest.raises(ValueError, match="read-only"):
                layer.backward(dout)
        return out, layer.mask, dout

    # A read-only dout comes back as it was.
    book = Book.relu_layer if not dout.layout.readonly else lambda x, d: Book.relu_layer(x, d)[:2] + (d,)  # noqa: E731
    check_backends(relu_layer, [x, dout], ({"exact": True},) * 3, book=book, changes=(1,))


SIGMOID_TAILS = [-1000.0, -709.5, -700.0, -88.5, -80.0, -30.0, -1.0, 0.0, 15.0, 30.0, 100.0, 700.0]


@PROPERTY
@given(args=same_shape_pairs())
@example(args=(contiguous(SIGMOID_TAILS, np.float64), contiguous(np.linspace(-3, 3, len(SIGMOID_TAILS)), np.float64)))
@example(args=(contiguous(SIGMOID_TAILS, np.float32), contiguous(np.linspace(-3, 3, len(SIGMOID_TAILS)), np.float32)))
def test_sigmoid_layer(args):
    x, dout = args
    dtype = least_precise(x, dout)
    dx_tolerance = {"scale": sigmoid_grad_scale(x.values, dout.values, dtype), "tol_dtype": dtype}

    def sigmoid_layer(x, dout):
        layer = Sigmoid()
        out = layer.forward(x)
        expected_dx = replayed_on_reference(layer, "backward", dout)
        dx = layer.backward(dout)
        assert_matches(dx, expected_dx, what=f"{backend_name()}: dx vs the reference's from this out", **dx_tolerance)
        return out, dx

    checks = (tolerance(x.values.dtype), None)
    check_backends(sigmoid_layer, [x, dout], checks, book=Book.sigmoid_layer, book_checks=(checks[0], dx_tolerance))


@st.composite
def affine_cases(draw):
    """x (N, ...) with D features, W (D, M), b (M,) or (1, M), dout (N, M); dtypes drawn apart."""
    if one_in_ten(draw):  # several K blocks (KC is 256 on the generic and AVX2 paths, 1024-2048 on
        # AVX-512) and row blocks (MC is 112-128)
        n, m, rest = draw(st.sampled_from([129, 300])), draw(st.sampled_from([17, 130])), 1
        features = (draw(st.sampled_from([257, 400, 2100])),)
    else:
        n, m, rest = size(draw, BATCHES), size(draw, SIDES), draw(st.sampled_from([1, 1, 2, 3]))
        features = (size(draw, SIDES),) if rest == 1 else draw(hnp.array_shapes(min_dims=rest, max_dims=rest, max_side=4))
    d = math.prod(features)
    x_dtype, param_dtype, dout_dtype = draw(dtypes()), draw(dtypes()), draw(dtypes())
    b_shape = draw(st.sampled_from([(m,), (1, m)]))
    args = (
        draw(float_args((n, *features), x_dtype, huge=False)),
        draw(float_args((d, m), param_dtype, huge=False)),
        draw(float_args(b_shape, param_dtype, huge=False)),
        draw(float_args((n, m), dout_dtype, huge=False)),
    )
    if sorted((n, d, m))[:2] == [1, 1]:  # a product with a 1x1 operand: np.dot's 0 · NaN is 0 there,
        # IEEE's NaN elsewhere (test_ops_oracle.test_zero_times_nan_in_affine_is_nan); finite values here
        args = tuple(arg._replace(values=np.nan_to_num(arg.values, nan=1.0, posinf=2.0, neginf=-2.0)) for arg in args)
    return args


def large_affine_case(n, d, m, dtypes, b_shape=None, w_layout=None, seed=0):
    """Finite normal x (n, d), W (d, m), b (``b_shape``, default (m,)) and dout (n, m) of
    ``dtypes`` (x, parameters, dout), W laid out as ``w_layout`` (default contiguous): examples
    past the GEMM blocks, which the drawn examples reach about one time in ten."""
    rng = np.random.default_rng(seed)
    x_dtype, param_dtype, dout_dtype = dtypes
    shapes = ((n, d), (d, m), b_shape or (m,), (n, m))
    x, W, b, dout = (contiguous(rng.standard_normal(shape), dtype)
                     for shape, dtype in zip(shapes, (x_dtype, param_dtype, param_dtype, dout_dtype)))
    return x, W._replace(layout=w_layout or W.layout), b, dout


@PROPERTY
@given(case=affine_cases())
@example(case=large_affine_case(129, 257, 17, (np.float64,) * 3))
@example(case=large_affine_case(300, 2100, 130, (np.float32,) * 3, b_shape=(1, 130),
                                w_layout=Layout(perm=(1, 0), steps=(1, -1), lead=1, shift=4, readonly=True)))
@example(case=large_affine_case(129, 400, 17, (np.float32, np.float64, np.float32), seed=1))
def test_affine_layer(case):
    x, W, b, dout = (arg.values for arg in case)
    with np.errstate(all="ignore"):  # |x|·|W| meets inf · 0 where the result is NaN anyway
        checks = affine_checks(x, W, b, dout)
    # Each product is as precise as NumPy's dtype for its two operands (x·W in float32 when
    # both are float32, even when b makes out float64); subnormal sums hold fewer digits.
    pairs = ((x, W), (dout, W), (x, dout), (dout, dout))
    checks = [
        dict(options, tol_dtype=(dtype := np.result_type(*pair)), scale=options["scale"] + tiny(dtype))
        for options, pair in zip(checks, pairs)
    ]
    results = check_backends(affine_run, case, checks, book=Book.affine)
    for out, dx, dW, db in results.values():
        assert out.shape == dout.shape and dx.shape == x.shape and dW.shape == W.shape and db.shape == (W.shape[1],)


@pytest.mark.parametrize("t_dtype", [np.float64, np.int64], ids=lambda d: np.dtype(d).name)
def test_targets_reduce_by_argmax_in_their_own_dtype(t_dtype):
    """Found by test_softmax_with_loss: t (here 1 and 1 + 1e-9, or 2**24 and 2**24 + 1) once
    rounded to float32 logits' dtype, the argmax, so the loss, moved away from the book's."""
    x = np.array([[0.1, -0.1, 0.6]], np.float32)
    t = np.array([[1.0, 1.0 + 1e-9, 0.0]]) if t_dtype is np.float64 else np.array([[2**24, 2**24 + 1, 0]])
    expected = Book.softmax_loss(x, t)
    for name in ALL_BACKENDS:
        with backend_in_use(name):
            assert_matches(F.softmax_loss(x, t), expected, k=3, what=name)
            assert_matches(SoftmaxWithLoss().forward(x, t), expected, k=3, what=name)
