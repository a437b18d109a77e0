"""The SciPy BLAS escape hatch: ``BPFAST_GEMM=scipy`` routes the compiled core's matrix products
through SciPy's own BLAS (``sgemm``/``dgemm`` from ``scipy.linalg.cython_blas``, whose
``__pyx_capi__`` exports them as PyCapsules, the way Numba finds them).

SciPy is imported (by the core, in ``_set_blas_gemm``) only when this is asked for.
"""

from __future__ import annotations

import os


def use_scipy_blas(on: bool = True) -> str:
    """Route the core's GEMM through SciPy's BLAS (``on``) or back to bpfast's own kernels.

    Returns the GEMM now in use, ``"blas"`` or ``"bpfast"``.
    """
    from bpfast import _core

    _core._set_blas_gemm(on)  # the core takes SciPy's capsules itself (ImportError without SciPy)
    return _core._gemm_backend()


def apply_environment() -> None:
    """Honour ``BPFAST_GEMM=scipy`` (anything else, or unset: bpfast's own GEMM)."""
    if os.environ.get("BPFAST_GEMM", "").strip().lower() == "scipy":
        use_scipy_blas(True)
