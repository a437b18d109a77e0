"""Python threads running layers concurrently get bitwise the results of a serial run."""

from __future__ import annotations

import json
import os
import threading
import time

import numpy as np
import pytest
from conftest import available_backends, labels, normal, run_python

import bpfast
from bpfast.layers import Affine, Relu, SoftmaxWithLoss
from bpfast.nets import TwoLayerNet

THREADS = 8
ROUNDS = 40


def build(seed):
    """Each worker's own Affine+Relu+Affine+SoftmaxWithLoss and data (seeded, all different)."""
    layers = [Affine(normal(seed, (48, 33), np.float64) * 0.1, normal(seed + 1, (33,), np.float64)), Relu()]
    layers.append(Affine(normal(seed + 2, (33, 10), np.float64) * 0.1, normal(seed + 3, (10,), np.float64)))
    return layers, SoftmaxWithLoss(), normal(seed + 4, (65, 48), np.float64), labels(seed + 5, 65, 10)


def work(seed, start=None):
    """ROUNDS of forward, backward and an SGD update; returns every loss and the final params."""
    layers, loss_layer, x, t = build(seed)
    if start is not None:
        start.wait()
    losses = []
    for _ in range(ROUNDS):
        out = x
        for layer in layers:
            out = layer.forward(out)
        losses.append(loss_layer.forward(out, t))
        dout = loss_layer.backward()
        for layer in reversed(layers):
            dout = layer.backward(dout)
        for affine in (layers[0], layers[2]):
            affine.W -= 0.1 * affine.dW
            affine.b -= 0.1 * affine.db
    return np.array(losses), [a for affine in (layers[0], layers[2]) for a in (affine.W, affine.b, affine.dW, affine.db)]


def test_threads_match_a_serial_run(backend):
    serial = [work(seed) for seed in range(0, 10 * THREADS, 10)]
    results = [None] * THREADS
    errors = []
    start = threading.Barrier(THREADS)

    def run(i):
        try:
            # use_backend is per thread (a context variable): each worker chooses it itself.
            with bpfast.use_backend(backend):
                assert bpfast.get_backend() == backend
                results[i] = work(10 * i, start)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    for i, ((losses, arrays), (serial_losses, serial_arrays)) in enumerate(zip(results, serial)):
        np.testing.assert_array_equal(losses, serial_losses, err_msg=f"thread {i} losses")
        for j, (a, b) in enumerate(zip(arrays, serial_arrays)):
            np.testing.assert_array_equal(a, b, err_msg=f"thread {i} array {j}")
    assert len({float(r[0][-1]) for r in results}) == THREADS  # every worker had its own problem


THREAD_COUNT_SCRIPT = """
import hashlib, numpy as np
from bpfast import functions as F
from bpfast.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from bpfast.nets import TwoLayerNet
rng = np.random.default_rng(0)
arrays = []
for dtype in (np.float32, np.float64):
    layer = Affine(rng.standard_normal((517, 263)).astype(dtype), rng.standard_normal(263).astype(dtype))
    out = layer.forward(rng.standard_normal((300, 517)).astype(dtype))
    loss = SoftmaxWithLoss()
    loss.forward(out, rng.integers(0, 263, 300))
    arrays += [out, layer.backward(loss.backward()), layer.dW, layer.db]
    big = rng.standard_normal((640, 3001)).astype(dtype)
    relu, sigmoid = Relu(), Sigmoid()
    arrays += [F.softmax(big), relu.forward(big), relu.backward(big.copy()), sigmoid.forward(big), sigmoid.backward(big)]
np.random.seed(0)
net = TwoLayerNet(784, 100, 10)
x, t = rng.random((700, 784), dtype=np.float32), rng.integers(0, 10, 700)
for _ in range(3):
    net.train_step(x, t, 0.1)
arrays += list(net.gradient(x, t).values()) + list(net.params.values())
print(hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest())
"""


