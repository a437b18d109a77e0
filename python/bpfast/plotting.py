"""Training curves as a matplotlib Figure (matplotlib imported only when called)."""

from __future__ import annotations


def training_curves(history, title: str = ""):
    """A Figure with the mini-batch loss and the train/test accuracy of a ``TrainHistory``."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    loss_ax.plot(range(1, len(history.loss) + 1), history.loss, linewidth=0.6)
    loss_ax.set(xlabel="iteration", ylabel="mini-batch loss", title="loss")
    acc_ax.plot(history.eval_iters, history.train_acc, marker="o", label="train")
    acc_ax.plot(history.eval_iters, history.test_acc, marker="s", linestyle="--", label="test")
    acc_ax.set(xlabel="iteration", ylabel="accuracy", ylim=(0, 1), title="accuracy")
    acc_ax.legend(loc="lower right")
    if title:
        fig.suptitle(title)
    return fig
