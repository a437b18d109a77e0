"""Input checks shared by every public function, so all backends answer bad input alike.

Array-likes are converted as NumPy would; ``None``, strings and non-numeric objects raise
``TypeError``; shape mismatches raise ``ValueError`` naming both shapes; labels outside
[0, C) raise ``ValueError``. ``kernel_dtype`` says whether a backend kernel can run the
computation (float32/float64) or the NumPy reference must (float16, integer ReLU, ...).
"""

from __future__ import annotations

import math

import numpy as np

FLOAT32, FLOAT64 = np.dtype(np.float32), np.dtype(np.float64)
INT64 = np.dtype(np.int64)
KERNEL_DTYPES = (FLOAT32, FLOAT64)
_NUMERIC_KINDS = "biuf"


def as_numeric(value, name: str) -> np.ndarray:
    """``value`` as a plain ndarray of a real numeric dtype, or TypeError saying what it was.

    Subclasses (np.matrix, np.memmap, ...) become plain views of the same memory, so that every
    backend computes the same formula on them; masked arrays are refused, since no kernel would
    honour the mask.
    """
    if type(value) is np.ndarray:
        array = value
    elif isinstance(value, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a masked array, which the layers would not honour: pass {name}.filled(value) "
            f"or np.asarray({name}) (the data as it is)"
        )
    elif isinstance(value, np.ndarray):
        array = np.asarray(value)
    else:
        if value is None or isinstance(value, (str, bytes)):
            raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}")
        try:
            array = np.asarray(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be a numeric array: {exc}") from None
    if array.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(f"{name} must be a real numeric array, got dtype {array.dtype}")
    return array


def kernel_dtype(dtype: np.dtype) -> np.dtype | None:
    """``dtype`` when the backend kernels exist for it (float32/float64), else None."""
    return dtype if dtype in KERNEL_DTYPES else None


def float_result_dtype(x: np.ndarray) -> np.dtype:
    """The dtype NumPy's ``exp`` gives for ``x`` (int8 -> float16, int32 -> float64, ...)."""
    return np.result_type(x.dtype, np.float16)


def promoted_dtype(x: np.ndarray, *params: np.ndarray) -> np.dtype:
    """np.result_type(x, *params), without the call in the usual cases (it costs about a
    microsecond per layer call): all one dtype, or the book's float32 data with float64 params."""
    dtype = params[0].dtype
    if x.dtype == dtype or (x.dtype == FLOAT32 and dtype == FLOAT64):
        for p in params[1:]:  # a loop: all() over a generator costs more than the test
            if p.dtype != dtype:
                break
        else:
            return dtype
    return np.result_type(x, *params)


def batch_rows(x: np.ndarray) -> np.ndarray:
    """x (N, ...) as (N, features): itself when 2-D, else a reshape (empty batches included)."""
    return x if x.ndim == 2 else x.reshape(x.shape[0], math.prod(x.shape[1:]))


def scalar_if_0d(a: np.ndarray):
    """A NumPy scalar for a 0-d array, as NumPy's own elementwise formulas give; else ``a``."""
    return a[()] if a.ndim == 0 else a


def cast(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``x`` in ``dtype``, without a copy when it already is."""
    return x if x.dtype == dtype else x.astype(dtype)


def require_shape(condition: bool, what: str, *shapes: tuple[str, tuple]) -> None:
    """Raise ValueError ``what: a has shape (..) but b has shape (..)`` unless ``condition``."""
    if not condition:
        described = " but ".join(f"{label} has shape {shape}" for label, shape in shapes)
        raise ValueError(f"{what}: {described}")


def labels_or_onehot(t, y_shape: tuple, what: str) -> np.ndarray:
    """Targets for logits of shape (N, C): int64 labels (N,) in [0, C), or one-hot (N, C).

    Returns labels as int64, one-hot as given (numeric). Anything else raises.
    """
    t = as_numeric(t, "t")
    n, c = y_shape
    if t.shape == (n, c):
        return t
    require_shape(t.shape == (n,), what + " (t must be labels (N,) or one-hot (N, C))", ("y", y_shape), ("t", t.shape))
    if t.dtype.kind not in "iu":
        raise TypeError(f"{what}: labels must be integers, got dtype {t.dtype}")
    check_label_range(t, c, what)
    return t.astype(np.int64, copy=False)


def check_label_range(t: np.ndarray, num_classes: int, what: str) -> None:
    """ValueError naming the first label outside [0, num_classes)."""
    if t.size == 0:
        return
    low, high = t.min(), t.max()
    if low < 0 or high >= num_classes:
        bad = np.flatnonzero((t < 0) | (t >= num_classes))[0]
        raise ValueError(f"{what}: label {t.flat[bad]} at index {bad} is outside [0, {num_classes})")
