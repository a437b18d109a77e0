"""TwoLayerNet's one-call step: the same numbers and layer attributes as the layered path."""

from __future__ import annotations

import numpy as np
import pytest

import bpfast
from bpfast.layers import Sigmoid
from bpfast.nets import TwoLayerNet

ATTRIBUTES = {"Affine1": ("x", "original_x_shape", "dW", "db"), "Relu1": ("mask",), "Affine2": ("x", "original_x_shape", "dW", "db")}


def make_pair(dtype, sizes=(784, 50, 10)):
    nets = []
    for _ in range(2):
        np.random.seed(7)
        nets.append(TwoLayerNet(*sizes, dtype=dtype))
    return nets


def batch(rng, n=100, d=784, c=10, x_dtype=np.float32, onehot=False, image=False):
    x = rng.random((n, d), dtype=np.float32).astype(x_dtype)
    if image:
        x = x.reshape(n, 1, 28, 28)
    t = rng.integers(0, c, n).astype(np.uint8)
    return x, (np.eye(c)[t] if onehot else t)


def assert_same_state(fused, layered):
    for name, attrs in ATTRIBUTES.items():
        for attr in attrs:
            a, b = getattr(fused.layers[name], attr), getattr(layered.layers[name], attr)
            if isinstance(a, tuple):
                assert a == b, (name, attr)
            else:
                assert a.dtype == b.dtype and a.shape == b.shape, (name, attr)
                np.testing.assert_array_equal(a, b, err_msg=f"{name}.{attr}")
    assert fused.lastLayer.loss == layered.lastLayer.loss
    assert type(fused.lastLayer.loss) is type(layered.lastLayer.loss)
    np.testing.assert_array_equal(fused.lastLayer.y, layered.lastLayer.y)
    assert fused.lastLayer.t is not None


CASES = [
    pytest.param(np.float32, np.float64, False, False, id="book-float32-data-float64-weights"),
    pytest.param(np.float32, np.float32, False, False, id="float32"),
    pytest.param(np.float64, np.float64, True, False, id="float64-onehot"),
    pytest.param(np.float32, np.float64, True, True, id="images-onehot"),
]


@pytest.mark.parametrize("x_dtype, w_dtype, onehot, image", CASES)
def test_gradient_matches_layered_path_bitwise(backend, rng, x_dtype, w_dtype, onehot, image):
    fused, layered = make_pair(w_dtype)
    x, t = batch(rng, x_dtype=x_dtype, onehot=onehot, image=image)
    got = fused.gradient(x, t)
    want = layered._layered_gradient(x, t)
    for key in ("W1", "b1", "W2", "b2"):
        assert got[key].dtype == want[key].dtype == np.dtype(w_dtype)
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert_same_state(fused, layered)


