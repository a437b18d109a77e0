"""The hand-tuned competitors of the step cases: one SGD step of the book's TwoLayerNet
(Affine -> Relu -> Affine -> SoftmaxWithLoss, then ``params[k] -= lr * grads[k]``) written as a
careful user of NumPy, or of Numba, would write it without bpfast.

Both keep every buffer from one step to the next, convert float32 images once per step for
float64 weights, skip dx of the first layer (nobody uses it), and update the parameters in place.
NumPy: BLAS products writing into those buffers, in-place elementwise passes. Numba: the same
four products through ``np.dot`` (SciPy's BLAS), every elementwise pass fused into one loop over
a row (bias with ReLU and its mask, softmax with the loss and its gradient, the mask with the
backward, the update). Each step returns the loss and leaves the gradients in ``grads``.
"""

from __future__ import annotations

import numpy as np

PARAM_KEYS = ("W1", "b1", "W2", "b2")


class _Buffers:
    """The step's arrays for params (W1, b1, W2, b2) and a batch of n images."""

    def __init__(self, params, n):
        self.params = params
        W1, W2 = params["W1"], params["W2"]
        dtype = W1.dtype
        (d, h), o = W1.shape, W2.shape[1]
        self.x = np.empty((n, d), dtype)  # the images in the weights' dtype, when they differ
        self.h = np.empty((n, h), dtype)  # Affine1 + ReLU
        self.mask = np.empty((n, h), bool)
        self.keep = np.empty((n, h), bool)  # not mask (NumPy)
        self.y = np.empty((n, o), dtype)  # softmax
        self.dy = np.empty((n, o), dtype)
        self.dh = np.empty((n, h), dtype)
        self.grads = {k: np.empty_like(params[k]) for k in PARAM_KEYS}
        self.scaled = {k: np.empty_like(params[k]) for k in PARAM_KEYS}  # lr * grad (NumPy)

    def images(self, x):
        if x.dtype == self.x.dtype:
            return x
        self.x[...] = x
        return self.x


class NumpyStep(_Buffers):
    def __call__(self, x, t, lr):
        p, g = self.params, self.grads
        x = self.images(x)
        n = x.shape[0]
        h, mask, y, dy, dh = self.h, self.mask, self.y, self.dy, self.dh
        np.dot(x, p["W1"], out=h)
        h += p["b1"]
        np.less_equal(h, 0, out=mask)
        np.logical_not(mask, out=self.keep)
        np.maximum(h, 0, out=h)
        np.dot(h, p["W2"], out=y)
        y += p["b2"]
        y -= y.max(axis=1, keepdims=True)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        rows = np.arange(n)
        if t.ndim == 2:  # one-hot: the book's (y - t) / N, and its labels by argmax
            labels = t.argmax(axis=1)
            np.subtract(y, t, out=dy)
        else:
            labels = t
            dy[...] = y
            dy[rows, labels] -= 1
        loss = -np.sum(np.log(y[rows, labels] + 1e-7)) / n
        dy /= n
        np.dot(h.T, dy, out=g["W2"])
        np.sum(dy, axis=0, out=g["b2"])
        np.dot(dy, p["W2"].T, out=dh)
        np.multiply(dh, self.keep, out=dh)  # not dh[mask] = 0: 20x slower on a random mask (tuned_kernels)
        np.dot(x.T, dh, out=g["W1"])
        np.sum(dh, axis=0, out=g["b1"])
        for k in PARAM_KEYS:
            np.multiply(g[k], lr, out=self.scaled[k])
            p[k] -= self.scaled[k]
        return loss


class NumbaStep(_Buffers):
    def __init__(self, params, n):
        super().__init__(params, n)
        self._kernel = _numba_kernel()
        o = params["W2"].shape[1]
        self._no_onehot = np.empty((0, o), params["W2"].dtype)

    def __call__(self, x, t, lr):
        p, g = self.params, self.grads
        x = self.images(x)
        if t.ndim == 2:
            labels, onehot = np.empty(0, np.int64), t
        else:
            labels, onehot = t, self._no_onehot
        lr = p["W1"].dtype.type(lr)  # as NumPy's lr * grad with a Python float: in the params' dtype
        return self._kernel(x, labels, onehot, p["W1"], p["b1"], p["W2"], p["b2"], lr,
                            self.h, self.mask, self.y, self.dy, self.dh, g["W1"], g["b1"], g["W2"], g["b2"])


_KERNEL = None


def _numba_kernel():
    """The compiled step (compiled on first use, cached on disk like bpfast's own Numba kernels)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(cache=True)
        def step(x, labels, onehot, W1, b1, W2, b2, lr, h, mask, y, dy, dh, dW1, db1, dW2, db2):
            n, o = y.shape
            np.dot(x, W1, h)
            for i in range(n):  # bias + ReLU + mask
                for j in range(h.shape[1]):
                    v = h[i, j] + b1[j]
                    mask[i, j] = v <= 0
                    h[i, j] = 0 if v <= 0 else v
            np.dot(h, W2, y)
            loss = 0.0
            for i in range(n):  # bias + softmax + loss + its gradient, one row at a time
                top = y[i, 0] + b2[0]
                for j in range(o):
                    y[i, j] += b2[j]
                    top = max(top, y[i, j])
                total = 0.0
                for j in range(o):
                    y[i, j] = np.exp(y[i, j] - top)
                    total += y[i, j]
                label = 0
                for j in range(o):
                    y[i, j] /= total
                    if onehot.shape[0]:
                        dy[i, j] = (y[i, j] - onehot[i, j]) / n
                        if onehot[i, j] > onehot[i, label]:
                            label = j
                    else:
                        dy[i, j] = y[i, j] / n
                if not onehot.shape[0]:
                    label = labels[i]
                    dy[i, label] = (y[i, label] - 1) / n
                loss -= np.log(y[i, label] + 1e-7)
            np.dot(h.T, dy, dW2)
            np.dot(dy, W2.T, dh)
            db1[:] = 0
            db2[:] = 0
            for i in range(n):  # the ReLU's mask on dh; the biases' gradients
                for j in range(dh.shape[1]):
                    if mask[i, j]:
                        dh[i, j] = 0
                    db1[j] += dh[i, j]
                for j in range(o):
                    db2[j] += dy[i, j]
            np.dot(x.T, dh, dW1)
            for W, dW in ((W1, dW1), (W2, dW2)):
                for i in range(W.shape[0]):
                    for j in range(W.shape[1]):
                        W[i, j] -= lr * dW[i, j]
            for b, db in ((b1, db1), (b2, db2)):
                for j in range(b.shape[0]):
                    b[j] -= lr * db[j]
            return loss / n

        _KERNEL = step
    return _KERNEL
