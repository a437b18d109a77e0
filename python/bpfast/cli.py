"""The ``bpfast`` command (also ``python -m bpfast``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path


def _print_info(args: argparse.Namespace) -> int:
    import bpfast

    report = bpfast.info()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    width = max(len(key) for key in report)
    for key, value in report.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
        elif isinstance(value, (list, tuple)):
            value = ", ".join(str(v) for v in value) or "-"
        print(f"{key:<{width}}  {value}")
    return 0


#: At most about this many accuracy lines from `bpfast train` (MNIST's 10,000 steps print 18).
EVAL_LINES = 20

#: The most SGD steps `bpfast train` runs (--iters, or --epochs converted): days of training.
MAX_ITERS = 10**9


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse --json/--save/--plot paths that could not be written once training is over."""
    for option, path in (("--json", args.json), ("--save", args.save), ("--plot", args.plot)):
        if path is None:
            continue
        folder = Path(path).expanduser().resolve().parent
        if not folder.is_dir():
            raise SystemExit(f"bpfast train: {option} {path}: the folder {folder} does not exist")
    if args.plot is not None:
        suffix = Path(args.plot).suffix.lower().lstrip(".")
        try:
            from matplotlib.backend_bases import FigureCanvasBase
        except ImportError:
            raise SystemExit("bpfast train: --plot needs matplotlib (pip install 'bpfast[demo]')") from None
        formats = FigureCanvasBase.get_supported_filetypes()
        if suffix not in formats:
            raise SystemExit(f"bpfast train: --plot {args.plot}: matplotlib writes {', '.join(sorted(formats))}, "
                             f"not {suffix or 'a file without a suffix'}")


def _load_data(args: argparse.Namespace):
    """(train, test, description) for --dataset. With neither --dataset nor --data given and no
    MNIST to be found, scikit-learn's digits stand in, so that the first run works offline; a
    dataset or folder asked for by name is never replaced: its absence ends the command."""
    from bpfast import datasets

    dataset = args.dataset or "mnist"
    if dataset == "digits":
        if args.data is not None:
            raise SystemExit("bpfast train: --data is for MNIST and Fashion-MNIST; the digits come with scikit-learn")
        return (*_digits(args.seed), "scikit-learn 8x8 digits")
    try:
        if args.data is not None:  # the folder asked for, or nothing (load_mnist would look elsewhere next)
            datasets._require_folder(dataset, args.data)
        train, test = datasets.load_mnist(normalize=True, flatten=True, dataset=dataset, data_dir=args.data)
        return train, test, dataset
    except datasets.DatasetError as exc:
        hint = ("(from the command line: bpfast train --data DIR, or BPFAST_DATA=DIR bpfast train; "
                "--dataset digits trains on scikit-learn's bundled 8x8 digits)")
        if args.dataset is not None or args.data is not None:
            raise SystemExit(f"bpfast train: {exc}\n{hint}") from None
        print(f"bpfast train: {exc}\n{hint}", file=sys.stderr)
    try:
        train, test = _digits(args.seed)
    except ImportError:
        raise SystemExit("bpfast train: no data to train on (install the demo extra, pip install 'bpfast[demo]', "
                         "to fall back to scikit-learn's digits)") from None
    print("bpfast train: training on scikit-learn's bundled 8x8 digits instead (1,797 images, NOT MNIST)",
          file=sys.stderr)
    return train, test, "scikit-learn 8x8 digits (fallback)"


def _digits(seed):
    """scikit-learn's 8x8 digits, pixels scaled to [0, 1] as float32, split 80/20."""
    from sklearn.datasets import load_digits

    import numpy as np

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    t = digits.target.astype(np.uint8)
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * 0.8)
    return (x[order[:cut]], t[order[:cut]]), (x[order[cut:]], t[order[cut:]])


