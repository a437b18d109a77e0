"""``bpfast.info()``: what this installation runs on."""

from __future__ import annotations

import os

from bpfast import _backend


def info() -> dict:
    """Version, backends available and in use, and the compiled core's CPU path and build."""
    import bpfast

    report = {
        "version": bpfast.__version__,
        "backend": _backend.get_backend(),
        "backends_available": _backend.backends(),
        "env": {k: v for k, v in os.environ.items() if k.startswith("BPFAST_")},
    }
    try:
        from bpfast import _core
    except ImportError as exc:
        report["compiled_core"] = f"missing ({exc})"
    else:
        report["compiled_core"] = "loaded"
        report.update(_core.info())
    return report
