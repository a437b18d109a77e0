"""The book's ``TwoLayerNet`` (ch05/two_layer_net.py), built on bpfast's layers."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from bpfast import _arrays
from bpfast._backend import current
from bpfast.gradient import numerical_gradient
from bpfast.layers import Affine, Relu, SoftmaxWithLoss

__all__ = ["TwoLayerNet"]


class TwoLayerNet:
    """Affine -> Relu -> Affine -> SoftmaxWithLoss, initialised as in the book.

    ``params`` holds W1 (input, hidden), b1 (hidden,), W2 (hidden, output), b2 (output,),
    drawn from ``np.random.randn`` so a seeded run gives the book's numbers. ``dtype``
    (float64 by default, as in the book) may be float32.
    """

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *, dtype=np.float64):
        dtype = np.dtype(dtype)
        if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"TwoLayerNet: dtype must be float32 or float64, got {dtype}")
        self.params = {}
        self.params["W1"] = (weight_init_std * np.random.randn(input_size, hidden_size)).astype(dtype, copy=False)
        self.params["b1"] = np.zeros(hidden_size, dtype=dtype)
        self.params["W2"] = (weight_init_std * np.random.randn(hidden_size, output_size)).astype(dtype, copy=False)
        self.params["b2"] = np.zeros(output_size, dtype=dtype)

        self.layers = OrderedDict()
        self.layers["Affine1"] = Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = Relu()
        self.layers["Affine2"] = Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        """x is input data, t is the labels or one-hot targets."""
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def accuracy(self, x, t):
        y = self.predict(x)
        y = np.argmax(y, axis=1)
        t = np.asarray(t)
        if t.ndim != 1:
            t = np.argmax(t, axis=1)
        return np.sum(y == t) / float(x.shape[0])

    def numerical_gradient(self, x, t):
        """Gradients of the loss by central differences (slow; for checking backprop)."""
        loss_W = lambda W: self.loss(x, t)  # noqa: E731 - the book's idiom
        grads = {}
        for key in ("W1", "b1", "W2", "b2"):
            grads[key] = numerical_gradient(loss_W, self.params[key])
        return grads

    def gradient(self, x, t):
        """Gradients of the loss by backpropagation: a dict W1, b1, W2, b2.

        On a backend with a one-call kernel (``cpp``) and the standard layers, forward, loss
        and backward run in one native call (skipping dx of the first layer), and the layers
        end up with the attributes the layered path gives them.
        """
        fused = self._fused_call(x, t, "two_layer_gradient")
        if fused is not None:
            return self._take_fused_results(*fused)
        return self._layered_gradient(x, t)

    def train_step(self, x, t, lr):
        """One SGD step, ``params[k] -= lr * grads[k]`` for every parameter; returns the loss.

        Fused into the one-call kernel when it can be (the update then happens in place,
        in native code), else ``gradient`` followed by the update in NumPy.
        """
        if not _is_real_scalar(lr):
            raise TypeError(f"train_step: lr must be a real number (Python or NumPy, or a 0-d array), got {type(lr).__name__}")
        dtype = self.params["W1"].dtype
        # The fused update computes lr * grad in the params' dtype, as NumPy does when lr does not
        # promote it (a Python float does not; np.float64 does for float32 params: NumPy's way then).
        fused = None
        if type(lr) in (float, int) or np.result_type(lr, dtype) == dtype:
            fused = self._fused_call(x, t, "two_layer_train_step", float(lr))
        if fused is not None:
            self._take_fused_results(*fused)
            return self.lastLayer.loss
        read_only = [key for key in ("W1", "b1", "W2", "b2") if not self.params[key].flags.writeable]
        if read_only:  # refuse before updating any, so the net is never left half-stepped
            raise ValueError(f"train_step: params {read_only} are read-only; the SGD update writes them in place")
        grads = self.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            self.params[key] -= lr * grads[key]
        return self.lastLayer.loss

    def _fused_call(self, x, t, kernel_name, *extra):
        """Run the backend's one-call kernel when this net is the standard one; else None."""
        kernel = getattr(current(), kernel_name, None)
        if kernel is None or not self._is_standard():
            return None
        params = self.params
        W1, b1, W2, b2 = params["W1"], params["b1"], params["W2"], params["b2"]
        dtype = W1.dtype
        if _arrays.kernel_dtype(dtype) is None or not (b1.dtype == W2.dtype == b2.dtype == dtype):
            return None
        # updated in place: C-contiguous, aligned and writable (flags.carray) each
        if extra and not (W1.flags.carray and b1.flags.carray and W2.flags.carray and b2.flags.carray):
            return None
        x = _arrays.as_numeric(x, "x")
        if x.ndim < 2 or x.shape[0] == 0:
            return None
        if _arrays.promoted_dtype(x, W1) != dtype:
            return None
        x2 = _arrays.batch_rows(x)
        if x2.shape[1] != W1.shape[0] or W2.shape[0] != W1.shape[1] or W2.shape[1] == 0:
            return None  # (the layered path says what is wrong)
        target = _arrays.labels_or_onehot(t, (x2.shape[0], W2.shape[1]), "SoftmaxWithLoss")
        if target.ndim == 2 and target.dtype != dtype:
            if np.result_type(target, dtype) != dtype:
                return None
            target = target.astype(dtype)
        x_in = x2  # float32 data is widened in the kernel
        if not (x2.dtype == _arrays.FLOAT32 and dtype == _arrays.FLOAT64):
            x_in = _arrays.cast(x2, dtype)
        b1 = b1 if b1.ndim == 1 else b1.reshape(-1)
        b2 = b2 if b2.ndim == 1 else b2.reshape(-1)
        results = kernel(x_in, target, W1, b1, W2, b2, *extra)
        return (x, x2, t, target, *results)

    def _is_standard(self):
        layers = self.layers
        return (
            list(layers) == ["Affine1", "Relu1", "Affine2"]
            and type(layers["Affine1"]) is Affine
            and type(layers["Relu1"]) is Relu
            and type(layers["Affine2"]) is Affine
            and type(self.lastLayer) is SoftmaxWithLoss
            and layers["Affine1"].W is self.params["W1"]
            and layers["Affine1"].b is self.params["b1"]
            and layers["Affine2"].W is self.params["W2"]
            and layers["Affine2"].b is self.params["b2"]
        )

    def _take_fused_results(self, x, x2, t, target, loss, h, mask, y, dW1, db1, dW2, db2):
        """Leave the layers as the layered path would (x2 is x as (N, features)); return the gradients."""
        affine1, relu1, affine2, last = self.layers["Affine1"], self.layers["Relu1"], self.layers["Affine2"], self.lastLayer
        affine1.original_x_shape, affine1.x, affine1.dW, affine1.db = x.shape, x2, dW1, db1
        relu1.mask = mask
        affine2.original_x_shape, affine2.x, affine2.dW, affine2.db = h.shape, h, dW2, db2
        last.t, last.y, last.loss, last._target = t, y, loss, target
        return {"W1": dW1, "b1": db1, "W2": dW2, "b2": db2}

    def _layered_gradient(self, x, t):
        """The book's gradient: forward through the layers, then backward in reverse."""
        self.loss(x, t)

        dout = 1
        dout = self.lastLayer.backward(dout)
        layers = list(self.layers.values())
        layers.reverse()
        for layer in layers:
            dout = layer.backward(dout)

        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


def _is_real_scalar(value) -> bool:
    """A Python or NumPy integer or float (not a bool), or a 0-d array of one."""
    if isinstance(value, np.ndarray):
        return value.ndim == 0 and value.dtype.kind in "iuf"
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
