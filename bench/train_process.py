"""Whole-process race: `bpfast train` against the book's own NumPy training script.

Both train the book's TwoLayerNet with train_neuralnet.py's settings on the same MNIST files,
start to exit (interpreter start, imports, loading, 10,000 steps, the per-epoch
evaluations). The two processes alternate, ROUNDS times each; the report gives min and
median wall time and their ratio. Both run in bench/run.py's environment for its children
(clean_environment: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, its MALLOC_* settings).
The loops differ where DIFFERENCES says; neither is changed to match the other.

    python bench/train_process.py [--data ../shared/data/mnist] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run import clean_environment  # bench/run.py's environment for its children

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mnist"
DIFFERENCES = (
    "not the same work: the book's loop (book_train.py, as train_neuralnet.py) recomputes the batch loss\n"
    "after each update, `bpfast train` reuses the step's; the book evaluates 17 times, bpfast 18 (also after the last step)"
)


def timed(cmd, env):
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed:\n{proc.stderr[-2000:]}")
    return wall, proc.stdout


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    bpfast_cmd = shutil.which("bpfast")
    if bpfast_cmd is None:
        raise SystemExit("the bpfast console script is not installed (pip install .)")
    env, notes = clean_environment(os.environ)
    print("both processes run in bench/run.py's environment for its children:")
    for note in notes:
        print(f"  - {note}")
    print(DIFFERENCES)
    with tempfile.TemporaryDirectory() as tmp:
        pickle_path = os.path.join(tmp, "mnist.pkl")
        json_path = os.path.join(tmp, "bpfast.json")
        book = [sys.executable, str(HERE / "book_train.py"), "--data", str(args.data), "--pickle", pickle_path]
        ours = [bpfast_cmd, "train", "--data", str(args.data), "--json", json_path]
        timed(book + ["--iters", "1"], env)  # the book's first run writes its pickle
        timed(ours + ["--iters", "1"], env)  # bpfast's first run writes its parsed cache
        walls = {"book": [], "bpfast": []}
        accs = {}
        for r in range(args.rounds):
            wall, out = timed(book, env)
            walls["book"].append(wall)
            accs["book"] = json.loads(out.strip().splitlines()[-1])["test_acc"]
            wall, _ = timed(ours, env)
            walls["bpfast"].append(wall)
            with open(json_path) as f:
                summary = json.load(f)
            accs["bpfast"] = summary["test_acc"]
            print(f"round {r + 1}: book {walls['book'][-1]:.2f} s, bpfast {wall:.2f} s ({summary['backend']})")
    rows = []
    for name in ("book", "bpfast"):
        rows.append((name, min(walls[name]), statistics.median(walls[name]), accs[name]))
    ratio_min = rows[0][1] / rows[1][1]
    ratio_med = rows[0][2] / rows[1][2]
    print("\n| process | min wall (s) | median wall (s) | final test acc |\n|---|---:|---:|---:|")
    for name, lo, med, acc in rows:
        print(f"| {name} | {lo:.2f} | {med:.2f} | {acc:.4f} |")
    print(f"\nbpfast train is {ratio_med:.2f}x faster by median, {ratio_min:.2f}x by min "
          f"(book's train_neuralnet.py loop on NumPy vs `bpfast train`, {args.rounds} alternating rounds)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
