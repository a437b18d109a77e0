"""bpfast: the layer classes of "Deep Learning from Scratch", chapter 5, with C++ kernels.

``from bpfast.layers import *`` replaces ``from common.layers import *``; the book's
scripts run unchanged, with the same numbers, faster. See ``bpfast.info()`` for what
runs underneath and ``set_backend`` / ``use_backend`` to choose it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from bpfast._backend import backends, current as _current_backend, get_backend, set_backend, use_backend
from bpfast._info import info

__all__ = ["__version__", "backends", "get_backend", "set_backend", "use_backend", "info"]

_current_backend()  # choose the default now, so BPFAST_BACKEND is read at import
