"""jax.jit: the book's TwoLayerNet SGD step (and softmax), run by bench/run.py in a process of its own.

One jitted function computes the gradients (jax.grad of the batch-mean softmax
cross-entropy, relu with gradient 0 at 0 as the book's mask) and returns the updated
parameters; the old ones are donated so XLA may update in place. float64 needs
``jax_enable_x64``, set at start. A step ends when its results are ready
(``block_until_ready``). Validation runs that same function once and hands out the new
parameters (no gradients: bench/run.py's PEER_STEP_OMITS). The protocol is in ``_peer.py``.
"""

from __future__ import annotations

import numpy as np

from _peer import PARAM_KEYS, serve


def load_library():
    import jax

    jax.config.update("jax_enable_x64", True)
    return {"name": "jax", "version": jax.__version__, "threads": None, "devices": str(jax.devices())}


class Model:
    def __init__(self, arrays, lr):
        import jax
        import jax.numpy as jnp

        self.jax = jax
        self.init = {key: arrays[key] for key in PARAM_KEYS}
        dtype = arrays["W1"].dtype
        self.x = jnp.asarray(arrays["x"])
        t = arrays["t"]
        onehot = t.ndim == 2
        self.t = jnp.asarray(t.astype(dtype) if onehot else t.astype(np.int64))

        def loss(params, x, t):
            W1, b1, W2, b2 = params
            h = jax.nn.relu(x.astype(dtype) @ W1 + b1)
            logp = jax.nn.log_softmax(h @ W2 + b2, axis=1)
            if onehot:
                return -jnp.sum(t * logp) / logp.shape[0]
            return -jnp.sum(jnp.take_along_axis(logp, t[:, None], axis=1)) / logp.shape[0]

        def step(params, x, t):
            grads = jax.grad(loss)(params, x, t)
            return tuple(p - lr * g for p, g in zip(params, grads))

        self._step = jax.jit(step, donate_argnums=0)
        self.reset()
        self.step()  # compile now, not in the first timed sample
        self.reset()

    def reset(self):
        self.params = tuple(self.jax.numpy.asarray(self.init[key].copy()) for key in PARAM_KEYS)

    def step(self):
        self.params = self.jax.block_until_ready(self._step(self.params, self.x, self.t))

    def validate(self):
        """One step of the timed function from the initial parameters: the new ones (the jitted
        step hands out no gradients)."""
        self.reset()
        self.step()
        out = {key: np.array(p) for key, p in zip(PARAM_KEYS, self.params)}  # copies: the buffers get donated
        self.reset()
        return out


class Softmax:
    """jax.nn.softmax over the rows of x, jitted; a call ends when its result is ready."""

    def __init__(self, arrays, lr):
        import jax

        self.jax = jax
        self.x = jax.numpy.asarray(arrays["x"])
        self._softmax = jax.jit(lambda x: jax.nn.softmax(x, axis=1))
        self.step()  # compile now, not in the first timed sample

    def step(self):
        self.jax.block_until_ready(self._softmax(self.x))

    def validate(self):
        return {"y": np.asarray(self._softmax(self.x))}


if __name__ == "__main__":
    serve(load_library, {"step": Model, "softmax": Softmax})
