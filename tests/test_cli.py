"""``python -m bpfast info`` and the ``bpfast`` console script report the version and the backend."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import BACKENDS, available_backends, console_script, python_env, run_python

import bpfast


def check_json_report(stdout, backend):
    report = json.loads(stdout)
    assert report["version"] == bpfast.__version__
    assert report["backend"] == backend
    assert report["backends_available"] == available_backends()
    assert "compiled_core" in report
    return report


def test_info_text():
    result = run_python(["-m", "bpfast", "info"])
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(None, 1) for line in result.stdout.splitlines() if line.strip())
    assert lines["version"].strip() == bpfast.__version__
    assert lines["backend"].strip() == available_backends()[0]
    assert lines["backends_available"].strip() == ", ".join(available_backends())
    assert result.stderr == ""


def test_info_json():
    result = run_python(["-m", "bpfast", "info", "--json"])
    assert result.returncode == 0, result.stderr
    check_json_report(result.stdout, available_backends()[0])


@pytest.mark.parametrize("name", BACKENDS)
def test_info_reports_the_chosen_backend(name):
    if name not in available_backends():
        pytest.skip(f"backend {name!r} is not available here")
    result = run_python(["-m", "bpfast", "info", "--json"], BPFAST_BACKEND=name)
    assert result.returncode == 0, result.stderr
    report = check_json_report(result.stdout, name)
    assert report["env"] == {"BPFAST_BACKEND": name}


def test_info_in_process_matches():
    report = bpfast.info()
    assert report["version"] == bpfast.__version__
    assert report["backend"] == bpfast.get_backend()
    with bpfast.use_backend("numpy"):
        assert bpfast.info()["backend"] == "numpy"
    json.dumps(report, default=str)  # the CLI prints it as JSON


def test_usage_errors_exit_2():
    for args in (["-m", "bpfast"], ["-m", "bpfast", "no-such-command"]):
        result = run_python(args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert "usage: bpfast" in result.stderr


def test_console_script():
    """The installed ``bpfast`` script (which runs ``cli.main`` with argv[0] its own path)."""
    exe = console_script()
    text = subprocess.run([exe, "info"], env=python_env(), capture_output=True, text=True, timeout=120)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines()[0].split() == ["version", bpfast.__version__]
    as_json = subprocess.run([exe, "info", "--json"], env=python_env(), capture_output=True, text=True, timeout=120)
    assert as_json.returncode == 0, as_json.stderr
    check_json_report(as_json.stdout, available_backends()[0])


def test_bench_lists_its_cases_and_passes_options_through():
    """``bpfast bench`` runs the benchmark installed with the package (or this checkout's): its own
    options reach it, and an option of its own that is wrong is its error, not the CLI's."""
    listed = run_python(["-m", "bpfast", "bench", "--list"])
    assert listed.returncode == 0, listed.stderr
    ids = [line.split()[0] for line in listed.stdout.splitlines() if line.startswith(("step-", "loop-"))]
    assert {"step-A", "step-B", "step-C", "step-D", "loop-A"} <= set(ids), listed.stdout
    assert "OPENBLAS_CORETYPE" in listed.stdout  # it says what it did to the environment
    wrong = run_python(["-m", "bpfast", "bench", "--rounds", "many"])
    assert wrong.returncode == 2 and "--rounds" in wrong.stderr, wrong.stderr
    for rounds in ("0", "-1"):  # (0 ran the default 25; -1 wrote an empty table)
        none = run_python(["-m", "bpfast", "bench", f"--rounds={rounds}"])
        assert none.returncode == 2 and f"--rounds: must be at least 1, got {rounds}" in none.stderr, none.stderr


def test_unknown_options_of_other_commands_are_usage_errors():
    result = run_python(["-m", "bpfast", "info", "--no-such-option"])
    assert result.returncode == 2 and "unrecognized arguments: --no-such-option" in result.stderr
