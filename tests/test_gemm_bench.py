"""bench/gemm_bench.py: every variant checked against a float64 product, then timed (or not) and reported per shape."""

from __future__ import annotations

import importlib
import os
from pathlib import Path

import pytest
from conftest import run_python

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gemm_bench.py"


@pytest.mark.skipif(not SCRIPT.is_file(), reason="bench/ is not beside the tests (not a checkout)")
def test_gemm_bench_reports_every_shape_and_dtype():
    pytest.importorskip("bpfast._core", reason="the GEMM benchmark times the compiled core")
    # not the tiny shapes: their GFLOP/s print as 0.0 where the core is slow (a sanitized build)
    shapes = ["small 32x64x32", "dW2 50x100x10"]
    result = run_python([str(SCRIPT), "--shapes", *shapes, "--rounds", "2", "--no-peers"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "torch.mm: --no-peers" in result.stdout
    rows = {}
    for line in result.stdout.splitlines():
        for shape in shapes:
            if line.startswith(shape + " "):
                # dtype, GFLOP/s min and median of bpfast, numpy, torch, then the two ratios, %peak
                fields = line[len(shape) :].replace("(", " ").replace(")", " ").split()
                rows[(shape, fields[0])] = fields[1:]
    assert set(rows) == {(s, d) for s in shapes for d in ("float32", "float64", "mixed")}, result.stdout
    for fields in rows.values():
        bpfast, numpy = [float(x) for x in fields[0:2]], [float(x) for x in fields[2:4]]
        assert min(bpfast) > 0 and min(numpy) > 0, fields
        assert fields[4] == "-" and fields[7] == "-", fields  # no torch.mm without the peer
        assert float(fields[5]) > 0 and fields[8].endswith("%"), fields


CONCURRENCY = SCRIPT.parent / "gemm_concurrency.py"


@pytest.mark.skipif(not CONCURRENCY.is_file(), reason="bench/ is not beside the tests (not a checkout)")
def test_gemm_concurrency_reports_the_three_configurations():
    pytest.importorskip("bpfast._core", reason="the benchmark times the compiled core")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs two cores")
    args = ["--shape", "96", "80", "64", "--rounds", "2", "--seconds", "0.05"]
    for dtype in ("float32", "float64"):
        result = run_python([str(CONCURRENCY), *args, "--dtype", dtype])
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        assert "96x64 · 64x80 " + dtype in out, out
        summary = out.split("median over rounds")[1].splitlines()[1:]
        names = ["1 thread, alone", "1 thread each, 2 processes side by side", "2 threads, one process"]
        assert [line.split(":")[0].strip() for line in summary] == names, out
        for line in summary:
            assert float(line.split(":")[1].split()[0]) > 0, line
        assert out.count("round 2, 1 thread each, 2 processes side by side: ") == 1, out


@pytest.mark.skipif(not SCRIPT.is_file(), reason="bench/ is not beside the tests (not a checkout)")
def test_gemm_bench_does_not_time_a_variant_that_fails_validation(monkeypatch, capsys):
    core = pytest.importorskip("bpfast._core", reason="the GEMM benchmark times the compiled core")
    monkeypatch.setenv("_BPFAST_GEMM_BENCH", "1")  # in this process: no re-execution
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    gemm_bench = importlib.import_module("gemm_bench")
    gemm, calls = core._gemm, []

    def off_by_a_thousandth(*args):
        calls.append(args)
        return gemm(*args) * 1.001

    monkeypatch.setattr(core, "_gemm", off_by_a_thousandth)
    shape = "small 32x64x32"
    status = gemm_bench.main(["--shapes", shape, "--dtypes", "float32", "float64", "--rounds", "2", "--no-peers"])
    out = capsys.readouterr().out
    assert status == 1, out
    assert len(calls) == 2, out  # the check's call, one per dtype, and none timed
    for dtype in ("float32", "float64"):
        row = next(line for line in out.splitlines() if line.startswith(shape + " ") and dtype in line)
        fields = row[len(shape) :].replace("(", " ").replace(")", " ").split()
        assert fields[:2] == [dtype, "failed"] and float(fields[2]) > 0, row  # bpfast failed, NumPy timed
        assert f"FAILED, not timed: {shape} {dtype} bpfast: off by" in out, out
