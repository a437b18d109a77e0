"""Gradient checks (the book's gradient_check.py) and SGD training on every backend."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from conftest import MNIST_DIR, labels, normal, one_hot

import bpfast
from bpfast.gradient import gradient_check, numerical_gradient
from bpfast.nets import TwoLayerNet

PARAMS = ("W1", "b1", "W2", "b2")


def book_comparison(grad_backprop, grad_numerical):
    """ch05/gradient_check.py: the mean absolute difference per parameter."""
    return {key: float(np.average(np.abs(grad_backprop[key] - grad_numerical[key]))) for key in grad_numerical}


@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_gradient_check_small_net(backend, target):
    np.random.seed(7)
    net = TwoLayerNet(20, 10, 5)
    x = normal(1, (3, 20), np.float64)
    t = labels(2, 3, 5)
    if target == "one-hot":
        t = one_hot(t, 5)
    result = gradient_check(net, x, t)
    assert result.passed, result.errors
    assert set(result.errors) == set(PARAMS)
    for key, error in result.errors.items():
        assert error.mean_abs_diff < 1e-6, key
        assert error.max_rel_error < 1e-3, key  # relative check, as in CS231n's gradient check
    diffs = book_comparison(net.gradient(x, t), net.numerical_gradient(x, t))
    assert all(d < 1e-6 for d in diffs.values()), diffs


def test_gradient_check_catches_a_wrong_gradient(backend):
    """The check can fail: a network whose backprop is off by 1% does not pass."""
    np.random.seed(7)
    net = TwoLayerNet(6, 4, 3, weight_init_std=1.0)
    honest = net.gradient

    def skewed(x, t):
        grads = honest(x, t)
        return {k: v * 1.01 for k, v in grads.items()}

    net.gradient = skewed
    result = gradient_check(net, normal(1, (3, 6), np.float64), labels(2, 3, 3), atol=1e-6)
    assert not result.passed


def net_with_a_kink(dtype=np.float64):
    """A small net whose hidden unit 2 sits 3e-5 from ReLU's kink on sample 0: closer than the
    step h = 1e-4, so moving b1[2] by h flips that unit, and W1[i, 2] for the larger pixels."""
    np.random.seed(7)
    net = TwoLayerNet(20, 10, 5, weight_init_std=0.3, dtype=dtype)
    x = normal(1, (3, 20), np.float64).astype(dtype)
    net.params["b1"][2] = 3e-5 - float(x[0] @ net.params["W1"][:, 2])
    return net, x, labels(2, 3, 5)


def test_gradient_check_leaves_out_elements_at_a_relu_kink(backend):
    """The difference quotient across the kink mixes two slopes: the book's mean for b1 is far
    off although backprop is right; the check counts those elements and judges the rest."""
    net, x, t = net_with_a_kink()
    z = x @ net.params["W1"] + net.params["b1"]
    assert 0 < z[0, 2] < 1e-4 and np.abs(np.delete(z, 2, axis=1)).min() > 1e-3  # the one unit at the kink
    result = gradient_check(net, x, t)
    assert result.passed, result.errors
    assert result.errors["b1"].kinks == 1  # b1[2]: the only bias whose step reaches a kink
    assert result.errors["b1"].mean_abs_diff > 1e-6  # what the verdict would be without the kinks
    assert result.errors["W1"].kinks >= 1  # W1[i, 2] moves z[0, 2] by h*x[0, i]
    assert result.errors["W2"].kinks == 0 and result.errors["b2"].kinks == 0  # after the ReLU
    assert all(e.max_rel_error < 1e-3 for e in result.errors.values()), result.errors


def test_kinks_do_not_hide_a_wrong_gradient(backend):
    net, x, t = net_with_a_kink()
    honest = net.gradient
    net.gradient = lambda x, t: {k: v * 1.01 for k, v in honest(x, t).items()}
    result = gradient_check(net, x, t)
    assert not result.passed
    assert not result.errors["W2"].passed and result.errors["W2"].kinks == 0


def test_gradient_check_in_float32(backend):
    """float32 passes at its own default atol (the rounding of the loss over 2h), and a grossly
    wrong gradient still fails there."""
    net, x, t = net_with_a_kink(np.float32)
    result = gradient_check(net, x, t)
    assert result.passed, result.errors
    assert gradient_check(net, x, t, atol=1e-6).passed is False  # float64's limit is below float32's noise
    honest = net.gradient
    net.gradient = lambda x, t: {k: v * 1.5 for k, v in honest(x, t).items()}
    assert not gradient_check(net, x, t).passed


def read_idx(path, count, header):
    """The first ``count`` records of a gzip IDX file (header bytes, then one byte a value)."""
    with gzip.open(path, "rb") as f:
        f.read(header)
        return np.frombuffer(f.read(count * (784 if header == 16 else 1)), dtype=np.uint8)


@pytest.fixture(scope="module")
def mnist_first_three():
    images = MNIST_DIR / "train-images-idx3-ubyte.gz"
    if not images.exists():
        pytest.skip(f"MNIST not found at {MNIST_DIR} (the shared data directory beside the checkout)")
    x = read_idx(images, 3, 16).reshape(3, 784).astype(np.float32) / 255.0  # load_mnist(normalize=True)
    t = read_idx(MNIST_DIR / "train-labels-idx1-ubyte.gz", 3, 8).astype(np.int64)
    assert list(t) == [5, 0, 4]  # MNIST's first three training labels
    return x, one_hot(t, 10)  # one_hot_label=True gives float64


def test_gradient_check_mnist(backend, mnist_first_three):
    """ch05/gradient_check.py: 784-50-10 on the first three MNIST images (float32 x, float64 net).

    W1 is checked on a strided view of it (every 16th row, 5th column): numerical_gradient
    writes the view in place, which reaches the network. b1, W2, b2 are checked in full.
    """
    x, t = mnist_first_three
    np.random.seed(0)
    net = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    grad_backprop = net.gradient(x, t)
    assert all(grad_backprop[k].dtype == np.float64 for k in PARAMS)
    loss = lambda _: net.loss(x, t)  # noqa: E731 - the book's idiom
    views = {"W1": (slice(None, None, 16), slice(None, None, 5)), "b1": (), "W2": (), "b2": ()}
    grad_numerical = {key: numerical_gradient(loss, net.params[key][view]) for key, view in views.items()}
    diffs = book_comparison({k: grad_backprop[k][v] for k, v in views.items()}, grad_numerical)
    assert all(d < 1e-6 for d in diffs.values()), diffs
    assert np.abs(grad_numerical["W1"]).max() > 1e-6  # the view touches pixels that matter


@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_float32_net_stays_float32(backend, target):
    np.random.seed(1)
    net32 = TwoLayerNet(20, 10, 5, dtype=np.float32)
    np.random.seed(1)
    net64 = TwoLayerNet(20, 10, 5)
    assert all(net32.params[k].dtype == np.float32 for k in PARAMS)
    x = normal(1, (4, 20), np.float64)
    t = labels(2, 4, 5)
    t32 = t if target == "labels" else one_hot(t, 5, np.float32)
    loss = net32.loss(x.astype(np.float32), t32)
    assert np.asarray(loss).dtype == np.float32
    grads32 = net32.gradient(x.astype(np.float32), t32)
    grads64 = net64.gradient(x, t)
    for key in PARAMS:
        assert grads32[key].dtype == np.float32, key
        assert grads32[key].shape == net32.params[key].shape
        np.testing.assert_allclose(grads32[key], grads64[key], rtol=1e-3, atol=1e-6, err_msg=key)


def test_two_layer_net_dtype_must_be_float():
    with pytest.raises(TypeError):
        TwoLayerNet(2, 2, 2, dtype=np.float16)


# --- 30 SGD steps, 784-50-10, batch 100, lr 0.1 ---


def sgd_data():
    rng = np.random.default_rng(5)
    x = rng.random((1000, 784))
    t = np.argmax(x @ rng.standard_normal((784, 10)), axis=1)  # learnable labels
    batches = [rng.choice(1000, 100, replace=False) for _ in range(30)]
    return x, t, batches


def train(steps_data, step):
    """Run the book's loop with ``step(params, x, t) -> (grads, loss)``; returns (params, losses)."""
    x, t, batches = steps_data
    np.random.seed(0)
    net = TwoLayerNet(784, 50, 10)
    losses = []
    for idx in batches:
        grads, loss = step(net, x[idx], t[idx])
        losses.append(loss)
        for key in PARAMS:
            net.params[key] -= 0.1 * grads[key]
    return net.params, losses