@pytest.mark.parametrize("onehot", [False, True], ids=["labels", "onehot"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("w_dtype", [np.float32, np.float64])
def test_wide_hidden_layer_matches_layered_path_bitwise(backend, rng, w_dtype, threads, onehot):
    """A hidden layer of 1000: the second layer's dx (through the ReLU's mask, fused in the
    one-call step) runs in column blocks beside dW2 on two threads, and the step takes the way
    of nets whose weights pass 1 MiB; the same bits as the layered path's product and separate
    mask."""
    fused, layered = make_pair(w_dtype, sizes=(784, 1000, 10))
    x, t = batch(rng, onehot=onehot)
    before = bpfast.get_num_threads()
    try:
        bpfast.set_num_threads(threads)
        got = fused.gradient(x, t)
        want = layered._layered_gradient(x, t)
    finally:
        bpfast.set_num_threads(before)
    for key in ("W1", "b1", "W2", "b2"):
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
    assert_same_state(fused, layered)


def count_cpp_calls(monkeypatch, kernel: str) -> list:
    """A list that grows by one at each call of the cpp backend's ``kernel`` (skips without it)."""
    if "cpp" not in bpfast.backends():
        pytest.skip("the compiled core is not built")
    from bpfast.backends import cpp

    calls = []
    real = getattr(cpp, kernel)
    monkeypatch.setattr(cpp, kernel, lambda *a: calls.append(1) or real(*a))
    return calls


def test_cpp_runs_the_one_call_kernel(monkeypatch, rng):
    calls = count_cpp_calls(monkeypatch, "two_layer_gradient")
    with bpfast.use_backend("cpp"):
        net = make_pair(np.float64)[0]
        net.gradient(*batch(rng))
    assert calls == [1]


def test_custom_layers_take_the_layered_path(backend, rng, monkeypatch):
    fused, layered = make_pair(np.float64)
    for net in (fused, layered):
        net.layers["Relu1"] = Sigmoid()
    x, t = batch(rng)
    got = fused.gradient(x, t)
    want = layered._layered_gradient(x, t)
    for key in got:
        np.testing.assert_array_equal(got[key], want[key])


def test_replaced_params_take_the_layered_path(backend, rng):
    """The layers hold the arrays; a rebound params entry is not what they compute with."""
    fused, layered = make_pair(np.float64)
    for net in (fused, layered):
        net.params["W1"] = net.params["W1"].copy() * 2
    x, t = batch(rng)
    got = fused.gradient(x, t)
    want = layered._layered_gradient(x, t)
    np.testing.assert_array_equal(got["W1"], want["W1"])


def step_both(stepped, updated, x, t, lr=0.1, x_layered=None):
    """train_step on one net; the layered gradient and NumPy's update on its twin."""
    loss = stepped.train_step(x, t, lr)
    grads = updated._layered_gradient(x if x_layered is None else x_layered, t)
    for key in grads:
        updated.params[key] -= lr * grads[key]
    assert loss == updated.lastLayer.loss


def assert_same_params(stepped, updated):
    for key in stepped.params:
        np.testing.assert_array_equal(stepped.params[key], updated.params[key], err_msg=key)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_equals_gradient_then_update(backend, rng, dtype):
    stepped, updated = make_pair(dtype)
    params_before = dict(stepped.params)
    for _ in range(30):
        step_both(stepped, updated, *batch(rng))
    for key in stepped.params:
        assert stepped.params[key] is params_before[key], "updated in place"
    assert_same_params(stepped, updated)


@pytest.mark.parametrize("layout", ["fortran", "strided"])
def test_train_step_on_params_not_c_contiguous(backend, rng, layout):
    """Params the kernel cannot update in place (Fortran order, a strided view) take the layered
    step, updated in place all the same."""
    stepped, updated = make_pair(np.float64, sizes=(30, 8, 5))
    for net in (stepped, updated):
        W1 = net.params["W1"]
        if layout == "fortran":
            W1 = np.asfortranarray(W1)
        else:
            W1 = np.repeat(W1, 2, axis=1)[:, ::2]
            assert not W1.flags.c_contiguous and W1.flags.writeable
        net.params["W1"] = net.layers["Affine1"].W = W1
    before = stepped.params["W1"]
    for _ in range(3):
        step_both(stepped, updated, *batch(rng, n=20, d=30, c=5))
    assert stepped.params["W1"] is before
    assert_same_params(stepped, updated)


@pytest.mark.parametrize("sizes", [(5, 6, 4), (784, 400, 10)], ids=["small", "over-1MiB"])
def test_nan_in_one_hot_targets_picks_the_label_as_numpy_argmax(backend, sizes):
    """The book's cross_entropy_error takes t.argmax(axis=1) of one-hot t: the first NaN of a
    row wins. The one-call step does the same (small nets and nets past 1 MiB of weights)."""
    fused, layered = make_pair(np.float64, sizes=sizes)
    x = np.random.default_rng(4).random((8, sizes[0]))
    t = np.eye(4 if sizes[2] == 4 else 10)[[1, 2, 0, 3, 1, 0, 2, 3]]
    t[0, :4] = [0, np.nan, 1, 0]
    t[1, :4] = [0.2, 0.7, np.nan, 0.1]
    fused.gradient(x, t)
    layered._layered_gradient(x, t)
    y = layered.lastLayer.y
    book = -np.sum(np.log(y[np.arange(8), t.argmax(axis=1)] + 1e-7)) / 8
    np.testing.assert_allclose(layered.lastLayer.loss, book, rtol=1e-12)
    np.testing.assert_allclose(fused.lastLayer.loss, book, rtol=1e-12)


def test_loss_backward_after_gradient_uses_its_targets(backend, rng):
    """After gradient(x, t2), the loss layer's backward is that of t2 (the one-call path sets
    the loss layer's target as the layered path does), also after an earlier loss(x, t1)."""
    net = make_pair(np.float64, sizes=(30, 8, 5))[0]
    x, t1 = batch(rng, n=12, d=30, c=5)
    t2 = (t1 + 1) % 5
    net.loss(x, t1)
    net.gradient(x, t2)
    y = net.lastLayer.y
    np.testing.assert_allclose(net.lastLayer.backward(), (y - np.eye(5)[t2]) / len(x), rtol=1e-14, atol=1e-17)


LEARNING_RATES = {
    "float": 0.1,
    "int": 1,
    "np.float64": np.float64(0.1),  # promotes float32 params' update to float64 in NumPy
    "np.float32": np.float32(0.1),
    "0-d-f8": np.array(0.1),
    "0-d-f4": np.array(0.1, dtype=np.float32),
}


@pytest.mark.parametrize("lr", list(LEARNING_RATES.values()), ids=list(LEARNING_RATES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_takes_lr_as_numpy_would(backend, rng, dtype, lr):
    """Every form of lr gives the bits of ``params -= lr * grads`` (NumPy's promotion rules)."""
    stepped, updated = make_pair(dtype, (33, 17, 7))
    for _ in range(3):
        step_both(stepped, updated, *batch(rng, n=13, d=33, c=7), lr=lr)
    assert_same_params(stepped, updated)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cpp_fuses_the_update_unless_lr_promotes_it(monkeypatch, rng, dtype):
    """The native update runs for every lr that keeps lr * grad in the params' dtype; an lr that
    NumPy would promote (np.float64 or a float64 0-d array with float32 params) takes NumPy's way."""
    calls = count_cpp_calls(monkeypatch, "two_layer_train_step")
    with bpfast.use_backend("cpp"):
        net = make_pair(dtype, (33, 17, 7))[0]
        fused = {}
        for name, lr in LEARNING_RATES.items():
            calls.clear()
            net.train_step(*batch(rng, n=13, d=33, c=7), lr)
            fused[name] = calls == [1]
    promoting = {"np.float64", "0-d-f8"} if dtype == np.float32 else set()
    assert fused == {name: name not in promoting for name in LEARNING_RATES}


def steps_agree(rng, sizes, n, dtype, x_dtype, steps=3):
    stepped, updated = make_pair(dtype, sizes)
    for _ in range(steps):
        step_both(stepped, updated, *batch(rng, n=n, d=sizes[0], c=sizes[2], x_dtype=x_dtype))
    assert_same_params(stepped, updated)


# The compiled step and its native update on every kernel path, on sizes that are not register
# blocks (tiles and column edges, widened float32 data, one thread or both; small networks split
# their rows between the threads, (300,300,10) with 3 rows as 1 + 2).
STEP_SHAPES = [((5, 1, 3), 1), ((33, 17, 7), 13), ((784, 50, 10), 100), ((100, 129, 20), 64), ((40, 300, 33), 7), ((300, 300, 10), 3)]


@pytest.mark.parametrize("sizes, n", STEP_SHAPES, ids=lambda v: str(v))
@pytest.mark.parametrize("dtype, x_dtype", [(np.float32, np.float32), (np.float64, np.float64), (np.float64, np.float32)])
def test_compiled_step_equals_gradient_then_update(cpu_path, rng, sizes, n, dtype, x_dtype):
    with bpfast.use_backend("cpp"):
        steps_agree(rng, sizes, n, dtype, x_dtype)


def test_compiled_step_through_the_blas_hatch(rng):
    pytest.importorskip("scipy.linalg.cython_blas")
    pytest.importorskip("bpfast._core", reason="the compiled core is not built")
    from bpfast import _blas

    try:
        _blas.use_scipy_blas(True)
        with bpfast.use_backend("cpp"):
            for dtype in (np.float32, np.float64):
                steps_agree(rng, (784, 50, 10), 100, dtype, np.float32)
    finally:
        _blas.use_scipy_blas(False)


def test_train_step_is_not_fooled_by_x_sharing_memory_with_a_parameter(backend, rng):
    # W2 (4,3) as the batch x (4,3): a step that updated W2 before dW1 = x^T·dh had read x
    # would compute dW1 from the new W2
    stepped, updated = make_pair(np.float64, (3, 4, 3))
    t = np.array([0, 2, 1, 1])
    step_both(stepped, updated, stepped.params["W2"], t, 0.5, x_layered=updated.params["W2"].copy())
    assert_same_params(stepped, updated)


def test_train_step_is_not_fooled_by_x_being_w1(backend, rng):
    # W1 (64,64) as the batch x (64,64): dW1 = x^T·dh reads x in place across tiles and threads,
    # so the step must finish the product before it updates W1
    stepped, updated = make_pair(np.float64, (64, 64, 10))
    t = rng.integers(0, 10, 64)
    step_both(stepped, updated, stepped.params["W1"], t, 0.5, x_layered=updated.params["W1"].copy())
    assert_same_params(stepped, updated)


def test_gradients_handed_out_stay_unchanged(backend, rng):
    net = make_pair(np.float64)[0]
    first = net.gradient(*batch(rng))
    snapshot = {k: v.copy() for k, v in first.items()}
    net.train_step(*batch(rng), 0.1)
    net.gradient(*batch(rng))
    for key in first:
        np.testing.assert_array_equal(first[key], snapshot[key])


@pytest.mark.parametrize(
    "labels, error, pattern",
    [
        (np.array([0, 10]), ValueError, r"label 10 at index 1 is outside \[0, 10\)"),
        (np.array([-1, 0]), ValueError, r"label -1 at index 0"),
        (np.array([0.0, 1.0]), TypeError, "labels must be integers"),
        (np.zeros((2, 9)), ValueError, "shape"),
    ],
)
def test_bad_targets_raise_like_the_layered_path(backend, rng, labels, error, pattern):
    net = make_pair(np.float64)[0]
    x = rng.random((2, 784))
    with pytest.raises(error, match=pattern):
        net.gradient(x, labels)
    with pytest.raises(error, match=pattern):
        net.train_step(x, labels, 0.1)


def test_empty_batch_raises(backend):
    net = make_pair(np.float64)[0]
    with pytest.raises(ValueError, match="empty batch"):
        net.gradient(np.zeros((0, 784)), np.zeros(0, dtype=int))
