"""bench/tuned_step.py and tuned_kernels.py: the hand-tuned NumPy and Numba competitors of the
benchmark compute the book's numbers: its SGD step (loss, gradients, updated parameters) on
labels and one-hot targets, its softmax, its Relu (out, mask, dx)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
pytestmark = pytest.mark.skipif(not (BENCH / "tuned_step.py").is_file(), reason="bench/ is not beside the tests (not a checkout)")
PARAM_KEYS = ("W1", "b1", "W2", "b2")


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import book_numpy
        import tuned_kernels
        import tuned_step

        yield book_numpy, tuned_step, tuned_kernels
    finally:
        sys.path.remove(str(BENCH))


def problem(wdtype, targets, n=37, d=300, h=130, o=17):
    """Sizes past a vector and a register block; a third of the pixels 0 as in MNIST."""
    rng = np.random.default_rng(3)
    x = rng.random((n, d), dtype=np.float32)
    x[x < 0.33] = 0
    labels = rng.integers(0, o, n)
    t = np.eye(o, dtype=wdtype)[labels] if targets == "one-hot" else labels.astype(np.int64)
    params = {
        "W1": (0.1 * rng.standard_normal((d, h))).astype(wdtype),
        "b1": (0.1 * rng.standard_normal(h)).astype(wdtype),
        "W2": (0.1 * rng.standard_normal((h, o))).astype(wdtype),
        "b2": (0.1 * rng.standard_normal(o)).astype(wdtype),
    }
    return x, t, params


@pytest.mark.parametrize("targets", ["labels", "one-hot"])
@pytest.mark.parametrize("wdtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["NumpyStep", "NumbaStep"])
def test_tuned_step_is_the_books_step(bench_modules, kind, wdtype, targets):
    book_numpy, tuned_step, _ = bench_modules
    if kind == "NumbaStep":
        pytest.importorskip("numba")
    x, t, init = problem(wdtype, targets)
    book = book_numpy.TwoLayerNet(*init["W1"].shape, init["W2"].shape[1], dtype=wdtype)
    for key in PARAM_KEYS:
        book.params[key][...] = init[key]
    expected_grads = book_numpy.sgd_step(book, x, t, 0.1)

    params = {k: v.copy() for k, v in init.items()}
    step = getattr(tuned_step, kind)(params, len(x))
    for repeat in range(2):  # the second step on the same buffers gives the same again
        for key in PARAM_KEYS:
            params[key][...] = init[key]
        loss = step(x, t, 0.1)
        rtol = 2e-5 if wdtype == np.float32 else 1e-12
        assert loss == pytest.approx(book.lastLayer.loss, rel=rtol)
        for key in PARAM_KEYS:
            scale = np.max(np.abs(expected_grads[key]))
            np.testing.assert_allclose(step.grads[key], expected_grads[key], rtol=0, atol=rtol * scale)
            np.testing.assert_allclose(params[key], book.params[key], rtol=0, atol=0.1 * rtol * scale)
            assert params[key].dtype == wdtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lib", ["Numpy", "Numba"])
def test_tuned_softmax_and_relu_are_the_books(bench_modules, lib, dtype):
    book_numpy, _, tuned_kernels = bench_modules
    if lib == "Numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(5)
    x = (3 * rng.standard_normal((37, 130))).astype(dtype)
    softmax = getattr(tuned_kernels, lib + "Softmax")()
    for shape in [(37, 130), (1, 17), (37, 130)]:  # the buffer follows the input's shape
        xs = x[: shape[0], : shape[1]]
        np.testing.assert_allclose(softmax(xs), book_numpy.softmax(xs), rtol=4 * np.finfo(dtype).eps * shape[1], atol=0)

    x.flat[::7] = 0
    x.flat[3] = np.nan
    dout = rng.standard_normal(x.shape).astype(dtype)
    book, relu = book_numpy.Relu(), getattr(tuned_kernels, lib + "Relu")()
    for _ in range(2):  # a second call on the same buffers
        np.testing.assert_array_equal(relu.forward(x), book.forward(x))
        np.testing.assert_array_equal(relu.mask, book.mask)
        given = dout.copy()
        assert relu.backward(given) is given  # in place, as the book's
        np.testing.assert_array_equal(given, book.backward(dout.copy()))