def bpfast_step(net, x, t):
    grads = net.gradient(x, t)
    return grads, net.lastLayer.loss


def book_step(net, x, t):
    """The same step written with the book's formulas, independent of bpfast."""
    p = net.params
    a1 = np.dot(x, p["W1"]) + p["b1"]
    z1 = np.maximum(0, a1)
    a2 = np.dot(z1, p["W2"]) + p["b2"]
    e = np.exp(a2 - a2.max(axis=1, keepdims=True))
    y = e / e.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = -np.sum(np.log(y[np.arange(n), t] + 1e-7)) / n
    dy = y.copy()
    dy[np.arange(n), t] -= 1
    dy /= n
    dz1 = np.dot(dy, p["W2"].T)
    dz1[a1 <= 0] = 0
    grads = {"W2": np.dot(z1.T, dy), "b2": dy.sum(axis=0), "W1": np.dot(x.T, dz1), "b1": dz1.sum(axis=0)}
    return grads, loss


@pytest.fixture(scope="module")
def reference_training():
    data = sgd_data()
    with bpfast.use_backend("numpy"):
        params, losses = train(data, bpfast_step)
    return data, params, losses


def test_sgd_reference_matches_the_book(reference_training):
    data, params, losses = reference_training
    book_params, book_losses = train(data, book_step)
    for key in PARAMS:
        np.testing.assert_allclose(params[key], book_params[key], rtol=1e-10, atol=1e-14, err_msg=key)
    np.testing.assert_allclose(losses, book_losses, rtol=1e-10)
    assert losses[-1] < losses[0] - 0.05  # it learns


