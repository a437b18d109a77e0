"""The SciPy BLAS escape hatch: ``BPFAST_GEMM=scipy`` routes the compiled core's matrix products
through SciPy's own BLAS (``sgemm``/``dgemm`` from ``scipy.linalg.cython_blas``, whose
``__pyx_capi__`` exports them as PyCapsules, the way Numba finds them).

SciPy is imported (by the core, in ``_set_blas_gemm``) only when this is asked for.
"""

from __future__ import annotations

import os
import warnings


def use_scipy_blas(on: bool = True) -> str:
    """Route the core's GEMM through SciPy's BLAS (``on``) or back to bpfast's own kernels.

    Returns the GEMM now in use, ``"blas"`` or ``"bpfast"``.
    """
    from bpfast import _core

    _core._set_blas_gemm(on)  # the core takes SciPy's capsules itself (ImportError without SciPy)
    return _core._gemm_backend()


def apply_environment() -> None:
    """Honour ``BPFAST_GEMM``: ``scipy`` routes the products through SciPy's BLAS; ``bpfast`` (or
    unset, or empty) keeps bpfast's own GEMM; anything else is a RuntimeWarning and bpfast's own."""
    requested = os.environ.get("BPFAST_GEMM", "").strip().lower()
    if requested == "scipy":
        use_scipy_blas(True)
    elif requested not in ("", "bpfast"):
        warnings.warn(
            f"BPFAST_GEMM={os.environ['BPFAST_GEMM']!r} ignored (not 'scipy' or 'bpfast'); bpfast's own GEMM runs",
            RuntimeWarning,
            stacklevel=2,
        )
