"""The NumPy reference backend: the book's formulas, ported plainly. It is the oracle.

Every backend module (``numpy_ref``, ``numba_kernels``, ``cpp``) exposes exactly these
functions with these signatures. The public API (``bpfast.layers``, ``bpfast.functions``)
has already validated and converted the inputs before calling them:

- floating arrays share one dtype, float32 or float64 (the result dtype);
- arrays may be non-contiguous, transposed, read-only or misaligned;
- labels are a 1-D integer array (int64) already checked to lie in [0, C);
- one-hot targets have the same shape and dtype as the logits.

Outputs are always fresh arrays, except ``relu_backward``, which zeroes ``dout`` in place.
"""

from __future__ import annotations

import numpy as np

name = "numpy"


def affine_forward(x, W, b):
    """x is (N,D), W is (D,M), b is (M,); returns out = x·W + b, (N,M)."""
    return np.dot(x, W) + b


def affine_backward(dout, x, W, need_dx=True):
    """dout is (N,M), x is (N,D), W is (D,M); returns (dx (N,D) or None, dW (D,M), db (M,))."""
    dx = np.dot(dout, W.T) if need_dx else None
    dW = np.dot(x.T, dout)
    db = np.sum(dout, axis=0)
    return dx, dW, db


def relu_forward(x):
    """Any shape; returns (out, mask) with mask = (x <= 0) and out = x where not mask, else 0."""
    mask = x <= 0
    out = x.copy()
    out[mask] = 0
    return out, mask


def relu_backward(dout, mask):
    """Zeroes dout where mask is set, in place (dout is writable and has mask's shape)."""
    dout[mask] = 0


def sigmoid_forward(x):
    """Any shape; returns 1 / (1 + exp(-x))."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))


def sigmoid_backward(dout, out):
    """dout and out have one shape; returns dout * (1 - out) * out."""
    return dout * (1.0 - out) * out


def softmax(x):
    """x is (N,C); returns the row-wise softmax, shifted by the row max for stability."""
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def softmax_xent_forward(x, t):
    """x is (N,C) logits, t is (N,) labels or (N,C) one-hot; returns (y (N,C), loss).

    The loss is the book's ``-sum(log(y[i, t_i] + 1e-7)) / N``, one-hot t reduced by argmax.
    """
    y = softmax(x)
    labels = t.argmax(axis=1) if t.ndim == 2 else t
    batch_size = y.shape[0]
    loss = -np.sum(np.log(y[np.arange(batch_size), labels] + 1e-7)) / batch_size
    return y, loss


def softmax_xent_backward(y, t):
    """y is (N,C), t is (N,) labels or (N,C) one-hot; returns dx = (y - t) / N, (N,C)."""
    batch_size = y.shape[0]
    if t.ndim == 2:
        return (y - t) / batch_size
    dx = y.copy()
    dx[np.arange(batch_size), t] -= 1
    return dx / batch_size
