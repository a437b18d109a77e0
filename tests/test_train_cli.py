"""`bpfast train` end to end: a small generated dataset, --json, --plot, --save, the fallbacks,
and the book's accuracy on real MNIST when the project's copy is beside the checkout."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from bpfast import cli

from conftest import MNIST_DIR, console_script

NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


def learnable_images(n, rng):
    """Class c lights up rows 2c..2c+2 of a 28x28 image, over noise: separable, not trivial."""
    labels = rng.integers(0, 10, n).astype(np.uint8)
    images = rng.integers(0, 90, (n, 28, 28)).astype(np.uint8)
    for i, c in enumerate(labels):
        images[i, 2 * c : 2 * c + 3, 4:24] = rng.integers(150, 256, (3, 20))
    return images.reshape(n, 784), labels


def write_idx(folder, n_train=600, n_test=200, seed=0):
    rng = np.random.default_rng(seed)
    arrays = {}
    arrays["train_images"], arrays["train_labels"] = learnable_images(n_train, rng)
    arrays["test_images"], arrays["test_labels"] = learnable_images(n_test, rng)
    folder.mkdir(parents=True, exist_ok=True)
    for key, array in arrays.items():
        if "images" in key:
            header = np.array([2051, len(array), 28, 28], ">u4").tobytes()
        else:
            header = np.array([2049, len(array)], ">u4").tobytes()
        (folder / NAMES[key]).write_bytes(gzip.compress(header + array.tobytes(), mtime=0))
    return folder


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    """A private cache and mirrors that refuse: these tests never reach the internet."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("BPFAST_DATA", str(tmp_path / "nowhere"))
    dead = f"http://127.0.0.1:{closed_port()}/"
    monkeypatch.setenv("BPFAST_MNIST_MIRRORS", dead)
    monkeypatch.setenv("BPFAST_FASHION_MNIST_MIRRORS", dead)


def test_train_writes_json_plot_and_parameters(tmp_path, capsys):
    data = write_idx(tmp_path / "data")
    out_json, out_png, out_npz = tmp_path / "run.json", tmp_path / "curves.png", tmp_path / "params.npz"
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the demo extra)")
    code = cli.main(["train", "--data", str(data), "--iters", "400", "--batch-size", "20", "--hidden", "30",
                     "--seed", "0", "--json", str(out_json), "--plot", str(out_png), "--save", str(out_npz),
                     "--no-progress"])
    assert code == 0
    summary = json.loads(out_json.read_text())
    for key in ("test_acc", "train_acc", "wall_s", "iters", "backend", "steps_per_s"):
        assert key in summary
    assert summary["iters"] == 400 and summary["dataset"] == "mnist"
    assert summary["test_acc"] > 0.9, summary
    assert summary["history"]["eval_iters"][0] == 0 and summary["history"]["eval_iters"][-1] == 400
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    params = np.load(out_npz)
    assert {k: params[k].shape for k in params.files} == {"W1": (784, 30), "b1": (30,), "W2": (30, 10), "b2": (10,)}
    printed = capsys.readouterr().out
    assert "iter      0" in printed and "done: train acc" in printed


@pytest.mark.parametrize("option, value", [("--batch-size", "0"), ("--hidden", "0"), ("--iters", "0"), ("--epochs", "0"), ("--batch-size", "ten")])
def test_sizes_out_of_range_are_refused_by_the_parser(capsys, option, value):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and ("must be at least" in err or "invalid integer value" in err)


@pytest.mark.parametrize("option, value, pattern", [
    ("--seed", "-1", "must be at least 0, got -1"),
    ("--seed", str(2**32), f"must be at most {2**32 - 1}"),
    ("--iters", str(10**10), "must be at most 1000000000"),
    ("--epochs", str(10**10), "must be at most 1000000000"),
    ("--lr", "nan", "must be a finite number, got nan"),
    ("--lr", "inf", "must be a finite number, got inf"),
])
def test_values_that_cannot_run_are_refused_by_the_parser(capsys, option, value, pattern):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert option in err and pattern in err


@pytest.mark.parametrize("extra, pattern", [
    (["--json", "{missing}/run.json"], r"--json .*run.json: the folder .*missing does not exist"),
    (["--save", "{missing}/params.npz"], r"--save .*params.npz: the folder .*missing does not exist"),
    (["--plot", "{tmp}/curves.xyz"], r"--plot .*curves.xyz: matplotlib writes .*png.*, not xyz"),
    (["--dataset", "digits", "--data", "{tmp}"], r"--data is for MNIST and Fashion-MNIST"),
    (["--epochs", "1000000000", "--batch-size", "1"], r"100000000000 iterations; this command runs at most 1000000000"),
])
def test_what_would_fail_later_ends_the_command_first(tmp_path, capsys, extra, pattern):
    """Refused before any training (a bad output path used to fail after it, losing the run)."""
    if "--plot" in extra:
        pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the demo extra)")
    data = write_idx(tmp_path / "data", n_train=100, n_test=50)
    args = [a.format(missing=tmp_path / "missing", tmp=tmp_path) for a in extra]
    if "--dataset" not in extra:
        args += ["--data", str(data)]
    if "--epochs" not in extra:
        args += ["--iters", "5"]
    with pytest.raises(SystemExit, match=pattern):
        cli.main(["train", "--no-progress", *args])
    assert "iter " not in capsys.readouterr().out


