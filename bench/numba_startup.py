"""The Numba backend's start-up cost: first-call (compile) time and warm time of one
TwoLayerNet SGD step (config A: 784-50-10, batch 100, float32 data, float64 weights).

Each measurement runs in a fresh process: with an empty Numba cache (the first run after
install, everything compiled), then again with that cache warm (every later process).
Prints a markdown table. The processes run in bench/run.py's environment for its children
(clean_environment: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, its MALLOC_* settings).

    python bench/numba_startup.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from run import clean_environment  # bench/run.py's environment for its children

CHILD = r"""
import json, time
t0 = time.perf_counter()
import numpy as np
import bpfast
from bpfast.nets import TwoLayerNet
bpfast.set_backend("numba")
t_import = time.perf_counter() - t0
rng = np.random.default_rng(0)
x = rng.random((100, 784), dtype=np.float32)
t = rng.integers(0, 10, 100)
np.random.seed(0)
net = TwoLayerNet(784, 50, 10)
def step():
    grads = net.gradient(x, t)
    for k in grads:
        net.params[k] -= 0.1 * grads[k]
t1 = time.perf_counter(); step(); first = time.perf_counter() - t1
warm = []
for _ in range(200):
    t1 = time.perf_counter(); step(); warm.append(time.perf_counter() - t1)
print(json.dumps({"import_s": t_import, "first_step_s": first, "warm_step_median_s": float(np.median(warm)),
                  "warm_step_min_s": float(np.min(warm))}))
"""


def run(env):
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    env, notes = clean_environment(os.environ)
    print("each row is a fresh process, in bench/run.py's environment for its children:")
    for note in notes:
        print(f"  - {note}")
    with tempfile.TemporaryDirectory() as cache:
        env["NUMBA_CACHE_DIR"] = cache
        rows = [("cold Numba cache (first process)", run(env)), ("warm Numba cache (later processes)", run(env))]
    print("\n| process | import + set_backend | first step (compile) | warm step median | warm step min |")
    print("|---|---:|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['import_s']:.2f} s | {r['first_step_s']:.2f} s | "
              f"{r['warm_step_median_s'] * 1e6:.0f} µs | {r['warm_step_min_s'] * 1e6:.0f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
