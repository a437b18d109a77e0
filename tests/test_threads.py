"""Python threads running layers concurrently get bitwise the results of a serial run."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import available_backends, labels, normal, run_python

import bpfast
from bpfast.layers import Affine, Relu, SoftmaxWithLoss

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
from bpfast.layers import Affine, SoftmaxWithLoss
rng = np.random.default_rng(0)
layer = Affine(rng.standard_normal((517, 263)), rng.standard_normal(263))
out = layer.forward(rng.standard_normal((300, 517)))
loss = SoftmaxWithLoss()
loss.forward(out, rng.integers(0, 263, 300))
dx = layer.backward(loss.backward())
print(hashlib.sha256(b"".join(a.tobytes() for a in (out, dx, layer.dW, layer.db))).hexdigest())
"""


def test_results_do_not_depend_on_the_thread_count():
    """The compiled core sums reductions in fixed chunks: 1 or 2 threads give the same bits."""
    if "cpp" not in available_backends():
        pytest.skip("backend 'cpp' is not available here (the promise is the compiled core's)")
    digests = set()
    for threads in ("1", "2"):
        result = run_python(["-c", THREAD_COUNT_SCRIPT], BPFAST_BACKEND="cpp", BPFAST_NUM_THREADS=threads)
        assert result.returncode == 0, result.stderr
        digests.add(result.stdout.strip())
    assert len(digests) == 1
