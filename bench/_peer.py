"""The line protocol between bench/run.py and a peer worker (PyTorch, JAX) in its own process.

Each peer runs in a process of its own: their thread pools keep spinning after a call and
would slow whatever the harness times next on a two-core machine. The harness still times
the peer interleaved with the in-process variants, one sample per round, through this
protocol: one JSON object per line on stdin, one answer per line on stdout.

    -> {"cmd": "setup", "kind": k, "npz": path, "lr": 0.1}
                                                  kind "step": load x, t, W1, b1, W2, b2 (initial
                                                  weights); kind "softmax": load x; kind "gemm"
                                                  (PyTorch only): load a, b, trans_a, trans_b
    <- {"ok": true}
    -> {"cmd": "validate", "out": path}           one call from the initial state; save its
    <- {"ok": true}                               outputs to out (.npz), then reset
    -> {"cmd": "time", "inner": k, "warm_s": w}   k steps back to back, timed in the worker
                                                  (after a reset to the initial state, when the
                                                  model has one, and w seconds of untimed steps)
    <- {"seconds": s}
    -> {"cmd": "quit"}

The worker's first line is {"ready": true, "name": ..., "version": ..., "threads": ...}, or
{"skip": reason} when its library is not installed.
"""

from __future__ import annotations

import gc
import json
import sys
import time
import traceback

import numpy as np
from _quiet import warm_up

PARAM_KEYS = ("W1", "b1", "W2", "b2")


def _send(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def serve(load_library, models) -> None:
    """Answer the harness's commands.

    ``load_library()`` returns a dict (name, version, threads) or raises ImportError.
    ``models[kind](arrays, lr)`` returns an object with ``validate() -> dict of numpy arrays``
    (for a step: grads ``dW1``... and new params ``W1``...; the model is reset afterwards; for
    softmax: ``y``; for a product: ``c``) and ``step()`` (one call, finished when it returns); a
    model with state (the step) also has ``reset()``, called before each timed sample.
    """
    try:
        about = load_library()
    except ImportError as exc:
        _send({"skip": f"not installed ({exc})"})
        return
    _send({"ready": True, **about})
    model = None
    for line in sys.stdin:
        request = json.loads(line)
        try:
            cmd = request["cmd"]
            if cmd == "quit":
                return
            if cmd == "setup":
                with np.load(request["npz"]) as data:
                    arrays = {key: data[key] for key in data.files}
                model = models[request.get("kind", "step")](arrays, float(request.get("lr", 0.0)))
                _send({"ok": True})
            elif cmd == "validate":
                np.savez(request["out"], **model.validate())
                _send({"ok": True})
            elif cmd == "time":
                inner = int(request["inner"])
                step = model.step
                if hasattr(model, "reset"):
                    model.reset()  # time the state that was validated, not weights trained for thousands of steps
                gc.disable()
                if request.get("warm_s"):
                    warm_up(step, float(request["warm_s"]))
                start = time.perf_counter()
                for _ in range(inner):
                    step()
                seconds = time.perf_counter() - start
                gc.enable()
                _send({"seconds": seconds})
            else:
                _send({"error": f"unknown command {cmd!r}"})
        except Exception as exc:  # report it to the harness, which skips this peer
            _send({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
