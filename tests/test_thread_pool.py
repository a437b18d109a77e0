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


def test_environment_sets_the_default():
    import subprocess

    code = "import bpfast; print(bpfast.get_num_threads())"
    env = dict(os.environ, BPFAST_NUM_THREADS="3")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
