"""The book's chapter-5 layers and TwoLayerNet in plain NumPy: the benchmark's baseline.

Written from the formulas of "Deep Learning from Scratch" ch. 5 (Affine, Relu, softmax,
cross-entropy, SoftmaxWithLoss, TwoLayerNet), not copied from the book's repository. It
computes the same numbers as bpfast's ``numpy`` backend (the harness checks this before
timing anything). Two additions the book does not have, both for the harness:

- ``TwoLayerNet(..., layers=module)`` builds the net from ``module.Affine``/``Relu``/
  ``SoftmaxWithLoss``: this module by default, ``bpfast.layers`` to measure the book's own
  class definition running on bpfast's layers (``from bpfast.layers import *``).
- ``dtype=`` for the parameters (float64 by default, as the book's ``np.random.randn``).
"""

from __future__ import annotations

import sys
from collections import OrderedDict

import numpy as np

PARAM_KEYS = ("W1", "b1", "W2", "b2")


def softmax(x):
    """Row-wise softmax along the last axis, shifted by the row max for stability."""
    x = x - np.max(x, axis=-1, keepdims=True)
    return np.exp(x) / np.sum(np.exp(x), axis=-1, keepdims=True)


def cross_entropy_error(y, t):
    """-sum(log(y[i, t_i] + 1e-7)) / N; one-hot t is reduced to labels by argmax."""
    if y.ndim == 1:
        t = t.reshape(1, t.size)
        y = y.reshape(1, y.size)
    if t.size == y.size:
        t = t.argmax(axis=1)
    batch_size = y.shape[0]
    return -np.sum(np.log(y[np.arange(batch_size), t] + 1e-7)) / batch_size


class Relu:
    """out = x where x > 0, else 0; backward zeroes dout where x <= 0, in place."""

    def __init__(self):
        self.mask = None

    def forward(self, x):
        self.mask = x <= 0
        out = x.copy()
        out[self.mask] = 0
        return out

    def backward(self, dout):
        dout[self.mask] = 0
        return dout


class Affine:
    """out = x·W + b, x flattened to (N, D); backward sets dW (D, M), db (M,), returns dx."""

    def __init__(self, W, b):
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def forward(self, x):
        self.original_x_shape = x.shape
        self.x = x.reshape(x.shape[0], -1)
        return np.dot(self.x, self.W) + self.b

    def backward(self, dout):
        dx = np.dot(dout, self.W.T)
        self.dW = np.dot(self.x.T, dout)
        self.db = np.sum(dout, axis=0)
        return dx.reshape(*self.original_x_shape)


class SoftmaxWithLoss:
    """Softmax then cross-entropy; backward is (y - t) / N (one-hot) or the label form."""

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        self.t = t
        self.y = softmax(x)
        self.loss = cross_entropy_error(self.y, self.t)
        return self.loss

    def backward(self, dout=1):
        batch_size = self.t.shape[0]
        if self.t.size == self.y.size:
            dx = (self.y - self.t) / batch_size
        else:
            dx = self.y.copy()
            dx[np.arange(batch_size), self.t] -= 1
            dx = dx / batch_size
        return dx * dout if dout != 1 else dx


class TwoLayerNet:
    """Affine -> Relu -> Affine -> SoftmaxWithLoss, the book's ch05 TwoLayerNet.

    ``layers`` is the module supplying the layer classes (this one by default).
    """

    def __init__(self, input_size, hidden_size, output_size, weight_init_std=0.01, *, layers=None, dtype=np.float64):
        L = layers if layers is not None else sys.modules[__name__]
        self.params = {}
        self.params["W1"] = (weight_init_std * np.random.randn(input_size, hidden_size)).astype(dtype)
        self.params["b1"] = np.zeros(hidden_size, dtype=dtype)
        self.params["W2"] = (weight_init_std * np.random.randn(hidden_size, output_size)).astype(dtype)
        self.params["b2"] = np.zeros(output_size, dtype=dtype)

        self.layers = OrderedDict()
        self.layers["Affine1"] = L.Affine(self.params["W1"], self.params["b1"])
        self.layers["Relu1"] = L.Relu()
        self.layers["Affine2"] = L.Affine(self.params["W2"], self.params["b2"])
        self.lastLayer = L.SoftmaxWithLoss()

    def predict(self, x):
        for layer in self.layers.values():
            x = layer.forward(x)
        return x

    def loss(self, x, t):
        y = self.predict(x)
        return self.lastLayer.forward(y, t)

    def gradient(self, x, t):
        self.loss(x, t)

        dout = 1
        dout = self.lastLayer.backward(dout)
        for layer in reversed(list(self.layers.values())):
            dout = layer.backward(dout)

        grads = {}
        grads["W1"], grads["b1"] = self.layers["Affine1"].dW, self.layers["Affine1"].db
        grads["W2"], grads["b2"] = self.layers["Affine2"].dW, self.layers["Affine2"].db
        return grads


def sgd_step(network, x_batch, t_batch, learning_rate=0.1):
    """One step of the book's training loop: backprop gradients, then params -= lr * grad."""
    grads = network.gradient(x_batch, t_batch)
    for key in PARAM_KEYS:
        network.params[key] -= learning_rate * grads[key]
    return grads


def train_iteration(network, x_train, t_train, batch_size=100, learning_rate=0.1):
    """One iteration of the book's train_neuralnet.py (without the per-epoch accuracy):
    draw a minibatch, take an SGD step, record the loss on that batch."""
    batch_mask = np.random.choice(x_train.shape[0], batch_size)
    x_batch = x_train[batch_mask]
    t_batch = t_train[batch_mask]
    sgd_step(network, x_batch, t_batch, learning_rate)
    return network.loss(x_batch, t_batch)
