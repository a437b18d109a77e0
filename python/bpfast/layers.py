"""The book's ``common/layers.py``: same classes, attributes and numbers, kernels underneath.

``from bpfast.layers import *`` replaces ``from common.layers import *``. Layers hold
references to W and b and read them at every call, so in-place updates reach the next
forward; every backward returns fresh gradient arrays (``Relu.backward`` excepted: it
zeroes ``dout`` in place and returns it, as the book does).
"""

from __future__ import annotations

import numpy as np

from bpfast import _arrays
from bpfast._backend import current
from bpfast.backends import numpy_ref
from bpfast.functions import softmax_loss_backward, softmax_with_loss

_ndarray = np.ndarray

__all__ = ["MulLayer", "AddLayer", "Relu", "Sigmoid", "Affine", "SoftmaxWithLoss"]


class MulLayer:
    """out = x * y; backward swaps the inputs (the book's multiplication node)."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        if self.x is None:
            raise RuntimeError("MulLayer.backward called before MulLayer.forward")
        dx = dout * self.y
        dy = dout * self.x
        return dx, dy


class AddLayer:
    """out = x + y; backward passes dout to both inputs."""

    def __init__(self):
        pass

    def forward(self, x, y):
        return x + y

    def backward(self, dout):
        dx = dout * 1
        dy = dout * 1
        return dx, dy


class Relu:
    """out = x where x > 0, else 0; ``mask`` is ``x <= 0`` (NaN passes through)."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        backend = current()
        if backend.name == "cpp" and type(x) is _ndarray and x.ndim:
            try:  # as in Affine: the core checks, the general way takes what it refuses
                out, self.mask = backend.relu_forward(x)
                return out
            except (TypeError, ValueError):
                pass
        x = _arrays.as_numeric(x, "x")
        backend = backend if _arrays.kernel_dtype(x.dtype) else numpy_ref
        out, mask = backend.relu_forward(x)
        self.mask = _arrays.scalar_if_0d(mask)  # the book's x <= 0: a NumPy bool for 0-d x
        return out

    def backward(self, dout):
        """Zeroes ``dout`` where the forward input was <= 0, in place, and returns it."""
        backend = current()
        if backend.name == "cpp" and type(dout) is _ndarray and type(self.mask) is _ndarray:
            try:  # the core checks dtype, shape and writability before it zeroes anything
                backend.relu_backward(dout, self.mask)
                return dout
            except (TypeError, ValueError):
                pass
        if self.mask is None:
            raise RuntimeError("Relu.backward called before Relu.forward")
        given = dout
        dout = _arrays.as_numeric(dout, "dout")  # a subclass: a plain view of the same memory
        _arrays.require_shape(dout.shape == self.mask.shape, "Relu.backward", ("dout", dout.shape), ("mask", self.mask.shape))
        if not dout.flags.writeable:
            raise ValueError("Relu.backward: dout is read-only, but the book's Relu zeroes it in place")
        backend = backend if _arrays.kernel_dtype(dout.dtype) else numpy_ref
        mask = self.mask if type(self.mask) is _ndarray else np.asarray(self.mask)  # a NumPy bool after 0-d x
        backend.relu_backward(dout, mask)
        return given if isinstance(given, _ndarray) else dout  # the very array given, as the book returns it


