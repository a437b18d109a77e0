"""The book's ``common/functions.py``: same names, same numbers, kernels underneath.

Floating inputs (float32/float64) run on the active backend; other dtypes (float16,
integers where NumPy keeps them) take the NumPy reference, so results always have the
dtype NumPy would give.
"""

from __future__ import annotations

import numpy as np

from bpfast import _arrays
from bpfast._backend import current
from bpfast.backends import numpy_ref

__all__ = [
    "identity_function",
    "step_function",
    "sigmoid",
    "sigmoid_grad",
    "relu",
    "relu_grad",
    "softmax",
    "sum_squared_error",
    "mean_squared_error",
    "cross_entropy_error",
    "softmax_loss",
]


def identity_function(x):
    """Returns x unchanged."""
    return x


def step_function(x):
    """1 where x > 0, else 0, as int (the book's ``np.array(x > 0, dtype=int)``)."""
    return np.array(_arrays.as_numeric(x, "x") > 0, dtype=int)


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise, any shape."""
    x = _arrays.as_numeric(x, "x")
    dtype = _arrays.float_result_dtype(x)
    if _arrays.kernel_dtype(dtype) is None:
        return numpy_ref.sigmoid_forward(x)
    out = current().sigmoid_forward(_arrays.cast(x, dtype))
    return _arrays.scalar_if_0d(out)


def sigmoid_grad(x):
    """(1 - sigmoid(x)) * sigmoid(x), elementwise."""
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    """max(0, x), elementwise, keeping NaN; integer input stays integer as in NumPy."""
    x = _arrays.as_numeric(x, "x")
    if _arrays.kernel_dtype(x.dtype) is None:
        return np.maximum(0, x)
    return current().relu_forward(x)[0]


def relu_grad(x):
    """1 where x >= 0, else 0, in x's dtype (the book's relu_grad)."""
    x = _arrays.as_numeric(x, "x")
    grad = np.zeros_like(x)
    grad[x >= 0] = 1
    return grad


def softmax(x):
    """Softmax along the last axis of a 1-D, 2-D or N-D array, stable for large logits."""
    x = _arrays.as_numeric(x, "x")
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"softmax: x needs a non-empty last axis, got shape {x.shape}")
    dtype = _arrays.float_result_dtype(x)
    rows = x.reshape(-1, x.shape[-1])
    if _arrays.kernel_dtype(dtype) is None:
        y = numpy_ref.softmax(rows)
    else:
        y = current().softmax(_arrays.cast(rows, dtype))
    return y.reshape(x.shape)


def sum_squared_error(y, t):
    """0.5 * sum((y - t)**2)."""
    y = _arrays.as_numeric(y, "y")
    t = _arrays.as_numeric(t, "t")
    _arrays.require_shape(y.shape == t.shape, "sum_squared_error", ("y", y.shape), ("t", t.shape))
    return 0.5 * np.sum((y - t) ** 2)


mean_squared_error = sum_squared_error


def cross_entropy_error(y, t):
    """The book's ``-sum(log(y[i, t_i] + 1e-7)) / N`` for probabilities y.

    y is (N, C) or (C,) (a batch of one); t is labels (N,) or one-hot (N, C),
    one-hot reduced by argmax.
    """
    y = _arrays.as_numeric(y, "y")
    y2, labels = _batch_and_labels(y, t, "cross_entropy_error")
    n = y2.shape[0]
    return -np.sum(np.log(y2[np.arange(n), labels] + 1e-7)) / n


def softmax_loss(X, t):
    """cross_entropy_error(softmax(X), t) in one fused kernel."""
    return softmax_with_loss(X, t)[1]


def softmax_with_loss(x, t):
    """Fused softmax and cross-entropy: returns (y, loss, target) for logits x.

    ``target`` is what ``softmax_loss_backward`` needs: int64 labels or the one-hot array.
    Shapes as in ``cross_entropy_error``; an empty batch raises ValueError.
    """
    backend = current()
    if backend.name == "cpp" and type(x) is np.ndarray and type(t) is np.ndarray and t.ndim == 2:
        try:  # one-hot t: the core checks shapes and dtypes; the general way takes what it refuses
            y, loss = backend.softmax_xent_forward(x, t)
            return y, loss, t
        except (TypeError, ValueError):
            pass
    if _usual_loss_call(x, t):  # checked in a few attribute reads
        if t.ndim == 1:
            _arrays.check_label_range(t, x.shape[1], "SoftmaxWithLoss")
        y, loss = backend.softmax_xent_forward(x, t)
        return y, loss, t
    x = _arrays.as_numeric(x, "x")
    x2, target = _batch_and_targets(x, t, "SoftmaxWithLoss")
    dtype = _arrays.float_result_dtype(x2)
    backend = current() if _arrays.kernel_dtype(dtype) else numpy_ref
    kernel_target = target
    if target.ndim == 2 and target.dtype != dtype:
        # The loss takes the argmax of t as given: cast to x's dtype, t's values could round
        # together (float64 1 and 1 + 1e-9 in float32) or flush to 0, moving the argmax.
        kernel_target = target.argmax(axis=1)
    y, loss = backend.softmax_xent_forward(_arrays.cast(x2, dtype), kernel_target)
    return y.reshape(x.shape), loss, target


def softmax_loss_backward(y, target, dout=1):
    """dx of the fused loss: (y - t) / N for one-hot t, the label form otherwise, times dout."""
    if type(dout) is int and dout == 1:
        backend = current()
        if backend.name == "cpp" and type(y) is np.ndarray and type(target) is np.ndarray:
            try:  # the core checks shapes, dtypes and labels; the general way takes what it refuses
                return backend.softmax_xent_backward(y, target)
            except (TypeError, ValueError):
                pass
        elif _usual_loss_call(y, target):
            return backend.softmax_xent_backward(y, target)
    y2 = y.reshape(-1, y.shape[-1])
    if target.ndim == 2:
        dtype = np.result_type(y2, target)
        target = _arrays.cast(target, dtype)
    else:
        dtype = y2.dtype
    backend = current() if _arrays.kernel_dtype(dtype) else numpy_ref
    dx = backend.softmax_xent_backward(_arrays.cast(y2, dtype), target)
    if not (np.isscalar(dout) and dout == 1):
        dx = dx * dout
    return dx.reshape(y.shape)


def _usual_loss_call(x, t) -> bool:
    """Whether the fused loss can hand x and t to the backend as they are: a plain non-empty
    (N, C) float32 or float64 x, with int64 labels (N,) or one-hot (N, C) t of x's dtype."""
    if not (type(x) is np.ndarray and type(t) is np.ndarray and x.ndim == 2 and x.shape[0] > 0 and x.shape[1] > 0):
        return False
    dtype = x.dtype
    if dtype not in _arrays.KERNEL_DTYPES:
        return False
    if t.ndim == 1:
        return t.shape[0] == x.shape[0] and t.dtype == _arrays.INT64
    return t.shape == x.shape and t.dtype == dtype


def _batch_and_targets(x, t, what):
    """x as (N, C) (1-D x is a batch of one) and t as labels (N,) or one-hot (N, C)."""
    if x.ndim not in (1, 2):
        raise ValueError(f"{what}: x must be (N, C) or (C,), got shape {x.shape}")
    x2 = x.reshape(1, -1) if x.ndim == 1 else x
    if x2.shape[0] == 0:
        raise ValueError(f"{what}: the loss of an empty batch is undefined (x has shape {x.shape})")
    if x2.shape[1] == 0:
        raise ValueError(f"{what}: x needs at least one class, got shape {x.shape}")
    t = _arrays.as_numeric(t, "t")
    if x.ndim == 1:  # the book: t.reshape(1, t.size), one-hot when it is y's size
        if t.size == x.size:
            t = t.reshape(1, -1)
        elif t.size == 1:
            t = t.reshape(1)
    return x2, _arrays.labels_or_onehot(t, x2.shape, what)


def _batch_and_labels(y, t, what):
    """Like ``_batch_and_targets`` but one-hot t reduced to labels by argmax (the book's rule)."""
    y2, target = _batch_and_targets(y, t, what)
    return y2, (target.argmax(axis=1) if target.ndim == 2 else target)
