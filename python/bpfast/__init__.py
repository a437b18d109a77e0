"""bpfast: the layer classes of "Deep Learning from Scratch", chapter 5, with C++ kernels.

``from bpfast.layers import *`` replaces ``from common.layers import *``; the book's
scripts run unchanged, with the same numbers, faster. See ``bpfast.info()`` for what
runs underneath and ``set_backend`` / ``use_backend`` to choose it.
"""

from __future__ import annotations

__version__ = "0.1.0"

from bpfast._backend import backends, current as _current_backend, get_backend, set_backend, use_backend
from bpfast._info import info
from bpfast._threads import get_num_threads, set_num_threads, warn_if_env_ignored as _warn_if_env_ignored

__all__ = [
    "__version__",
    "backends",
    "get_backend",
    "set_backend",
    "use_backend",
    "get_num_threads",
    "set_num_threads",
    "info",
]

_current_backend()  # choose the default now, so BPFAST_BACKEND is read at import
_warn_if_env_ignored()