def test_sgd_30_steps_match_the_reference(backend, reference_training):
    data, ref_params, ref_losses = reference_training
    params, losses = train(data, bpfast_step)
    for key in PARAMS:
        assert params[key].dtype == np.float64
        np.testing.assert_allclose(params[key], ref_params[key], rtol=1e-8, atol=1e-12, err_msg=key)
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-8)


@pytest.mark.parametrize("settings, pattern", [({"batch_size": 0}, "batch_size must be at least 1"),
                                               ({"report_every": 0}, "report_every must be at least 1"),
                                               ({"iters": -1}, "iters must be at least 0"),
                                               ({"batch_size": 2.0}, "batch_size must be an integer, got float"),
                                               ({"iters": True}, "iters must be an integer, got bool")])
def test_train_refuses_sizes_out_of_range(settings, pattern):
    from bpfast.training import train

    np.random.seed(0)
    net = TwoLayerNet(4, 3, 2)
    data = (np.ones((6, 4)), np.array([0, 1] * 3))
    with pytest.raises((TypeError, ValueError), match=pattern):
        train(net, data, data, **settings)



@pytest.mark.parametrize("split", ["training", "test"])
def test_train_refuses_images_and_labels_of_different_lengths(split):
    from bpfast.training import train

    np.random.seed(0)
    net = TwoLayerNet(4, 3, 2)
    good, short = (np.ones((6, 4)), np.array([0, 1] * 3)), (np.ones((6, 4)), np.array([0]))
    data = (short, good) if split == "training" else (good, short)
    with pytest.raises(ValueError, match=f"the {split} set has 6 images but 1 labels"):
        train(net, *data, iters=2)


@pytest.mark.parametrize("t", [np.array([1]), np.zeros((1, 2)), np.array(1)])
def test_accuracy_needs_one_label_per_image(t):
    """One label against ten images was broadcast against every row (0.0 or 1.0, silently)."""
    from bpfast.training import accuracy

    np.random.seed(0)
    with pytest.raises(ValueError, match=r"accuracy: x has shape \(10, 4\) but t has shape"):
        accuracy(TwoLayerNet(4, 3, 2), np.ones((10, 4)), t)


