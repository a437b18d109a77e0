"""PyTorch eager: the book's TwoLayerNet SGD step (and softmax), run by bench/run.py in a process
of its own.

The same computation as the book's: h = relu(x·W1 + b1), logits = h·W2 + b2, softmax
cross-entropy averaged over the batch, autograd gradients, then ``p -= lr * grad`` in place.
float32 data meets float64 weights by converting x to float64 inside the step (NumPy's
promotion does the same inside np.dot). The protocol is in ``_peer.py``.
"""

from __future__ import annotations

from _peer import PARAM_KEYS, serve


def load_library():
    import torch

    return {"name": "torch", "version": torch.__version__, "threads": torch.get_num_threads()}


class Model:
    def __init__(self, arrays, lr):
        import torch

        self.torch = torch
        self.lr = lr
        self.init = {key: arrays[key] for key in PARAM_KEYS}
        dtype = torch.from_numpy(arrays["W1"]).dtype
        self.x = torch.from_numpy(arrays["x"])
        self.dtype = dtype
        t = arrays["t"]
        self.onehot = t.ndim == 2
        self.t = torch.from_numpy(t).to(dtype) if self.onehot else torch.from_numpy(t).long()
        self.reset()

    def reset(self):
        torch = self.torch
        self.params = [torch.from_numpy(self.init[key].copy()).requires_grad_() for key in PARAM_KEYS]

    def _loss(self):
        torch = self.torch
        W1, b1, W2, b2 = self.params
        x = self.x.to(self.dtype)
        h = torch.relu(x @ W1 + b1)
        logits = h @ W2 + b2
        if self.onehot:
            return -(self.t * torch.log_softmax(logits, dim=1)).sum() / logits.shape[0]
        return torch.nn.functional.cross_entropy(logits, self.t)

    def step(self):
        for p in self.params:
            p.grad = None
        self._loss().backward()
        with self.torch.no_grad():
            for p in self.params:
                p.sub_(self.lr * p.grad)

    def validate(self):
        self.reset()
        self.step()
        out = {"d" + key: p.grad.numpy().copy() for key, p in zip(PARAM_KEYS, self.params)}
        out.update({key: p.detach().numpy().copy() for key, p in zip(PARAM_KEYS, self.params)})
        self.reset()
        return out


class Softmax:
    """torch.softmax over the rows of x."""

    def __init__(self, arrays, lr):
        import torch

        self.softmax = torch.softmax
        self.x = torch.from_numpy(arrays["x"])

    def step(self):
        self.softmax(self.x, dim=1)

    def validate(self):
        return {"y": self.softmax(self.x, dim=1).numpy()}


class Gemm:
    """torch.mm(op(a), op(b)), a new result per call as np.dot's and bpfast's in gemm_bench.py: the
    product (MKL's) under PyTorch's Linear layers. ``trans_a`` / ``trans_b`` say whether op()
    transposes (a view, as NumPy's ``.T``)."""

    def __init__(self, arrays, lr):
        import torch

        a, b = torch.from_numpy(arrays["a"]), torch.from_numpy(arrays["b"])
        self.a = a.t() if bool(arrays["trans_a"]) else a
        self.b = b.t() if bool(arrays["trans_b"]) else b
        self.mm = torch.mm

    def step(self):
        self.out = self.mm(self.a, self.b)

    def validate(self):
        self.step()
        return {"c": self.out.numpy().copy()}


if __name__ == "__main__":
    serve(load_library, {"step": Model, "softmax": Softmax, "gemm": Gemm})
