"""bench/run.py's check of a variant against the reference, before it is timed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
pytestmark = pytest.mark.skipif(not (BENCH / "run.py").is_file(), reason="bench/ is not beside the tests (not a checkout)")


@pytest.fixture(scope="module")
def compare():
    sys.path.insert(0, str(BENCH))
    try:
        import run

        yield run.compare
    finally:
        sys.path.remove(str(BENCH))


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