@pytest.mark.parametrize("iters, expected", [(10, [0, 5, 10]), (6, [0, 5]), (5, [0, 5]), (1, [0]), (0, [])])
def test_eval_steps_measure_each_epoch_and_the_end_once(iters, expected):
    """Epochs of 5 steps: the first step of each, and the end unless the last step was measured."""
    from bpfast.training import eval_steps

    assert eval_steps(iters, 50, 10) == expected


def small_training_set(n=40, d=12, c=4):
    rng = np.random.default_rng(11)
    return rng.standard_normal((n, d)), rng.integers(0, c, n)


def test_train_reports_through_its_callbacks():
    """on_step(i, loss) every report_every steps (counted from 1) and at the end; on_eval at
    each measurement, with what the history records."""
    from bpfast.training import eval_steps, train

    data = small_training_set()
    np.random.seed(0)
    steps, evals = [], []
    history = train(TwoLayerNet(12, 6, 4), data, data, iters=7, batch_size=10, lr=0.1, report_every=3,
                    on_step=lambda i, loss: steps.append((i, loss)), on_eval=lambda *a: evals.append(a))
    assert steps == [(3, history.loss[2]), (6, history.loss[5]), (7, history.loss[6])]
    assert history.eval_iters == eval_steps(7, 40, 10) == [0, 4, 7]
    assert evals == list(zip(history.eval_iters, history.train_acc, history.test_acc))


@pytest.mark.parametrize("target", ["labels", "one-hot"])
def test_accuracy_counts_every_chunk(monkeypatch, target):
    from bpfast import training

    x, t = small_training_set(n=10)
    np.random.seed(0)
    net = TwoLayerNet(12, 6, 4, weight_init_std=1.0)
    expected = np.mean(net.predict(x).argmax(axis=1) == t)
    assert 0 < expected < 1
    monkeypatch.setattr(training, "EVAL_CHUNK", 3)
    assert training.accuracy(net, x, np.eye(4)[t] if target == "one-hot" else t) == expected


class BookInterfaceNet:
    """The book's TwoLayerNet interface (params, layers, lastLayer, gradient, predict) without
    train_step, as a reader's own network class has it."""

    def __init__(self, net):
        self._net, self.params, self.layers, self.lastLayer = net, net.params, net.layers, net.lastLayer

    def gradient(self, x, t):
        return self._net.gradient(x, t)

    def predict(self, x):
        return self._net.predict(x)


def test_train_steps_a_net_without_train_step_in_place(backend):
    """The book's update, params[key] -= lr * grads[key], on a net with no fused step: the
    layers compute with the updated arrays, as after the fused step."""
    from bpfast.training import train

    data = small_training_set()
    nets = []
    for _ in range(2):
        np.random.seed(3)
        nets.append(TwoLayerNet(12, 6, 4))
    plain, fused = BookInterfaceNet(nets[0]), nets[1]
    histories = []
    for net in (plain, fused):
        np.random.seed(5)  # the same batches
        histories.append(train(net, data, data, iters=20, batch_size=10, lr=0.1))
    assert plain.layers["Affine1"].W is plain.params["W1"] and plain.layers["Affine2"].b is plain.params["b2"]
    for key in PARAMS:
        np.testing.assert_allclose(plain.params[key], fused.params[key], rtol=1e-12, atol=1e-15, err_msg=key)
    np.testing.assert_allclose(histories[0].loss, histories[1].loss, rtol=1e-12)
    assert histories[0].loss[-1] < histories[0].loss[0]


def test_eval_steps_needs_a_batch():
    from bpfast.training import eval_steps

    assert eval_steps(10, 100, 25) == [0, 4, 8, 10]
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        eval_steps(10, 100, 0)


def test_numerical_gradient_restores_x_when_f_raises():
    x = np.array([1.0, 2.0, 3.0])
    calls = []

    def loss(_):
        calls.append(x.copy())
        if len(calls) == 3:  # the second element, its first difference
            raise FloatingPointError("boom")
        return float(x.sum())

    with pytest.raises(FloatingPointError):
        numerical_gradient(loss, x)
    np.testing.assert_array_equal(x, [1.0, 2.0, 3.0])
    assert calls[2][1] == 2.0 + 1e-4  # it did write the element before f raised
