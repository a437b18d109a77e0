"""The book's numerical gradient and gradient check (``common/gradient.py``, ch05 gradient_check.py)."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["numerical_gradient", "gradient_check", "GradientCheck", "ParamError"]


def numerical_gradient(f, x):
    """Central-difference gradient of ``f`` at ``x`` (h = 1e-4), any ndim.

    Writes each element of ``x`` in place, calls ``f(x)`` twice, and restores it, exactly
    as the book does, so ``f`` may ignore its argument and read the array by reference.
    """
    if not isinstance(x, np.ndarray):
        raise TypeError(f"numerical_gradient: x must be an ndarray it can write into, got {type(x).__name__}")
    if not x.flags.writeable:
        raise ValueError("numerical_gradient: x is read-only, but the central difference writes into it")
    h = 1e-4
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"], op_flags=[["readwrite"]])
    while not it.finished:
        idx = it.multi_index
        tmp_val = x[idx]
        x[idx] = float(tmp_val) + h
        fxh1 = f(x)
        x[idx] = tmp_val - h
        fxh2 = f(x)
        grad[idx] = (fxh1 - fxh2) / (2 * h)
        x[idx] = tmp_val
        it.iternext()
    return grad


class ParamError(NamedTuple):
    """How far backprop is from the numerical gradient for one parameter."""

    mean_abs_diff: float
    max_rel_error: float
    passed: bool


class GradientCheck(NamedTuple):
    """Per-parameter errors and whether every parameter passed."""

    errors: dict[str, ParamError]
    passed: bool


def gradient_check(network, x, t, atol: float = 1e-6) -> GradientCheck:
    """Compare ``network.gradient`` (backprop) with ``network.numerical_gradient``.

    A parameter passes when the mean absolute difference is at most ``atol`` (the book
    prints this mean; about 1e-10 to 1e-8 is typical in float64). The max relative error,
    ``|a - n| / max(|a| + |n|, 1e-12)``, is reported beside it.
    """
    grad_numerical = network.numerical_gradient(x, t)
    grad_backprop = network.gradient(x, t)
    errors = {}
    for key in grad_numerical:
        a = np.asarray(grad_backprop[key], dtype=np.float64)
        n = np.asarray(grad_numerical[key], dtype=np.float64)
        diff = np.abs(a - n)
        mean_abs = float(np.mean(diff)) if diff.size else 0.0
        max_rel = float(np.max(diff / np.maximum(np.abs(a) + np.abs(n), 1e-12))) if diff.size else 0.0
        errors[key] = ParamError(mean_abs, max_rel, bool(mean_abs <= atol))
    return GradientCheck(errors, all(e.passed for e in errors.values()))
