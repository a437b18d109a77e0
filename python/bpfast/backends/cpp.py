"""The C++ backend: the kernels of the compiled core ``bpfast._core``, same interface as ``numpy_ref``.

The functions are the extension's own; each checks dtypes and shapes, copies inputs that are
not C-contiguous and aligned, and runs its kernel (with the GIL released unless the input is
small). The only Python here is ``relu_backward``'s fallback for a ``dout`` the kernel cannot
zero in place (it raises ``NotInPlaceError``, a ValueError, without touching it).
"""

from __future__ import annotations

import os

import numpy as np

from bpfast._core import (  # noqa: F401  (re-exported: the backend interface)
    affine_backward,
    affine_forward,
    relu_forward,
    sigmoid_backward,
    sigmoid_forward,
    softmax,
    softmax_xent_backward,
    softmax_xent_forward,
    two_layer_gradient,
    two_layer_train_step,
)
from bpfast._core import NotInPlaceError as _NotInPlaceError
from bpfast._core import relu_backward as _relu_backward

name = "cpp"

if os.environ.get("BPFAST_GEMM"):  # BPFAST_GEMM=scipy: SciPy's BLAS for the matrix products
    from bpfast import _blas

    _blas.apply_environment()


def relu_backward(dout, mask):
    """Zeroes dout where mask is set, in place (dout is writable and has mask's shape)."""
    try:
        _relu_backward(dout, mask)
    except _NotInPlaceError:  # dout is not C-contiguous and aligned: NumPy zeroes it where it lies
        np.putmask(dout, mask, 0)
