"""How many threads the kernels use: ``bpfast.set_num_threads`` / ``get_num_threads``.

The compiled core has its own pool (default: ``BPFAST_NUM_THREADS``, else the CPUs this
process may use). Results never depend on the count: reductions run in fixed chunks.
"""

from __future__ import annotations

import operator
import warnings


def _core():
    try:
        from bpfast import _core
    except ImportError:
        return None
    return _core


def get_num_threads() -> int:
    """Threads the compiled kernels use (1 when the compiled core is missing)."""
    core = _core()
    return core.get_num_threads() if core is not None else 1


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (n >= 1) for the compiled kernels from the next call on."""
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    core = _core()
    if core is not None:
        core.set_num_threads(n)


def warn_if_env_ignored() -> None:
    """A RuntimeWarning when BPFAST_NUM_THREADS was set but not usable (the default ran instead)."""
    core = _core()
    problem = core._num_threads_env_problem() if core is not None else ""
    if problem:
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
