"""The compiled core's thread pool: every chunk once, concurrent callers, fork, thread count."""

from __future__ import annotations

import os
import sys
import threading

import pytest

import bpfast

core = pytest.importorskip("bpfast._core", reason="the compiled core is not built")


@pytest.fixture
def threads():
    before = bpfast.get_num_threads()
    yield bpfast.set_num_threads
    bpfast.set_num_threads(before)


@pytest.mark.parametrize("n_threads", [1, 2, 3, 4])
@pytest.mark.parametrize("n_chunks", [1, 2, 7, 64])
def test_every_chunk_runs_once(threads, n_threads, n_chunks):
    threads(n_threads)
    assert bpfast.get_num_threads() == n_threads
    assert core._pool_selftest(n_chunks, 200)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
@pytest.mark.parametrize("n_chunks", [1, 2, 5])
def test_a_region_inside_a_chunk_runs_inline(threads, n_threads, n_chunks):
    """A kernel run inside a chunk (Affine backward runs its two products side by side this way)
    opens a region of its own: it runs on that chunk's thread alone, every inner chunk once."""
    threads(n_threads)
    assert core._pool_selftest(n_chunks, 100, nested=True)


def test_concurrent_callers_from_python_threads(threads):
    threads(2)
    results = []
    workers = [threading.Thread(target=lambda: results.append(core._pool_selftest(5, 500))) for _ in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert results == [True] * 6


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_runs_parallel_regions(threads):
    threads(2)
    assert core._pool_selftest(9, 100)  # the parent's workers exist before the fork
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        code = 0 if core._pool_selftest(9, 100) else 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0


@pytest.mark.parametrize("bad", [0, -1])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match="at least 1"):
        bpfast.set_num_threads(bad)


def test_set_num_threads_rejects_non_integers():
    with pytest.raises(TypeError):
        bpfast.set_num_threads(1.5)


@pytest.mark.parametrize("bad", [core.MAX_THREADS + 1, 2**31, 2**70])
def test_set_num_threads_rejects_more_than_the_pool_takes(threads, bad):
    with pytest.raises(ValueError, match=f"at most {core.MAX_THREADS}, got {bad}"):
        bpfast.set_num_threads(bad)


def test_set_num_threads_takes_the_most_it_says(threads):
    assert core.MAX_THREADS == 65536  # the README's BPFAST_NUM_THREADS range
    threads(core.MAX_THREADS)
    assert bpfast.get_num_threads() == core.MAX_THREADS


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")
@pytest.mark.skipif("-fsanitize" in core.info()["build_flags"]["common"],
                    reason="the address-space cap would starve the sanitizer's own mappings")
def test_pool_runs_on_the_threads_the_system_allows():
    """Room for about 30 thread stacks and 200 threads asked for: the system refuses the rest,
    and every region still runs every chunk once, on the workers that did start; a product then
    gives the one-thread bits, and get_num_threads and the core's info() say how many run. (Before:
    RuntimeError "Resource temporarily unavailable".)"""
    import subprocess
    import textwrap

    code = textwrap.dedent(
        """
        import resource
        import numpy as np
        import bpfast
        from bpfast import _core

        def status(key):
            return int(next(line for line in open("/proc/self/status") if line.startswith(key)).split()[1])

        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((300, 200)), rng.standard_normal((200, 300))
        bpfast.set_num_threads(1)
        want = _core._gemm(a, b)
        before = status("Threads")  # the pool's workers have not started yet
        resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") * 1024 + 256 * 2**20, resource.RLIM_INFINITY))
        bpfast.set_num_threads(200)
        assert _core._pool_selftest(1000, 3)
        assert np.array_equal(_core._gemm(a, b), want)
        print(status("Threads") - before, bpfast.get_num_threads(), _core.info()["num_threads_note"])
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    workers, used, note = out.stdout.split(maxsplit=2)
    assert 2 < int(workers) < 199  # some workers started, not all 199
    assert int(used) == int(workers) + 1  # get_num_threads: the workers and the caller
    assert note.strip() == f"200 threads were set, but the system started only {int(used) - 1} workers: the kernels run on {used}"


def test_environment_sets_the_default():
    import subprocess

    code = "import bpfast; print(bpfast.get_num_threads())"
    env = dict(os.environ, BPFAST_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
