"""The book's ch05/train_neuralnet.py as one process, on bench/book_numpy.py's layers.

Loads MNIST the way the book's dataset/mnist.py does once its pickle exists (a pickle of
the uint8 arrays, normalised to float32 and one-hot labels in float64 on load), trains
784-50-10 with lr 0.1, batch 100, 10,000 iterations, recomputes the batch loss after each
step and measures train and test accuracy every 600 iterations (17 times), as the book does.
Prints one JSON line: wall time, final accuracies.

    python bench/book_train.py --data ../shared/data/mnist [--pickle FILE] [--iters N]
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse  # noqa: E402
import gzip  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pickle  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from book_numpy import TwoLayerNet  # noqa: E402

FILES = {
    "train_img": "train-images-idx3-ubyte.gz",
    "train_label": "train-labels-idx1-ubyte.gz",
    "test_img": "t10k-images-idx3-ubyte.gz",
    "test_label": "t10k-labels-idx1-ubyte.gz",
}


def make_pickle(data_dir, path):
    """What the book's mnist.py does on its first run: parse the gzip files, pickle the arrays."""
    dataset = {}
    for key, name in FILES.items():
        with gzip.open(os.path.join(data_dir, name), "rb") as f:
            raw = np.frombuffer(f.read(), np.uint8, offset=16 if "img" in key else 8)
        dataset[key] = raw.reshape(-1, 784) if "img" in key else raw
    with open(path, "wb") as f:
        pickle.dump(dataset, f, -1)


def load_mnist(path):
    """The book's load_mnist(normalize=True, one_hot_label=True) from its pickle."""
    with open(path, "rb") as f:
        dataset = pickle.load(f)
    for key in ("train_img", "test_img"):
        dataset[key] = dataset[key].astype(np.float32) / 255.0
    for key in ("train_label", "test_label"):
        one_hot = np.zeros((dataset[key].size, 10))
        one_hot[np.arange(dataset[key].size), dataset[key]] = 1
        dataset[key] = one_hot
    return (dataset["train_img"], dataset["train_label"]), (dataset["test_img"], dataset["test_label"])


def accuracy(network, x, t):
    y = np.argmax(network.predict(x), axis=1)
    return np.sum(y == np.argmax(t, axis=1)) / float(x.shape[0])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--pickle", default=None, help="the book's mnist.pkl (made from --data if missing)")
    parser.add_argument("--iters", type=int, default=10_000)
    args = parser.parse_args()
    pkl = args.pickle or os.path.join(args.data, "mnist.pkl")
    if not os.path.exists(pkl):
        make_pickle(args.data, pkl)

    (x_train, t_train), (x_test, t_test) = load_mnist(pkl)
    network = TwoLayerNet(input_size=784, hidden_size=50, output_size=10)
    train_size, batch_size, learning_rate = x_train.shape[0], 100, 0.1
    iter_per_epoch = max(train_size / batch_size, 1)
    train_acc = test_acc = None
    evaluations = 0
    for i in range(args.iters):
        batch_mask = np.random.choice(train_size, batch_size)
        x_batch, t_batch = x_train[batch_mask], t_train[batch_mask]
        grad = network.gradient(x_batch, t_batch)
        for key in ("W1", "b1", "W2", "b2"):
            network.params[key] -= learning_rate * grad[key]
        network.loss(x_batch, t_batch)
        if i % iter_per_epoch == 0:
            train_acc, test_acc = accuracy(network, x_train, t_train), accuracy(network, x_test, t_test)
            evaluations += 1
    print(json.dumps({"wall_s": time.perf_counter() - START, "train_acc": train_acc, "test_acc": test_acc,
                      "evaluations": evaluations}))


if __name__ == "__main__":
    main()
