"""The book's ``TwoLayerNet`` (ch05/two_layer_net.py), built on bpfast's layers."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

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
        """Gradients of the loss by backpropagation: a dict W1, b1, W2, b2."""
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
