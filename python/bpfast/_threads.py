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
    """Threads the compiled kernels use (1 when the compiled core is missing).

    The count set, or fewer once the system refused to start a thread (``bpfast.info()`` then says
    so under ``num_threads_note``).
    """
    core = _core()
    return core.get_num_threads() if core is not None else 1


def set_num_threads(n: int) -> None:
    """Use ``n`` threads (1 <= n <= 65536) for the compiled kernels from the next call on.

    When the system will not start that many, the kernels run on the threads it did start.
    """
    n = operator.index(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be at least 1, got {n}")
    core = _core()
    if core is not None:
        if n > core.MAX_THREADS:  # (before the core's int conversion could refuse it as a TypeError)
            raise ValueError(f"set_num_threads: n must be at most {core.MAX_THREADS}, got {n}")
        core.set_num_threads(n)


def warn_if_env_ignored() -> None:
    """A RuntimeWarning when BPFAST_NUM_THREADS was set but not usable (the default ran instead)."""
    core = _core()
    problem = core._num_threads_env_problem() if core is not None else ""
    if problem:
        warnings.warn(problem, RuntimeWarning, stacklevel=3)
