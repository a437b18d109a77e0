"""Which backend runs the kernels: chosen at import, switched by the user.

The default is ``cpp`` when the compiled core imports, else ``numba``, else ``numpy``;
``BPFAST_BACKEND`` at import overrides it. ``use_backend`` overrides it for one block
of code in the current thread (a context variable), ``set_backend`` for everyone.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import warnings
from collections.abc import Iterator
from types import ModuleType

from bpfast import backends as _backends

_default: ModuleType | None = None
_override: contextvars.ContextVar[ModuleType | None] = contextvars.ContextVar("bpfast_backend", default=None)


def current() -> ModuleType:
    """The backend module the kernels run on right now."""
    module = _override.get()
    if module is not None:
        return module
    if _default is None:
        _choose_default()
    return _default  # type: ignore[return-value]


def get_backend() -> str:
    """Name of the backend in use: ``"cpp"``, ``"numba"`` or ``"numpy"``."""
    return current().name


def set_backend(name: str) -> None:
    """Use backend ``name`` from now on (ValueError if unknown, ImportError if unavailable)."""
    global _default
    _default = _load_or_explain(name)


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[str]:
    """Run the enclosed block on backend ``name`` (in this thread), then restore the previous one."""
    token = _override.set(_load_or_explain(name))
    try:
        yield name
    finally:
        _override.reset(token)


def backends() -> list[str]:
    """Names of the backends that load on this machine, fastest first."""
    return [name for name in _backends.PREFERENCE if _backends.importable(name)]


def _load_or_explain(name: str) -> ModuleType:
    try:
        return _backends.load(name)
    except ImportError as exc:
        raise ImportError(f"bpfast backend {name!r} is not available here: {exc}") from exc


def _choose_default() -> None:
    global _default
    requested = os.environ.get("BPFAST_BACKEND", "").strip().lower()
    if requested in _backends.PREFERENCE:
        _default = _load_or_explain(requested)
        return
    if requested:  # a typo must not stop `import bpfast` (nor `bpfast info`, which explains)
        warnings.warn(
            f"BPFAST_BACKEND={requested!r} ignored (not one of {', '.join(_backends.PREFERENCE)}); "
            "the default is the fastest backend available",
            RuntimeWarning,
            stacklevel=3,
        )
    failures = []
    for name in _backends.PREFERENCE:
        try:
            _default = _backends.load(name)
        except ImportError as exc:
            failures.append(f"{name}: {exc}")
            continue
        if failures and _backends.compiled_core_present():
            warnings.warn(
                "bpfast's compiled core is installed but does not load "
                f"({failures[0]}); running on the {name!r} backend instead.",
                RuntimeWarning,
                stacklevel=3,
            )
        return
