"""The SciPy BLAS escape hatch: ``BPFAST_GEMM=scipy`` routes the compiled core's matrix products
through SciPy's own BLAS (``sgemm``/``dgemm`` from ``scipy.linalg.cython_blas``, whose
``__pyx_capi__`` exports them as PyCapsules, the way Numba finds them).

SciPy is imported only here, and this module only when the variable asks for it.
"""

from __future__ import annotations

import ctypes
import os


def _capsule_address(capsule) -> int:
    get_name = ctypes.pythonapi.PyCapsule_GetName
    get_name.restype = ctypes.c_char_p
    get_name.argtypes = [ctypes.py_object]
    get_pointer = ctypes.pythonapi.PyCapsule_GetPointer
    get_pointer.restype = ctypes.c_void_p
    get_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
    return get_pointer(capsule, get_name(capsule))


def blas_gemm_addresses() -> tuple[int, int]:
    """Addresses of SciPy's Fortran ``sgemm`` and ``dgemm`` (ImportError without SciPy)."""
    from scipy.linalg import cython_blas

    capi = cython_blas.__pyx_capi__
    return _capsule_address(capi["sgemm"]), _capsule_address(capi["dgemm"])


def use_scipy_blas(on: bool = True) -> str:
    """Route the core's GEMM through SciPy's BLAS (``on``) or back to bpfast's own kernels.

    Returns the GEMM now in use, ``"blas"`` or ``"bpfast"``.
    """
    from bpfast import _core

    _core._set_blas_gemm(*(blas_gemm_addresses() if on else (0, 0)))
    return _core._gemm_backend()


def apply_environment() -> None:
    """Honour ``BPFAST_GEMM=scipy`` (anything else, or unset: bpfast's own GEMM)."""
    if os.environ.get("BPFAST_GEMM", "").strip().lower() == "scipy":
        use_scipy_blas(True)
