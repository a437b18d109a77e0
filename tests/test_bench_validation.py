"""bench/run.py's check of a variant against the reference, before it is timed, and the state it is
timed in (a training step's samples start from the validated weights)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
pytestmark = pytest.mark.skipif(not (BENCH / "run.py").is_file(), reason="bench/ is not beside the tests (not a checkout)")


@pytest.fixture(scope="module")
def bench_modules():
    sys.path.insert(0, str(BENCH))
    try:
        import _peer
        import run

        yield run, _peer
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def compare(bench_modules):
    return bench_modules[0].compare


def test_every_output_of_the_reference_is_required_unless_omitted(compare):
    expected = {"stepW1": np.ones(3), "loss": np.array(2.0)}
    assert compare({"stepW1": np.ones(3)}, expected, "float64")[1] == "no loss to compare"
    assert compare({"stepW1": np.ones(3)}, expected, "float64", omits=("loss",)) == (0.0, None)
    assert "has no reference" in compare({**expected, "dW1": np.ones(3)}, expected, "float64")[1]


def test_gemm_outputs_are_judged_against_their_largest_value(compare):
    expected = {"out": np.array([1.0, 1e-6])}
    off_in_small = {"out": np.array([1.0, 1e-6 + 5e-11])}  # 5% of a small value, 5e-11 of the largest
    assert compare(off_in_small, expected, "float64")[1] is None
    off = {"out": np.array([1.0 + 2e-9, 1e-6])}
    assert "off by 2.00e-09 (relative to its largest value" in compare(off, expected, "float64")[1]


def test_elementwise_outputs_are_judged_value_by_value(compare):
    p = np.array([0.9, 0.099, 0.001], np.float32)
    small_off = p * np.array([1, 1, 1.01], np.float32)  # the smallest probability 1% too large
    err, problem = compare({"y": small_off}, {"y": p}, "float32", floor=1e-9)
    assert problem and "relative to each value" in problem and err == pytest.approx(0.01, rel=1e-3)
    assert compare({"y": p * np.float32(1 + 2e-7)}, {"y": p}, "float32", floor=1e-9)[1] is None
    zeros = np.array([1.0, 0.0], np.float32)  # underflowed values: a floor, not a division by 0
    assert compare({"y": zeros + np.array([0, 1e-45], np.float32)}, {"y": zeros}, "float32", floor=1e-9)[1] is None


class Counter:
    """A stand-in for a training step: each call moves its state on, ``reset`` puts it back."""

    def __init__(self):
        self.state, self.seen = 0, []

    def step(self):
        self.seen.append(self.state)
        self.state += 1

    def reset(self):
        self.state = 0


def test_each_local_sample_starts_from_the_validated_state(bench_modules):
    run, _ = bench_modules
    model = Counter()
    variant = run.local("counter", model.step, lambda: {}, model.reset)
    for _ in range(3):
        variant.run(4, 0.0)
    assert model.seen == [0, 1, 2, 3] * 3  # without the reset: 0 ... 11


def test_each_peer_sample_starts_from_the_validated_state(bench_modules, monkeypatch, capsys):
    import io
    import json

    _, peer = bench_modules
    model = Counter()
    setup = {"cmd": "setup", "kind": "step", "npz": "unused.npz"}  # np.load is stubbed out
    requests = [setup, *[{"cmd": "time", "inner": 4, "warm_s": 0}] * 3, {"cmd": "quit"}]
    monkeypatch.setattr(peer.np, "load", lambda path: _NoArrays())
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in requests)))
    peer.serve(lambda: {"name": "counter"}, {"step": lambda arrays, lr: model})
    answers = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert all("error" not in a for a in answers), answers
    assert model.seen == [0, 1, 2, 3] * 3


class _NoArrays(dict):
    files = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
