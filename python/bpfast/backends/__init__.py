"""Backends: modules that expose the same kernel functions (see ``numpy_ref``).

``numpy`` is the reference (the oracle), ``numba`` the njit fallback, ``cpp`` the
compiled core. This package only knows their names and how to import them; the
choice of the active one lives in ``bpfast._backend``.
"""

from __future__ import annotations

import importlib
import importlib.util

MODULES = {"cpp": "bpfast.backends.cpp", "numba": "bpfast.backends.numba_kernels", "numpy": "bpfast.backends.numpy_ref"}
PREFERENCE = ("cpp", "numba", "numpy")


def load(name: str):
    """Import backend ``name`` and return its module (ImportError when it cannot load)."""
    try:
        module_name = MODULES[name]
    except KeyError:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(PREFERENCE)}") from None
    return importlib.import_module(module_name)


def importable(name: str) -> bool:
    """Whether backend ``name`` loads here (imports it, so call it only when asked)."""
    try:
        load(name)
    except ImportError:
        return False
    return True


def compiled_core_present() -> bool:
    """Whether a compiled ``bpfast._core`` file is installed, importable or not."""
    return importlib.util.find_spec("bpfast._core") is not None