class Sigmoid:
    """out = 1 / (1 + exp(-x)); backward is dout * (1 - out) * out."""

    def __init__(self):
        self.out = None

    def forward(self, x):
        x = _arrays.as_numeric(x, "x")
        dtype = _arrays.float_result_dtype(x)
        backend = current() if _arrays.kernel_dtype(dtype) else numpy_ref
        out = backend.sigmoid_forward(_arrays.cast(x, dtype))
        self.out = _arrays.scalar_if_0d(out)
        return self.out

    def backward(self, dout):
        if self.out is None:
            raise RuntimeError("Sigmoid.backward called before Sigmoid.forward")
        # a Python number promotes as NumPy's (weak) scalars do: 2.0 keeps a float32 out float32
        promotes_as = dout if type(dout) in (int, float) else None
        dout = _arrays.as_numeric(dout, "dout")
        out = np.asarray(self.out)  # a NumPy scalar after a 0-d input, as the book's formula gives
        if dout.shape != out.shape:  # the book's dout * (1 - out) * out takes a dout that broadcasts to out
            _arrays.require_shape(_broadcasts_to(dout.shape, out.shape), "Sigmoid.backward", ("dout", dout.shape), ("out", out.shape))
            dout = np.broadcast_to(dout, out.shape)
        dtype = np.result_type(dout if promotes_as is None else promotes_as, out)
        backend = current() if _arrays.kernel_dtype(dtype) else numpy_ref
        dx = backend.sigmoid_backward(_arrays.cast(dout, dtype), _arrays.cast(out, dtype))
        return _arrays.scalar_if_0d(dx)


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    """Whether an array of ``shape`` broadcasts to ``target`` (and nothing larger)."""
    try:
        return np.broadcast_shapes(shape, target) == target
    except ValueError:
        return False


class Affine:
    """out = x·W + b for x (N, ...) flattened to (N, D), W (D, M), b (M,) or (1, M)."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        W, b = self.W, self.b
        backend = current()
        out = None
        if backend.name == "cpp" and type(x) is _ndarray and type(W) is _ndarray and type(b) is _ndarray:
            # The core checks dtypes and shapes itself, faster than Python could; what it does not
            # take as it is (TypeError, ValueError) goes the general way, which converts or explains.
            try:
                out = backend.affine_forward(x, W, b)
            except (TypeError, ValueError):
                pass
        elif _usual_forward(x, W, b):  # checked in a few attribute reads
            out = backend.affine_forward(x, W, b)
        if out is None:
            return self._forward_any(backend, x, W, b)
        self.original_x_shape = x.shape
        self.x = x
        return out

    def _forward_any(self, backend, x, W, b):
        """forward for anything else: array-likes, x of more than two axes, (1, M) b, any dtype."""
        x = _arrays.as_numeric(x, "x")
        W = _arrays.as_numeric(W, "W")
        b = _arrays.as_numeric(b, "b")
        if x.ndim == 0:
            raise ValueError(f"Affine: x must have a batch axis, got shape {x.shape}")
        x2 = _arrays.batch_rows(x)
        _arrays.require_shape(W.ndim == 2 and x2.shape[1] == W.shape[0], "Affine", ("x", x.shape), ("W", W.shape))
        _arrays.require_shape(b.shape in ((W.shape[1],), (1, W.shape[1])), "Affine", ("b", b.shape), ("W", W.shape))
        self.original_x_shape = x.shape
        self.x = x2
        dtype = _arrays.promoted_dtype(x2, W, b)
        if _arrays.kernel_dtype(dtype) is None:
            return numpy_ref.affine_forward(x2, W, b)
        cast = _arrays.cast
        x_in = x2 if _mixed_ok(backend, x2, dtype) else cast(x2, dtype)  # float32 x widened in the kernel
        return backend.affine_forward(x_in, cast(W, dtype), cast(b.reshape(-1), dtype))

    def backward(self, dout):
        """Sets ``dW`` (D, M) and ``db`` (M,); returns dx in the forward input's shape."""
        x, W = self.x, self.W
        if x is None:
            raise RuntimeError("Affine.backward called before Affine.forward")
        backend = current()
        dx = None
        if backend.name == "cpp" and type(dout) is _ndarray and type(W) is _ndarray:
            try:  # as in forward: the core checks, the general way takes what it refuses
                dx, self.dW, self.db = backend.affine_backward(dout, x, W)
            except (TypeError, ValueError):
                pass
        elif _usual_backward(dout, x, W):  # checked in a few attribute reads
            dx, self.dW, self.db = backend.affine_backward(dout, x, W)
        if dx is None:
            dout = _arrays.as_numeric(dout, "dout")
            W = _arrays.as_numeric(W, "W")
            expected = (x.shape[0], W.shape[1])
            _arrays.require_shape(dout.shape == expected, "Affine.backward", ("dout", dout.shape), ("x·W", expected))
            dx, self.dW, self.db = _affine_backward(dout, x, W)
        shape = self.original_x_shape
        return dx if dx.shape == shape else dx.reshape(shape)


