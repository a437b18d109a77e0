"""The book's numerical gradient and gradient check (``common/gradient.py``, ch05 gradient_check.py)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["numerical_gradient", "gradient_check", "GradientCheck", "ParamError", "DEFAULT_ATOL"]


def numerical_gradient(f, x):
    """Central-difference gradient of ``f`` at ``x`` (h = 1e-4), any ndim.

    Writes each element of ``x`` in place, calls ``f(x)`` twice, and restores it, exactly
    as the book does, so ``f`` may ignore its argument and read the array by reference. The
    element is restored even when ``f`` raises.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"numerical_gradient: x must be an ndarray it can write into, got {type(x).__name__}")
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x is read-only, but the central difference writes into it")
    if x.dtype.kind != "f" or x.dtype.itemsize < 4:
        raise TypeError(
            f"numerical_gradient: x must be float32 or float64, got {x.dtype}: x ± 1e-4 would not be "
            "stored as such (truncated to an integer, or rounded away in float16)"
        )
    h = 1e-4
    grad = np.zeros_like(x)
    if x.size == 0:
        return grad
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        try:
            x[idx] = float(tmp_val) + h
            fxh1 = f(x)
            x[idx] = tmp_val - h
            fxh2 = f(x)
        finally:
            x[idx] = tmp_val
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        it.iternext()
    return grad


class ParamError(NamedTuple):
    """How far backprop is from the numerical gradient for one parameter.

    ``mean_abs_diff`` is the book's number, over every element; ``max_rel_error`` and ``passed``
    leave out the ``kinks``: elements whose difference quotient straddled a ReLU's kink (see
    ``gradient_check``), where it measures nothing about backprop.
    """

    mean_abs_diff: float
    max_rel_error: float
    passed: bool
    kinks: int = 0


class GradientCheck(NamedTuple):
    """Per-parameter errors and whether every parameter passed."""

    errors: dict[str, ParamError]
    passed: bool


#: The default ``atol`` of ``gradient_check`` by the parameters' dtype. In float32 the loss
#: itself is rounded to about 1e-7 of its size, and (f(x+h) - f(x-h)) / 2h with h = 1e-4 carries
#: that rounding times 1/2h into every element: the book's check is a float64 check.
DEFAULT_ATOL = {np.dtype(np.float64): 1e-6, np.dtype(np.float32): 2e-3}


def gradient_check(network, x, t, atol: float | None = None) -> GradientCheck:
    """Compare ``network.gradient`` (backprop) with the book's numerical gradient.

    The numerical gradient is the book's (``numerical_gradient`` of ``network.loss`` for each
    array in ``network.params``; ``network.numerical_gradient`` for a network without them). A
    parameter passes when the mean absolute difference over its elements, kinks left out, is at
    most ``atol`` (default ``DEFAULT_ATOL`` by dtype: 1e-6 in float64, where the book's check
    prints about 1e-10 to 1e-8). The max relative error, ``|a - n| / max(|a| + |n|, 1e-12)``, is
    reported beside it.

    Kinks: ReLU has no derivative at 0, and when moving an element by h flips one of the
    network's ReLU units (a pre-activation within h of 0; about one network in five of the
    book's, on three MNIST images) the difference quotient of that element mixes two slopes and
    disagrees with any correct backprop. Such elements are found by comparing the ``mask`` of
    each layer of ``network.layers`` named ``Relu`` (the book's and bpfast's) after f(x+h) and
    f(x-h), counted in ``kinks`` and left out of the verdict. (CS231n's notes discuss the same.)
    """
    params = getattr(network, "params", None)
    if isinstance(params, dict) and callable(getattr(network, "loss", None)):
        grad_numerical, kinks = _numerical_gradient_and_kinks(network, x, t)
    else:
        grad_numerical, kinks = network.numerical_gradient(x, t), {}
    grad_backprop = network.gradient(x, t)
    errors = {}
    for key in grad_numerical:
        a = np.asarray(grad_backprop[key], dtype=np.float64)
        n = np.asarray(grad_numerical[key], dtype=np.float64)
        at_kink = kinks.get(key, np.zeros(n.shape, dtype=bool))
        limit = atol if atol is not None else DEFAULT_ATOL.get(np.asarray(grad_numerical[key]).dtype, 1e-6)
        diff = np.abs(a - n)
        rel = diff / np.maximum(np.abs(a) + np.abs(n), 1e-12)
        smooth, smooth_rel = diff[~at_kink], rel[~at_kink]
        mean_abs = float(np.mean(diff)) if diff.size else 0.0
        max_rel = float(np.max(smooth_rel)) if smooth.size else 0.0
        passed = bool(float(np.mean(smooth)) <= limit) if smooth.size else diff.size == 0
        errors[key] = ParamError(mean_abs, max_rel, passed, int(np.count_nonzero(at_kink)))
    return GradientCheck(errors, all(e.passed for e in errors.values()))


def _relu_layers(network):
    layers = getattr(network, "layers", None)
    values = layers.values() if hasattr(layers, "values") else (layers or ())
    return [layer for layer in values if type(layer).__name__ == "Relu"]


def _numerical_gradient_and_kinks(network, x, t):
    """The book's numerical gradient of each parameter, and where a ReLU flipped in between."""
    relus = _relu_layers(network)
    grads, kinks = {}, {}
    for key, param in network.params.items():
        flipped = []  # one flag an element, in numerical_gradient's order
        first = []  # the masks after f(x+h), until f(x-h) comes

        def loss(_):
            value = network.loss(x, t)
            masks = [np.array(layer.mask, copy=True) for layer in relus]
            if first:
                flipped.append(any(not np.array_equal(a, b) for a, b in zip(first.pop(), masks)))
            else:
                first.append(masks)
            return value

        grads[key] = numerical_gradient(loss, param)
        at_kink = np.zeros(np.shape(param), dtype=bool)
        it = np.nditer(param, flags=["multi_index"])
        for flag in flipped:
            at_kink[it.multi_index] = flag
            it.iternext()
        kinks[key] = at_kink
    return grads, kinks
