"""Machine state around a sample: wait until this process's other threads stop spinning
(OpenBLAS's, after a NumPy call), and warm the machine up again before the next sample.

After every call, OpenBLAS's worker threads spin for about 0.1 s of CPU before they sleep
(measured here: 0.100 s of CPU on the second core after each product). On a two-core machine
that takes a core from whatever is timed next in the same process, so the benchmarks wait
for those threads to go quiet after timing a NumPy (or Numba, through SciPy's OpenBLAS)
variant and before timing the next one.
"""

from __future__ import annotations

import os
import time

_TASKS = f"/proc/{os.getpid()}/task"
_WINDOW_S = 0.025  # longer than two scheduler ticks: a spinning thread shows up in it
_FALLBACK_S = 0.12  # where /proc cannot tell: longer than OpenBLAS's spin


def _other_threads_cpu_ticks() -> int | None:
    try:
        total = 0
        for tid in os.listdir(_TASKS):
            if int(tid) == os.getpid():
                continue
            with open(f"{_TASKS}/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        return total
    except (OSError, ValueError, IndexError):
        return None


def wait_for_quiet_threads(max_s: float = 0.3) -> float:
    """Sleep until no other thread of this process used CPU for a whole window (at most
    ``max_s``); returns the seconds waited."""
    start = time.perf_counter()
    before = _other_threads_cpu_ticks()
    if before is None:
        time.sleep(_FALLBACK_S)
        return time.perf_counter() - start
    while time.perf_counter() - start < max_s:
        time.sleep(_WINDOW_S)
        now = _other_threads_cpu_ticks()
        if now == before:
            break
        before = now
    return time.perf_counter() - start


def warm_up(call, seconds: float) -> None:
    """Call ``call()`` untimed for at least ``seconds`` (at least once).

    The quiet wait above leaves both cores idle for 25 ms or more, and the first milliseconds
    after an idle spell run slow for every variant (measured: a 300 us training step timed
    right after a 30 ms sleep has a median 40% above the same step timed back to back; 5-10 ms
    of untimed calls first bring it back). A training loop never idles between steps, so each
    sample starts warm."""
    start = time.perf_counter()
    call()
    while time.perf_counter() - start < seconds:
        call()