def _usual_forward(x, W, b) -> bool:
    """Whether forward can hand x, W, b to a Python backend (numpy, numba; the compiled core checks
    for itself) as they are: plain arrays, 2-D x and W and 1-D b that fit, all float32 or all
    float64. Anything else takes the general path, which converts, checks and explains."""
    if not (type(x) is np.ndarray and type(W) is np.ndarray and type(b) is np.ndarray):
        return False
    if not (x.ndim == 2 and W.ndim == 2 and b.ndim == 1 and x.shape[1] == W.shape[0] and b.shape[0] == W.shape[1]):
        return False
    dtype = W.dtype
    return b.dtype == dtype and _kernel_pair(x, dtype)


def _usual_backward(dout, x, W) -> bool:
    """As ``_usual_forward`` for backward: plain 2-D dout and W that fit the forward's x, dout in
    W's dtype; the kernel then returns dx, dW, db in the dtypes NumPy's formulas give."""
    if not (type(dout) is np.ndarray and type(W) is np.ndarray and dout.ndim == 2 and W.ndim == 2):
        return False
    if not (dout.shape[0] == x.shape[0] and dout.shape[1] == W.shape[1] and W.shape[0] == x.shape[1]):
        return False
    dtype = W.dtype
    return dout.dtype == dtype and _kernel_pair(x, dtype)


def _kernel_pair(x, dtype) -> bool:
    """dtype is a kernel dtype, and x has it too."""
    return x.dtype == dtype and dtype in _arrays.KERNEL_DTYPES


def _mixed_ok(backend, x, dtype) -> bool:
    """Whether the backend takes float32 x with float64 W/b/dout as is (the compiled core does)."""
    return backend.name == "cpp" and x.dtype == _arrays.FLOAT32 and dtype == _arrays.FLOAT64


def _affine_backward(dout, x, W):
    """(dx, dW, db) with the dtypes NumPy's formulas would give, computed in one kernel dtype."""
    dtype = _arrays.promoted_dtype(x, W, dout)
    if _arrays.kernel_dtype(dtype) is None:
        return numpy_ref.affine_backward(dout, x, W)
    cast = _arrays.cast
    backend = current()
    x_in = x if _mixed_ok(backend, x, dtype) else cast(x, dtype)  # float32 x widened in the kernel
    dx, dW, db = backend.affine_backward(cast(dout, dtype), x_in, cast(W, dtype))
    # np.sum widens small integers (int32 -> int64)
    db_dtype = dout.dtype if dout.dtype.kind == "f" else np.empty(0, dout.dtype).sum().dtype
    return (cast(dx, np.result_type(dout, W)), cast(dW, np.result_type(x, dout)), cast(db, db_dtype))


class SoftmaxWithLoss:
    """Softmax followed by the cross-entropy error; ``loss``, ``y`` and ``t`` as in the book."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None
        self._target = None

    def forward(self, x, t):
        self.y, self.loss, self._target = softmax_with_loss(x, t)  # raises before any attribute changes
        self.t = t
        return self.loss

    def backward(self, dout=1):
        """dx = (y - t) / N (one-hot t) or the label form, scaled by dout."""
        if self.y is None:
            raise RuntimeError("SoftmaxWithLoss.backward called before SoftmaxWithLoss.forward")
        return softmax_loss_backward(self.y, self._target, dout)