def test_a_net_too_large_for_memory_is_a_message():
    pytest.importorskip("sklearn", reason="the digits come with scikit-learn")
    with pytest.raises(SystemExit, match=r"bpfast train: out of memory \(.*\); try a smaller --batch-size or --hidden"):
        cli.main(["train", "--dataset", "digits", "--hidden", str(10**12), "--no-progress"])


def test_epochs_set_the_number_of_iterations(tmp_path):
    data = write_idx(tmp_path / "data", n_train=300)
    out_json = tmp_path / "run.json"
    cli.main(["train", "--data", str(data), "--epochs", "2", "--batch-size", "50", "--seed", "1",
              "--json", str(out_json), "--no-progress", "--dtype", "float32"])
    summary = json.loads(out_json.read_text())
    assert summary["iters"] == 12 and summary["dtype"] == "float32"


def test_same_seed_same_result(tmp_path):
    """--seed decides the run: the same seed twice gives the same history, another seed another."""
    data = write_idx(tmp_path / "data")
    results = []
    for run, seed in enumerate(["3", "3", "4"]):
        out = tmp_path / f"run{run}.json"
        cli.main(["train", "--data", str(data), "--iters", "50", "--batch-size", "10", "--seed", seed,
                  "--json", str(out), "--no-progress"])
        results.append(json.loads(out.read_text()))
    assert results[0]["final_loss"] == results[1]["final_loss"]
    assert results[0]["history"] == results[1]["history"]
    assert results[2]["final_loss"] != results[0]["final_loss"]
    assert results[2]["history"] != results[0]["history"]


def test_missing_data_falls_back_to_scikit_learn_digits(tmp_path, capsys):
    pytest.importorskip("sklearn", reason="the digits fallback needs scikit-learn (the demo extra)")
    out_json = tmp_path / "run.json"
    code = cli.main(["train", "--iters", "300", "--batch-size", "50", "--seed", "0", "--json", str(out_json),
                     "--no-progress"])
    assert code == 0
    summary = json.loads(out_json.read_text())
    assert "digits" in summary["dataset"] and "fallback" in summary["dataset"]
    assert summary["test_acc"] > 0.8
    err = capsys.readouterr().err
    assert "MNIST is not available" in err and "NOT MNIST" in err
    assert "bpfast train --data DIR" in err  # the command line's own way, beside the API's


def test_the_fallback_prints_about_twenty_accuracy_lines(capsys):
    """Digits has 14 steps an epoch: the book's line per epoch would be 215 lines here."""
    pytest.importorskip("sklearn", reason="the digits fallback needs scikit-learn (the demo extra)")
    assert cli.main(["train", "--iters", "3000", "--seed", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("iter ")]
    assert 15 <= len(lines) <= cli.EVAL_LINES + 1
    assert lines[0].split()[1] == "0" and lines[-1].split()[1] == "3000"
    assert "accuracy every 11 epochs of 14 steps" in out


@pytest.mark.parametrize("asked", [["--data", "{empty}"], ["--data", "{partial}"], ["--data", "{missing}"],
                                   ["--data", "{partial}/train-images-idx3-ubyte.gz"],
                                   ["--dataset", "mnist"], ["--dataset", "fashion-mnist"]])
def test_data_asked_for_by_name_is_never_replaced(tmp_path, capsys, asked):
    """An explicit --data or --dataset that cannot be found ends the command (exit 1) instead of
    training on the digits: a script checking the exit code would not see the substitution. A
    --data folder is not replaced by MNIST found elsewhere either (here in the user cache)."""
    empty, partial = tmp_path / "empty", tmp_path / "partial"
    empty.mkdir()
    write_idx(partial, n_train=100, n_test=50)
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    if asked[0] == "--data":
        write_idx(tmp_path / "cache" / "bpfast" / "mnist", n_train=100, n_test=50)
    paths = {"empty": empty, "partial": partial, "missing": tmp_path / "missing"}
    argv = ["train", "--iters", "5", "--no-progress", *(a.format(**paths) for a in asked)]
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    message = str(raised.value.code)
    assert "is not available" in message and "bpfast train --data DIR" in message
    assert "iter " not in capsys.readouterr().out


def test_missing_data_without_scikit_learn_says_what_to_do(tmp_path, monkeypatch):
    for name in ("sklearn", "sklearn.datasets"):
        monkeypatch.setitem(sys.modules, name, None)  # importing it now raises ImportError
    with pytest.raises(SystemExit, match="no data to train on"):
        cli.main(["train", "--iters", "10", "--no-progress"])


def test_console_script_runs_the_main_job(tmp_path):
    data = write_idx(tmp_path / "data", n_train=100, n_test=50)
    out_json = tmp_path / "run.json"
    proc = subprocess.run([console_script(), "train", "--data", str(data), "--iters", "20", "--batch-size", "20",
                           "--json", str(out_json), "--no-progress"],
                          capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out_json.read_text())["iters"] == 20
    assert "done: train acc" in proc.stdout


@pytest.mark.skipif(not MNIST_DIR.exists(), reason=f"MNIST not found at {MNIST_DIR} (the shared data beside the checkout)")
def test_book_settings_reach_the_book_accuracy_on_mnist(tmp_path):
    """train_neuralnet.py's settings (784-50-10, lr 0.1, batch 100, 10,000 steps): about 97%."""
    out_json = tmp_path / "run.json"
    code = cli.main(["train", "--data", str(MNIST_DIR), "--seed", "0", "--json", str(out_json), "--no-progress"])
    assert code == 0
    summary = json.loads(out_json.read_text())
    assert summary["iters"] == 10_000 and len(summary["history"]["eval_iters"]) == 18
    assert summary["test_acc"] >= 0.97, summary