def test_results_do_not_depend_on_the_thread_count():
    """The compiled core sums reductions in fixed chunks: 1, 2, 3 or 4 threads give the same bits."""
    if "cpp" not in available_backends():
        pytest.skip("backend 'cpp' is not available here (the promise is the compiled core's)")
    digests = {}
    for threads in ("1", "2", "3", "4"):
        result = run_python(["-c", THREAD_COUNT_SCRIPT], BPFAST_BACKEND="cpp", BPFAST_NUM_THREADS=threads)
        assert result.returncode == 0, result.stderr
        digests[threads] = result.stdout.strip()
    assert len(set(digests.values())) == 1, digests


THREADS_ENV_SCRIPT = """
import json, os, warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import bpfast
print(json.dumps({"threads": bpfast.get_num_threads(), "cpus": len(os.sched_getaffinity(0)),
                  "note": bpfast.info().get("num_threads_note"),
                  "warned": [str(w.message) for w in caught if w.category is RuntimeWarning]}))
"""


def import_with_threads_env(value: str) -> dict:
    """What a fresh process importing bpfast with BPFAST_NUM_THREADS=value reports."""
    if "cpp" not in available_backends():
        pytest.skip("backend 'cpp' is not available here (the pool is the compiled core's)")
    result = run_python(["-c", THREADS_ENV_SCRIPT], BPFAST_NUM_THREADS=value)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("value", ["0", "-2", "3x", "2.5", "abc", "99999999999"])
def test_unusable_thread_count_in_the_environment_is_ignored_aloud(value):
    """BPFAST_NUM_THREADS that is not a whole number from 1 to 65536: the default, a RuntimeWarning
    at import, and a note in info() (never a count parsed from part of it, or overflowed)."""
    report = import_with_threads_env(value)
    assert report["threads"] == report["cpus"]
    assert report["note"].startswith(f"BPFAST_NUM_THREADS={value} ignored") and report["warned"] == [report["note"]]


@pytest.mark.parametrize("value, expected", [("3", 3), (" 5 ", 5), ("", None)])
def test_usable_thread_count_in_the_environment(value, expected):
    report = import_with_threads_env(value)
    assert report["threads"] == (expected or report["cpus"])
    assert report["note"] is None and report["warned"] == []


def test_long_kernel_lets_other_python_threads_run():
    """The GIL is released around a long kernel: the main thread keeps ticking meanwhile."""
    if "cpp" not in available_backends():
        pytest.skip("backend 'cpp' is not available here (the GIL promise is the compiled core's)")
    from bpfast import _core

    a = np.random.default_rng(1).standard_normal((1400, 1400))
    running = threading.Event()

    def kernel():
        running.set()
        for _ in range(3):
            _core._gemm(a, a)

    # One pool thread: the kernel holds one core and the ticking loop has the other (with the
    # pool on every core, a busy machine could keep this thread off a core, GIL or not).
    threads_before = bpfast.get_num_threads()
    bpfast.set_num_threads(1)
    try:
        start = time.perf_counter()
        _core._gemm(a, a)
        kernel_seconds = time.perf_counter() - start
        worker = threading.Thread(target=kernel)
        worker.start()
        running.wait()
        ticks = [time.perf_counter()]
        while worker.is_alive():
            ticks.append(time.perf_counter())
        worker.join()
    finally:
        bpfast.set_num_threads(threads_before)
    longest_gap = max(np.diff(ticks)) if len(ticks) > 1 else float("inf")
    # Held, the GIL would stop this loop for a whole product (kernel_seconds, about 0.1-0.5 s).
    assert longest_gap < kernel_seconds / 2, (longest_gap, kernel_seconds, len(ticks))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_forked_child_trains_like_the_parent(backend):
    """After the parent ran kernels (the pool's workers exist), a forked child runs them too, same bits."""
    np.random.seed(3)
    net = TwoLayerNet(50, 40, 10)
    x, t = normal(4, (64, 50), np.float64), labels(5, 64, 10)
    net.train_step(x, t, 0.1)  # warm: the parent's pool is running
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through the pipe and its exit code
        try:
            os.close(read_end)
            loss = net.train_step(x, t, 0.1)
            os.write(write_end, np.array([loss], np.float64).tobytes() + net.params["W1"].tobytes())
            os._exit(0)
        finally:
            os._exit(1)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        child = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    loss = net.train_step(x, t, 0.1)
    assert child == np.array([loss], np.float64).tobytes() + net.params["W1"].tobytes()
