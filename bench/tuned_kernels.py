"""The hand-tuned competitors of the softmax and ReLU cases: the book's formulas as a careful user
of NumPy, or of Numba, would write them without bpfast. Outputs go to buffers kept from one call
to the next; NumPy runs in-place passes (softmax: one exp), Numba one fused loop (softmax a row
at a time; ReLU's output with its mask, then the mask on dout), on one thread as ``njit`` gives.

The ReLU classes keep the book's interface (``forward(x)`` returns out and sets ``mask``,
``backward(dout)`` zeroes dout where the mask is set, in place, and returns it).
"""

from __future__ import annotations

import numpy as np


class _Buffers:
    """Arrays of a shape and dtype, made on first use and reused while they fit the input."""

    def __init__(self):
        self._buffers = {}

    def buffer(self, name, shape, dtype):
        b = self._buffers.get(name)
        if b is None or b.shape != shape or b.dtype != dtype:
            b = self._buffers[name] = np.empty(shape, dtype)
        return b


class NumpySoftmax(_Buffers):
    def __call__(self, x):
        y = self.buffer("y", x.shape, x.dtype)
        np.subtract(x, x.max(axis=1, keepdims=True), out=y)
        np.exp(y, out=y)
        y /= y.sum(axis=1, keepdims=True)
        return y


class NumbaSoftmax(_Buffers):
    def __call__(self, x):
        y = self.buffer("y", x.shape, x.dtype)
        _kernels()["softmax"](x, y)
        return y


class NumpyRelu(_Buffers):
    """The backward multiplies by the mask's complement: a masked assignment (the book's
    ``dout[mask] = 0``, or ``np.copyto(..., where=)``) runs 15-20x slower on a random mask. It
    differs from the book only where dout is inf or NaN (0·inf is NaN, the book's is 0)."""

    def forward(self, x):
        self.mask = np.less_equal(x, 0, out=self.buffer("mask", x.shape, bool))
        self.keep = np.logical_not(self.mask, out=self.buffer("keep", x.shape, bool))
        return np.maximum(x, 0, out=self.buffer("out", x.shape, x.dtype))  # NaN stays NaN, as the book's

    def backward(self, dout):
        return np.multiply(dout, self.keep, out=dout)


class NumbaRelu(_Buffers):
    def forward(self, x):
        self.mask = self.buffer("mask", x.shape, bool)
        out = self.buffer("out", x.shape, x.dtype)
        _kernels()["relu_forward"](x.reshape(-1), out.reshape(-1), self.mask.reshape(-1))
        return out

    def backward(self, dout):
        _kernels()["relu_backward"](dout.reshape(-1), self.mask.reshape(-1))
        return dout


_KERNELS = {}


def _kernels():
    """The compiled loops (compiled on first use, cached on disk)."""
    if not _KERNELS:
        import numba

        @numba.njit(cache=True)
        def softmax(x, y):
            for i in range(x.shape[0]):
                top = x[i, 0]
                for j in range(x.shape[1]):
                    top = max(top, x[i, j])
                total = 0.0
                for j in range(x.shape[1]):
                    y[i, j] = np.exp(x[i, j] - top)
                    total += y[i, j]
                for j in range(x.shape[1]):
                    y[i, j] /= total

        @numba.njit(cache=True)
        def relu_forward(x, out, mask):
            for i in range(x.shape[0]):
                mask[i] = x[i] <= 0
                out[i] = 0 if mask[i] else x[i]

        @numba.njit(cache=True)
        def relu_backward(dout, mask):
            for i in range(dout.shape[0]):
                if mask[i]:
                    dout[i] = 0

        _KERNELS.update(softmax=softmax, relu_forward=relu_forward, relu_backward=relu_backward)
    return _KERNELS