def _train(args: argparse.Namespace) -> int:
    import time

    import numpy as np

    import bpfast
    from bpfast.nets import TwoLayerNet
    from bpfast.training import eval_steps, train

    started = time.perf_counter()
    if args.backend:
        bpfast.set_backend(args.backend)
    np.random.seed(args.seed)
    _check_outputs(args)  # before training, not after it
    (x_train, t_train), (x_test, t_test), source = _load_data(args)
    iters = args.iters if args.epochs is None else max(args.epochs * x_train.shape[0] // args.batch_size, 1)
    if iters > MAX_ITERS:
        raise SystemExit(f"bpfast train: {iters} iterations; this command runs at most {MAX_ITERS}")
    net = TwoLayerNet(x_train.shape[1], args.hidden, int(t_train.max()) + 1, dtype=args.dtype)
    print(f"bpfast train: {source}, {x_train.shape[0]} train / {x_test.shape[0]} test images, "
          f"net {x_train.shape[1]}-{args.hidden}-{net.params['W2'].shape[1]} {args.dtype}, "
          f"{iters} iterations of batch {args.batch_size}, lr {args.lr}, backend {bpfast.get_backend()}")

    bar = _progress_bar(iters, args.progress)
    say = bar.write if bar is not None else print

    def on_step(i, loss):
        if bar is not None:
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update(i - bar.n)

    # The book prints the accuracies each epoch: on a small set (digits: 14 steps an epoch) that
    # is hundreds of lines, so at most about EVAL_LINES of them are printed, evenly spaced.
    evaluations = eval_steps(iters, x_train.shape[0], args.batch_size)
    every = max(-(-len(evaluations) // EVAL_LINES), 1)
    shown = set(evaluations[::every] + evaluations[-1:])
    if every > 1:
        say(f"(accuracy every {every} epochs of {evaluations[1]} steps, and at the end)")

    def on_eval(i, train_acc, test_acc):
        if i in shown:
            say(f"iter {i:>6}  train acc {train_acc:.4f}  test acc {test_acc:.4f}")

    history = train(net, (x_train, t_train), (x_test, t_test), iters=iters, batch_size=args.batch_size,
                    lr=args.lr, on_step=on_step, on_eval=on_eval)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - started
    summary = {
        "dataset": source,
        "backend": bpfast.get_backend(),
        "dtype": args.dtype,
        "hidden": args.hidden,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "iters": iters,
        "train_acc": history.train_acc[-1] if history.train_acc else None,
        "test_acc": history.test_acc[-1] if history.test_acc else None,
        "final_loss": history.loss[-1] if history.loss else None,
        "train_s": history.wall_s,
        "wall_s": wall,
        "steps_per_s": iters / history.wall_s if history.wall_s else None,
        "history": {"eval_iters": history.eval_iters, "train_acc": history.train_acc, "test_acc": history.test_acc},
    }
    print(f"done: train acc {summary['train_acc']:.4f}, test acc {summary['test_acc']:.4f}, "
          f"{iters} steps in {history.wall_s:.2f} s ({summary['steps_per_s']:.0f} steps/s), "
          f"wall {wall:.2f} s, backend {summary['backend']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(summary, f, indent=2)
    if args.save:
        np.savez(args.save, **net.params)
    if args.plot:
        from bpfast.plotting import training_curves

        training_curves(history, title=f"bpfast train: {source}").savefig(args.plot, dpi=120)
        print(f"curves written to {args.plot}")
    return 0


def _progress_bar(total: int, wanted: bool):
    """A tqdm bar (tqdm.auto, respecting TQDM_* variables) when tqdm is installed and wanted."""
    if not wanted:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="step", desc="train")


def _bench_script() -> Path | None:
    """bench/run.py: installed with the package (bpfast/bench), else in this source checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "bench", here.parent.parent / "bench"):
        if (folder / "run.py").is_file():
            return folder / "run.py"
    return None


def _bench(args: argparse.Namespace) -> int:
    script = _bench_script()
    if script is None:
        print("bpfast bench: the benchmark scripts are not installed with this copy of bpfast; "
              "run bench/run.py from a clone of the source instead", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *args.bench_args])


def _at_least(least: int, most: int | None = None):
    """An argparse type: a whole number >= least (and <= most)."""

    def integer(text: str) -> int:
        value = int(text)  # a ValueError: argparse says "invalid integer value"
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {value}")
        return value

    return integer


def finite_float(text: str) -> float:
    """An argparse type: a finite number (a NaN or infinite rate trains to NaN)."""
    value = float(text)  # a ValueError: argparse says "invalid finite_float value"
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bpfast", description="Fast layers for 'Deep Learning from Scratch'.")
    commands = parser.add_subparsers(dest="command", required=True)
    info = commands.add_parser("info", help="version, backends, CPU path, threads, build flags")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(run=_print_info)

    train = commands.add_parser("train", help="train the book's TwoLayerNet on MNIST (train_neuralnet.py)")
    train.add_argument("--hidden", type=_at_least(1), default=50, help="hidden units (default 50)")
    train.add_argument("--lr", type=finite_float, default=0.1, help="learning rate (default 0.1)")
    train.add_argument("--batch-size", type=_at_least(1), default=100, help="mini-batch size (default 100)")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--iters", type=_at_least(1, MAX_ITERS), default=10_000, help="SGD steps (default 10000)")
    length.add_argument("--epochs", type=_at_least(1, MAX_ITERS), help="epochs instead of --iters")
    train.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="parameter dtype")
    train.add_argument("--backend", choices=("cpp", "numba", "numpy"), help="kernel backend (default: fastest)")
    train.add_argument("--seed", type=_at_least(0, 2**32 - 1), default=0,
                       help="seed of NumPy's global generator, which the book's loop draws from (default 0: "
                            "every run gives the same numbers; pass another to draw again)")
    train.add_argument("--dataset", choices=("mnist", "fashion-mnist", "digits"),
                       help="default mnist, or scikit-learn's digits when MNIST is nowhere to be found and "
                            "neither this nor --data is given")
    train.add_argument("--data", metavar="DIR", help="folder holding the four IDX .gz files")
    train.add_argument("--plot", metavar="FILE.png", help="write accuracy and loss curves")
    train.add_argument("--json", metavar="FILE", help="write a machine-readable summary")
    train.add_argument("--save", metavar="FILE.npz", help="save the trained parameters")
    train.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    train.set_defaults(run=_train)

    bench = commands.add_parser(
        "bench", add_help=False,
        help="time the training step and the kernels against the book's NumPy (and PyTorch, JAX when "
             "installed); options go to the benchmark: bpfast bench --help",
    )
    bench.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        args.bench_args = rest  # the benchmark parses its own options
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        return args.run(args)
    except MemoryError as exc:  # a net or batch too large for this machine
        if args.command != "train":
            raise
        raise SystemExit(f"bpfast train: out of memory ({exc}); try a smaller --batch-size or --hidden") from None
    except BrokenPipeError:  # `bpfast info | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
