"""Memory: no leak over 100,000 calls, sizes beyond 32 bits, and MemoryError for impossible sizes.

The leak check runs every layer's forward and backward (and the one-call step) 100,000 times
on each backend and asks that the resident size stay flat after a warm-up. The large-size
check runs a kernel over more than 2**32 elements, so an index or count truncated to 32 bits
would leave the tail untouched; it maps 20 GiB (mostly never touched) and is skipped, saying
so, where the machine has less free.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import available_backends, labels, normal

from bpfast import functions as F
from bpfast.layers import Affine, Relu, Sigmoid, SoftmaxWithLoss
from bpfast.nets import TwoLayerNet

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def sanitized_core() -> bool:
    """Whether the compiled core is an ASan build (its quarantine and shadow memory would make
    the resident size grow, and ASan may fill large calloc'd blocks that stay untouched here)."""
    if "cpp" not in available_backends():
        return False
    from bpfast import _core

    return "-fsanitize" in _core.info()["build_flags"]["common"]


pytestmark = pytest.mark.skipif(sanitized_core(), reason="memory sizes are not meaningful under AddressSanitizer")


def resident_bytes() -> int:
    statm = Path("/proc/self/statm")
    if not statm.exists():
        pytest.skip("no /proc/self/statm on this platform")
    return int(statm.read_text().split()[1]) * PAGE


def available_bytes() -> int:
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return 0
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def one_round(layers, loss_layer, net, x, t):
    """Forward and backward through every layer, the functions, and the one-call step."""
    out = x
    for layer in layers:
        out = layer.forward(out)
    loss_layer.forward(out, t)
    dout = loss_layer.backward()
    for layer in reversed(layers):
        dout = layer.backward(dout)
    F.softmax(out)
    F.cross_entropy_error(F.softmax(out), t)
    net.train_step(x, t, 0.01)


@pytest.mark.slow
def test_100k_calls_leave_the_process_size_flat(backend):
    np.random.seed(0)
    x, t = normal(1, (8, 12), np.float64), labels(2, 8, 5)
    layers = [Affine(normal(3, (12, 6), np.float64), np.zeros(6)), Relu(), Sigmoid(), Affine(normal(4, (6, 5), np.float64), np.zeros(5))]
    loss_layer, net = SoftmaxWithLoss(), TwoLayerNet(12, 6, 5)
    calls_per_round = 2 * len(layers) + 2 + 3 + 1
    rounds = 100_000 // calls_per_round + 1
    for _ in range(rounds // 10):  # warm-up: caches, Numba's compiled kernels, the allocator's pools
        one_round(layers, loss_layer, net, x, t)
    warm = resident_bytes()
    for _ in range(rounds):
        one_round(layers, loss_layer, net, x, t)
    grown = resident_bytes() - warm
    # A leaked 8x6 float64 array per call would be 40+ MB here; allow the allocator 2 MiB of drift.
    assert grown < 2 * 2**20, f"resident size grew by {grown / 2**20:.1f} MiB over {rounds * calls_per_round} calls"


def require_core():
    if "cpp" not in available_backends():
        pytest.skip("the compiled core is not built here")
    from bpfast import _core

    return _core


@pytest.mark.slow
def test_more_than_2_32_elements_are_all_processed():
    """ReLU backward in place over 2**32 + 100 float32 elements: past both 32-bit limits.

    The arrays start as untouched zero pages, so only the pages the kernel writes become
    resident (a few MiB, about 10 s here); the check still asks for room for dout and mask.
    """
    _core = require_core()
    n = 2**32 + 100
    needed = n * (4 + 1)
    if available_bytes() < needed:
        pytest.skip(f"needs {needed / 2**30:.0f} GiB free, the machine has {available_bytes() / 2**30:.1f} GiB")
    dout = np.zeros(n, dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    masked = [0, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**32 + 1, n - 1]  # at both 32-bit limits and the end
    kept = [1, 2**31 + 2, 2**32 - 2, 2**32 + 2, n - 2]
    dout[masked] = 1.0
    dout[kept] = 2.0
    mask[masked] = True
    _core.relu_backward(dout, mask)
    np.testing.assert_array_equal(dout[masked], 0.0)
    np.testing.assert_array_equal(dout[kept], 2.0)


@pytest.mark.parametrize(
    "call",
    [
        "affine_forward(np.ones((2**16, 1)), wide((1, 2**34)), wide((2**34,)))",
        "_gemm(np.ones((2**16, 1)), wide((1, 2**34)))",
        "relu_forward(wide((2**20, 2**20)))",
        "softmax(wide((2**20, 2**21)))",
        "two_layer_gradient(np.ones((2**20, 1)), np.zeros(2**20, np.int64), wide((1, 2**30)), wide((2**30,)), wide((2**30, 1)), np.ones(1))",
    ],
)
def test_impossible_sizes_raise_memory_error(call):
    """Outputs (or copies) of petabytes: MemoryError, promptly (refused before any work is done:
    hundredths of a second here, 5 s allowed for sanitizers), and the process lives on."""
    _core = require_core()

    def wide(shape):
        return np.broadcast_to(np.ones((1,) * len(shape)), shape)

    started = time.perf_counter()
    with pytest.raises(MemoryError):
        eval(f"_core.{call}", {"_core": _core, "np": np, "wide": wide})  # noqa: S307 - fixed strings above
    assert time.perf_counter() - started < 5.0
