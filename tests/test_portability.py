"""What a wheel on someone else's machine relies on: the probe explains its choice, the pool
sleeps when idle and shares the process with NumPy's and PyTorch's pools, and a child forked
while a kernel runs can still run kernels."""

from __future__ import annotations

import importlib.util
import os
import threading
import time
import warnings

import numpy as np
import pytest
from conftest import run_python

core = pytest.importorskip("bpfast._core", reason="the compiled core is not built")

FASTER = {"generic": ("avx2", "avx512"), "avx2": ("avx512",), "avx512": ()}


@pytest.fixture
def two_threads():
    before = core.get_num_threads()
    core.set_num_threads(2)
    yield
    core.set_num_threads(before)


def operands(n=320, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n)), rng.standard_normal((n, n))


def test_probe_says_why_faster_paths_were_passed_over():
    """The probe's reason names every faster compiled path it did not take, and why."""
    result = run_python(["-c", "import bpfast._core as c; i = c.info(); print(i['kernel_path']); print(i['kernel_path_reason'])"])
    assert result.returncode == 0, result.stderr
    path, reason = result.stdout.splitlines()
    assert reason.startswith(f"probe: {path} is the best path")
    for faster in FASTER[path]:
        if faster in core.info()["kernel_paths_compiled"]:
            assert f"{faster}: the CPU lacks" in reason, reason


def test_probe_features_support_the_chosen_path():
    features, path = core.info()["cpu_features"], core.info()["kernel_path"]
    assert features["sse2"] or path == "generic"
    if path in ("avx2", "avx512"):
        assert features["avx"] and features["avx2"] and features["fma"]
    if path == "avx512":
        assert all(features[f] for f in ("avx512f", "avx512vl", "avx512bw", "avx512dq"))


def test_idle_pool_sleeps(two_threads):
    """After a parallel kernel the workers spin briefly, then sleep: no CPU taken from other pools."""
    a, b = operands()
    for _ in range(3):
        core._gemm(a, b)
    time.sleep(0.05)  # past the spin (200 us)
    cpu, wall = time.process_time(), time.perf_counter()
    time.sleep(0.3)
    used = time.process_time() - cpu
    assert used < 0.05, f"the process used {used:.3f} s of CPU in {time.perf_counter() - wall:.3f} s asleep"


def test_runs_beside_numpys_pool(two_threads):
    """Our GEMM in one Python thread while NumPy's BLAS runs in another: both finish, both right."""
    a, b = operands(300)
    expected = a @ b
    errors = []

    def numpy_products():
        try:
            for _ in range(3):
                np.testing.assert_allclose(a @ b, expected, rtol=1e-12)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    worker = threading.Thread(target=numpy_products)
    worker.start()
    for _ in range(3):
        np.testing.assert_allclose(core._gemm(a, b), expected, rtol=1e-10, atol=1e-10)
    worker.join(timeout=120)
    assert not worker.is_alive() and not errors, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_child_forked_during_a_kernel_runs_kernels(two_threads):
    """Fork while another thread is inside a parallel region: the child starts its own workers."""
    a, b = operands()
    expected = a @ b
    x = np.random.default_rng(1).standard_normal(1 << 20)
    stop, running = threading.Event(), threading.Event()

    def busy():
        while not stop.is_set():
            core._gemm(a, b)
            running.set()

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        running.wait(timeout=60)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads (Python >= 3.12)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through its exit code
            code = 1
            try:
                ok = np.allclose(core._gemm(a, b), expected, rtol=1e-10, atol=1e-10)
                out, mask = core.relu_forward(x)  # 1M elements: on the pool
                ok = ok and np.array_equal(mask, x <= 0) and np.array_equal(out, np.where(x <= 0, 0.0, x))
                code = 0 if ok else 1
            finally:
                os._exit(code)
    finally:
        stop.set()
        worker.join(timeout=120)
    deadline = time.monotonic() + 120
    while (done := os.waitpid(pid, os.WNOHANG))[0] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    if done[0] == 0:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung running kernels")
    assert os.WIFEXITED(done[1]) and os.WEXITSTATUS(done[1]) == 0


TORCH_SCRIPT = """
import os, sys
import numpy as np
order = sys.argv[1]
if order == "torch-first":
    import torch
    import bpfast._core as core
else:
    import bpfast._core as core
    import torch
rng = np.random.default_rng(0)
a, b = rng.standard_normal((300, 300)), rng.standard_normal((300, 300))
expected = a @ b
for _ in range(3):  # interleave the two pools
    assert np.allclose(torch.from_numpy(a) @ torch.from_numpy(b), expected)
    assert np.allclose(core._gemm(a, b), expected)
pid = os.fork()
if pid == 0:
    os._exit(0 if np.allclose(core._gemm(a, b), expected) else 1)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
print("ok", torch.get_num_threads(), core.get_num_threads())
"""


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
@pytest.mark.parametrize("order", ["torch-first", "bpfast-first"])
def test_beside_pytorch(order):
    """Imported before or after PyTorch, the kernels run between PyTorch's, and in a forked child."""
    result = run_python(["-W", "ignore::DeprecationWarning", "-c", TORCH_SCRIPT, order])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("ok")
