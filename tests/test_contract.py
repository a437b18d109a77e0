"""The contract every backend keeps: references not copies, fresh gradients, in-place Relu, backend choice."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import DTYPES, available_backends, labels, normal, run_python

import bpfast
from bpfast.gradient import numerical_gradient
from bpfast.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from bpfast.nets import TwoLayerNet

dtype_param = pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)


@pytest.mark.parametrize("bias_shape", ["(M,)", "(1,M)"])
@dtype_param
def test_in_place_updates_reach_the_next_forward(backend, dtype, bias_shape):
    W = normal(1, (7, 5), dtype)
    b = normal(2, (5,) if bias_shape == "(M,)" else (1, 5), dtype)
    x = normal(3, (4, 7), dtype)
    layer = Affine(W, b)
    assert layer.W is W and layer.b is b  # references, not copies
    before = layer.forward(x)
    layer.backward(np.ones_like(before))
    W -= 0.5 * layer.dW  # the book's params[k] -= lr * grads[k]
    b -= 0.5 * layer.db.reshape(b.shape)
    after = layer.forward(x)
    with bpfast.use_backend("numpy"):
        expected = Affine(W.copy(), b.copy()).forward(x)
    np.testing.assert_allclose(after, expected, rtol=1e-5 if dtype == np.float32 else 1e-12)
    assert not np.allclose(after, before)


def test_numerical_gradient_writes_reach_the_layers(backend):
    """numerical_gradient perturbs params in place; the loss must see every perturbation."""
    np.random.seed(3)
    net = TwoLayerNet(4, 3, 3)
    x, t = normal(1, (2, 4), np.float64), labels(2, 2, 3)
    base = net.loss(x, t)
    seen = []

    def f(W):
        seen.append(net.loss(x, t))
        return seen[-1]

    numerical_gradient(f, net.params["b2"])
    assert len(set(seen)) == 6 and base not in seen  # b2[i] + h and b2[i] - h: six different losses
    assert net.loss(x, t) == base  # and b2 is restored


@pytest.mark.parametrize("ndim", [1, 2, 3, 4])
def test_numerical_gradient_restores_x_and_works_for_any_ndim(ndim):
    x = normal(1, (2, 3, 1, 2)[:ndim], np.float64)
    original = x.copy()
    weights = normal(2, x.shape, np.float64)
    grad = numerical_gradient(lambda a: float(np.sum(weights * a**2)), x)
    np.testing.assert_array_equal(x, original)
    assert grad.shape == x.shape and grad.dtype == x.dtype
    np.testing.assert_allclose(grad, 2 * weights * original, rtol=1e-6, atol=1e-8)


def test_numerical_gradient_restores_x_when_f_ignores_its_argument():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    grad = numerical_gradient(lambda _: float(x[0, 1] * x[1, 0]), x)
    np.testing.assert_array_equal(x, [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(grad, [[0, 3], [2, 0]], atol=1e-8)


def affine_round(layer, seed, dtype):
    """Forward (4, 7) data through a (7, 5) Affine, then backward: (dx, dW, db)."""
    layer.forward(normal(seed, (4, 7), dtype))
    dx = layer.backward(normal(seed + 1, (4, 5), dtype))
    return dx, layer.dW, layer.db


@dtype_param
def test_gradients_handed_out_never_change(backend, dtype):
    layer = Affine(normal(1, (7, 5), dtype), normal(2, (5,), dtype))
    first = affine_round(layer, 10, dtype)
    kept = [a.copy() for a in first]
    second = affine_round(layer, 20, dtype)
    for a, b, k in zip(first, second, kept):
        np.testing.assert_array_equal(a, k)
        assert not np.shares_memory(a, b)
        assert not np.array_equal(a, b)

    sig = Sigmoid()
    sig.forward(normal(3, (4, 5), dtype))
    dx1 = sig.backward(normal(4, (4, 5), dtype))
    kept1 = dx1.copy()
    sig.forward(normal(5, (4, 5), dtype))
    sig.backward(normal(6, (4, 5), dtype))
    np.testing.assert_array_equal(dx1, kept1)

    loss = SoftmaxWithLoss()
    loss.forward(normal(7, (4, 5), dtype), labels(8, 4, 5))
    dx1 = loss.backward()
    kept1 = dx1.copy()
    loss.forward(normal(9, (4, 5), dtype), labels(10, 4, 5))
    dx2 = loss.backward()
    np.testing.assert_array_equal(dx1, kept1)
    assert not np.shares_memory(dx1, dx2)


def test_two_layer_net_gradients_never_change(backend):
    np.random.seed(0)
    net = TwoLayerNet(6, 5, 3)
    grads = net.gradient(normal(1, (4, 6), np.float64), labels(2, 4, 3))
    kept = {k: v.copy() for k, v in grads.items()}
    net.gradient(normal(3, (4, 6), np.float64), labels(4, 4, 3))
    for key in grads:
        np.testing.assert_array_equal(grads[key], kept[key], err_msg=key)
        assert not np.shares_memory(grads[key], net.params[key])


@dtype_param
def test_backward_returns_fresh_arrays(backend, dtype):
    x, W, b, dout = normal(1, (4, 7), dtype), normal(2, (7, 5), dtype), normal(3, (5,), dtype), normal(4, (4, 5), dtype)
    layer = Affine(W, b)
    out = layer.forward(x)
    dx = layer.backward(dout)
    arrays = {"x": x, "W": W, "b": b, "dout": dout, "out": out}
    for name, result in {"dx": dx, "dW": layer.dW, "db": layer.db}.items():
        for other_name, other in arrays.items():
            assert not np.shares_memory(result, other), f"{name} shares memory with {other_name}"

    sig = Sigmoid()
    out = sig.forward(x)
    assert not np.shares_memory(out, x)
    dout = normal(5, x.shape, dtype)
    dxs = sig.backward(dout)
    assert not np.shares_memory(dxs, dout) and not np.shares_memory(dxs, out)

    relu = Relu()
    out = relu.forward(x)
    assert not np.shares_memory(out, x) and not np.shares_memory(relu.mask, x)

    swl = SoftmaxWithLoss()
    swl.forward(x, labels(6, 4, 7))
    dxl = swl.backward()
    assert not np.shares_memory(dxl, swl.y) and not np.shares_memory(dxl, x)


@dtype_param
def test_relu_backward_zeroes_dout_in_place(backend, dtype):
    x = normal(1, (5, 9), dtype)
    layer = Relu()
    layer.forward(x)
    np.testing.assert_array_equal(layer.mask, x <= 0)
    dout = normal(2, (5, 9), dtype)
    expected = np.where(x <= 0, 0, dout)
    dx = layer.backward(dout)
    assert dx is dout
    np.testing.assert_array_equal(dout, expected)


def test_relu_backward_on_a_view_writes_through(backend):
    x = normal(1, (6, 8), np.float64)
    layer = Relu()
    layer.forward(x)
    base = normal(2, (6, 16), np.float64)
    view = base[:, ::2]
    expected_base = base.copy()
    expected_base[:, ::2][x <= 0] = 0
    assert layer.backward(view) is view
    np.testing.assert_array_equal(base, expected_base)


@dtype_param
def test_relu_backward_read_only_dout(backend, dtype):
    layer = Relu()
    layer.forward(normal(1, (3, 4), dtype))
    dout = normal(2, (3, 4), dtype)
    kept = dout.copy()
    dout.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        layer.backward(dout)
    np.testing.assert_array_equal(dout, kept)


@pytest.mark.parametrize("shape", [(3, 1, 28, 28), (2, 4, 5), (1, 3, 2, 2, 2)], ids=str)
def test_affine_flattens_and_restores_shape(backend, shape):
    d = int(np.prod(shape[1:]))
    x = normal(1, shape, np.float64)
    layer = Affine(normal(2, (d, 4), np.float64), np.zeros((1, 4)))
    out = layer.forward(x)
    assert out.shape == (shape[0], 4)
    assert layer.original_x_shape == shape and layer.x.shape == (shape[0], d)
    dx = layer.backward(np.ones((shape[0], 4)))
    assert dx.shape == shape
    assert layer.db.shape == (4,) and layer.dW.shape == (d, 4)
    np.testing.assert_array_equal(layer.db, np.full(4, shape[0], dtype=np.float64))


# --- Choosing the backend ---


def test_backends_lists_what_loads():
    names = bpfast.backends()
    assert "numpy" in names
    assert names == [n for n in ("cpp", "numba", "numpy") if n in names]  # fastest first
    assert names == available_backends()


def test_use_backend_nests_and_restores():
    outer = bpfast.get_backend()
    with bpfast.use_backend("numpy") as name:
        assert name == "numpy" and bpfast.get_backend() == "numpy"
        for other in available_backends():
            with bpfast.use_backend(other):
                assert bpfast.get_backend() == other
            assert bpfast.get_backend() == "numpy"
    assert bpfast.get_backend() == outer


def test_use_backend_restores_on_exception():
    outer = bpfast.get_backend()
    with pytest.raises(KeyError):
        with bpfast.use_backend("numpy"):
            raise KeyError("boom")
    assert bpfast.get_backend() == outer


@pytest.fixture
def restore_default_backend():
    from bpfast import _backend

    saved = _backend._default
    yield
    _backend._default = saved


@pytest.mark.usefixtures("restore_default_backend")
def test_set_backend_changes_the_default():
    for name in available_backends():
        bpfast.set_backend(name)
        assert bpfast.get_backend() == name
        with bpfast.use_backend("numpy"):
            assert bpfast.get_backend() == "numpy"
        assert bpfast.get_backend() == name


@pytest.mark.usefixtures("restore_default_backend")
@pytest.mark.parametrize("name", ["tensorflow", "", "NumPy", "c++"])
def test_unknown_backend_is_a_value_error(name):
    before = bpfast.get_backend()
    with pytest.raises(ValueError, match="unknown backend"):
        bpfast.set_backend(name)
    with pytest.raises(ValueError, match="unknown backend"):
        with bpfast.use_backend(name):
            pass  # pragma: no cover
    assert bpfast.get_backend() == before


@pytest.mark.parametrize("name", ["numpy", "numba", "cpp"])
def test_bpfast_backend_at_import(name):
    if name not in available_backends():
        pytest.skip(f"backend {name!r} is not available here")
    result = run_python(["-c", "import bpfast, json; print(json.dumps(bpfast.get_backend()))"], BPFAST_BACKEND=name)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == name


def test_bpfast_backend_unknown_at_import():
    """A typo is warned about and the default runs: `import bpfast` (and `bpfast info`) must not fail."""
    result = run_python(["-c", "import bpfast; print(bpfast.get_backend())"], BPFAST_BACKEND="bogus")
    assert result.returncode == 0, result.stderr
    assert "RuntimeWarning: BPFAST_BACKEND='bogus' ignored (not one of cpp, numba, numpy)" in result.stderr
    assert result.stdout.strip() == available_backends()[0]


def test_default_backend_is_the_fastest_available():
    result = run_python(["-c", "import bpfast; print(bpfast.get_backend())"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == available_backends()[0]


class _Tagged(np.ndarray):
    """An ndarray subclass: the layers hand plain arrays to the kernels after a few attribute
    reads, and take their general (converting, checking) path for anything else, this included."""


def _tagged(a):
    return a.view(_Tagged)


@pytest.mark.parametrize(
    "x_dtype, w_dtype", [(np.float32, np.float32), (np.float64, np.float64), (np.float32, np.float64)], ids=str
)
def test_plain_arrays_and_the_general_path_agree_bit_for_bit(backend, x_dtype, w_dtype):
    """Affine and SoftmaxWithLoss give the same bits, dtypes and attributes on both paths."""
    x, W, b = normal(1, (13, 7), x_dtype), normal(2, (7, 5), w_dtype), normal(3, (5,), w_dtype)
    dout = normal(4, (13, 5), w_dtype)
    results = []
    for wrap in (np.asarray, _tagged):
        layer = Affine(wrap(W), wrap(b))
        out = layer.forward(wrap(x))
        dx = layer.backward(wrap(dout))
        results.append([np.asarray(a) for a in (out, dx, layer.dW, layer.db, layer.x)] + [layer.original_x_shape])
    for plain, general in zip(*results):
        if isinstance(plain, tuple):
            assert plain == general
        else:
            assert plain.dtype == general.dtype and np.array_equal(plain, general)

    logits = normal(5, (13, 5), w_dtype)
    for t in (labels(6, 13, 5), np.eye(5, dtype=w_dtype)[labels(6, 13, 5)]):
        results = []
        for wrap in (np.asarray, _tagged):
            loss_layer = SoftmaxWithLoss()
            loss = loss_layer.forward(wrap(logits), wrap(t))
            dx = loss_layer.backward()
            results.append((np.asarray(loss), np.asarray(loss_layer.y), np.asarray(dx)))
        (loss_p, y_p, dx_p), (loss_g, y_g, dx_g) = results
        assert loss_p.dtype == loss_g.dtype and loss_p == loss_g
        assert y_p.dtype == y_g.dtype and np.array_equal(y_p, y_g)
        assert dx_p.dtype == dx_g.dtype and np.array_equal(dx_p, dx_g)


def test_add_layer_backward_gives_each_input_its_own_array(backend):
    """The book's dout * 1: dx and dy are fresh arrays, so a Relu.backward zeroing one of them in
    place (the layer it flows into) cannot change the other branch's gradient or the caller's dout."""
    from bpfast.layers import AddLayer

    dout = np.ones(3)
    dx, dy = AddLayer().backward(dout)
    assert dx is not dout and dy is not dout and dx is not dy
    relu = Relu()
    relu.forward(np.array([-1.0, 2.0, 3.0]))
    relu.backward(dx)  # zeroes dx[0] in place
    np.testing.assert_array_equal(dx, [0, 1, 1])
    np.testing.assert_array_equal(dy, [1, 1, 1])
    np.testing.assert_array_equal(dout, [1, 1, 1])


@pytest.mark.parametrize("dout", [2, 0.5, np.float32(0.5), np.float64(3.0), np.array(3.0)], ids=repr)
@pytest.mark.parametrize("target", ["labels", "one-hot"])
@dtype_param
def test_softmax_with_loss_backward_scales_by_dout(backend, dtype, target, dout):
    """backward(dout) is dout times backward(): the loss inside a larger graph, or weighted."""
    from bpfast.functions import softmax_loss_backward

    t = labels(2, 6, 4)
    if target == "one-hot":
        t = np.eye(4, dtype=dtype)[t]
    layer = SoftmaxWithLoss()
    layer.forward(normal(1, (6, 4), dtype), t)
    unit = layer.backward()
    scaled = layer.backward(dout)
    rtol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(scaled, float(dout) * unit, rtol=rtol)
    np.testing.assert_allclose(softmax_loss_backward(layer.y, t, dout), float(dout) * unit, rtol=rtol)
