"""The book's training loop (ch05/train_neuralnet.py) as a library function.

Mini-batches drawn with replacement from the global ``np.random`` stream (as the book
does, so a seeded run repeats), SGD on ``TwoLayerNet``, train and test accuracy once per
epoch. Nothing is printed: progress goes to the callbacks, results to the return value.
"""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bpfast.nets import TwoLayerNet

__all__ = ["TrainHistory", "train", "accuracy", "eval_steps"]

EVAL_CHUNK = 10_000


@dataclass
class TrainHistory:
    """What a run produced: per-step loss, per-epoch accuracies, wall time.

    ``loss[i]`` is step i's mini-batch loss as the step computed it, before its update (the
    book's loop records ``network.loss(x_batch, t_batch)`` after the update, one more forward
    pass: the same parameters, losses one step apart).
    """

    loss: list[float] = field(default_factory=list)
    eval_iters: list[int] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    wall_s: float = 0.0


def accuracy(net, x, t) -> float:
    """Fraction of rows of x whose argmax prediction equals t (labels or one-hot), in chunks."""
    x, t = np.asarray(x), np.asarray(t)
    if x.ndim == 0 or t.ndim == 0 or len(t) != len(x):
        raise ValueError(f"accuracy: x has shape {x.shape} but t has shape {t.shape}; they need one row per image")
    labels = t.argmax(axis=1) if t.ndim != 1 else t
    correct = 0
    for start in range(0, x.shape[0], EVAL_CHUNK):
        y = net.predict(x[start : start + EVAL_CHUNK])
        correct += int(np.count_nonzero(y.argmax(axis=1) == labels[start : start + EVAL_CHUNK]))
    return correct / max(x.shape[0], 1)


def eval_steps(iters: int, train_size: int, batch_size: int) -> list[int]:
    """The steps at which ``train`` measures the accuracies: the first of each epoch
    (``train_size // batch_size`` steps, at least 1), and ``iters`` when the last step is not one."""
    if batch_size < 1:
        raise ValueError(f"eval_steps: batch_size must be at least 1, got {batch_size}")
    iter_per_epoch = max(train_size // batch_size, 1)
    steps = list(range(0, iters, iter_per_epoch))
    if iters and (iters - 1) % iter_per_epoch != 0:
        steps.append(iters)
    return steps


def train(
    net: TwoLayerNet,
    train_data: tuple[np.ndarray, np.ndarray],
    test_data: tuple[np.ndarray, np.ndarray],
    *,
    iters: int = 10_000,
    batch_size: int = 100,
    lr: float = 0.1,
    on_step: Callable[[int, float], None] | None = None,
    on_eval: Callable[[int, float, float], None] | None = None,
    report_every: int = 50,
) -> TrainHistory:
    """Train ``net`` in place with the book's loop; returns the history.

    ``on_step(i, loss)`` is called every ``report_every`` steps and at the end,
    ``on_eval(i, train_acc, test_acc)`` at the start of each epoch (``train_size /
    batch_size`` steps, at least 1) and after the last step.
    """
    x_train, t_train = train_data
    x_test, t_test = test_data
    train_size = x_train.shape[0]
    if train_size == 0:
        raise ValueError("train: the training set is empty")
    for split, (x, t) in (("training", train_data), ("test", test_data)):
        if len(x) != len(t):
            raise ValueError(f"train: the {split} set has {len(x)} images but {len(t)} labels")
    for name, value, least in (("iters", iters, 0), ("batch_size", batch_size, 1), ("report_every", report_every, 1)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise TypeError(f"train: {name} must be an integer, got {type(value).__name__}")
        if value < least:
            raise ValueError(f"train: {name} must be at least {least}, got {value}")
    evaluations = eval_steps(iters, train_size, batch_size)
    due = set(evaluations)
    history = TrainHistory()
    step = _step_function(net, lr)

    def evaluate(i: int) -> None:
        train_acc, test_acc = accuracy(net, x_train, t_train), accuracy(net, x_test, t_test)
        history.eval_iters.append(i)
        history.train_acc.append(train_acc)
        history.test_acc.append(test_acc)
        if on_eval is not None:
            on_eval(i, train_acc, test_acc)

    start = time.perf_counter()
    for i in range(iters):
        batch_mask = np.random.choice(train_size, batch_size)
        loss = step(x_train[batch_mask], t_train[batch_mask])
        history.loss.append(loss)
        if on_step is not None and (i + 1) % report_every == 0:
            on_step(i + 1, loss)
        if i in due:
            evaluate(i)
    if evaluations and evaluations[-1] == iters:
        evaluate(iters)
    if on_step is not None and iters % report_every:
        on_step(iters, history.loss[-1])
    history.wall_s = time.perf_counter() - start
    return history


def _step_function(net, lr: float) -> Callable[[np.ndarray, np.ndarray], float]:
    """One SGD step returning the mini-batch loss: the net's fused step when it has one."""
    if hasattr(net, "train_step"):
        return lambda x, t: float(net.train_step(x, t, lr))

    def step(x, t):
        grads = net.gradient(x, t)
        for key in ("W1", "b1", "W2", "b2"):
            net.params[key] -= lr * grads[key]
        return float(net.lastLayer.loss)

    return step
