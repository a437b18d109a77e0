"""The Numba backend: the reference's kernels as ``@njit`` loops, for float32 and float64.

Same functions, signatures and return conventions as ``numpy_ref`` (read its docstring for
the preconditions the public API guarantees). Contract of this module:

- Matrix products call ``np.dot`` inside njit, which Numba lowers to SciPy's BLAS (gemm):
  it beat a blocked njit loop 3.5-10x on every shape measured (the book's and 1024^3).
- Elementwise kernels are fused into one pass; softmax and softmax-with-loss work one row
  at a time, so each row is read from cache, not memory, after its first sweep.
- Kernels are compiled lazily, on the first call for each dtype, from one explicit
  signature whose inputs are C-contiguous, read-only and unaligned: writable, aligned
  arrays convert to it, so one specialisation per dtype serves every input. Compiled code
  is cached on disk (``cache=True``), so a second process loads it instead of compiling.
- The Python wrappers make inputs C-contiguous (copying only when they are not) and
  aligned before BLAS sees them, check the shapes the kernels index by, and allocate
  nothing the kernels do not return. Outputs are fresh arrays; ``relu_backward`` writes
  ``dout`` in place.
- Kernels release the GIL and use IEEE division (``error_model="numpy"``), no fast-math, with
  one exception: a softmax row's sum may be reassociated (``fastmath={"reassoc"}`` on
  ``_row_sum`` alone), so that it vectorises; NumPy's own sum reorders it too.
- exp is ``_exp``, the compiled core's method (``cpp/simd/vexp.hpp``) written as plain
  arithmetic, which LLVM vectorises; ``np.exp`` in an njit loop is libm's scalar call, several
  times slower than NumPy's vectorised exp. About 1 ulp over the whole range, denormals and
  specials included.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic, overload

name = "numba"

_JIT_OPTIONS = {"nogil": True, "error_model": "numpy"}
_NUMBA_TYPES = {np.dtype(np.float32): types.float32, np.dtype(np.float64): types.float64}


def _arg(dtype, ndim):
    """Type of an input: C-contiguous; read-only or misaligned arrays are accepted too."""
    return types.Array(dtype, ndim, "C", readonly=True, aligned=False)


def _out(dtype, ndim):
    """Type of an array the kernel writes: C-contiguous and writable."""
    return types.Array(dtype, ndim, "C")


_LABELS = _arg(types.int64, 1)
_MASK = _arg(types.boolean, 1)


class _Kernel:
    """An njit kernel compiled on its first call for a dtype, from an explicit signature.

    ``kernel[dtype]`` returns the compiled dispatcher; ``signature(nbtype)`` gives the
    argument types for the Numba float type ``nbtype``.
    """

    __slots__ = ("_pyfunc", "_signature", "_compiled")

    def __init__(self, pyfunc, signature):
        self._pyfunc = pyfunc
        self._signature = signature
        self._compiled = {}

    def __getitem__(self, dtype):
        try:
            return self._compiled[dtype]
        except KeyError:
            pass
        try:
            nbtype = _NUMBA_TYPES[dtype]
        except KeyError:
            raise TypeError(f"the numba backend computes in float32 or float64, not {dtype}") from None
        signature = self._signature(nbtype)
        try:
            compiled = numba.njit(signature, cache=True, **_JIT_OPTIONS)(self._pyfunc)
        except RuntimeError:  # no writable cache directory anywhere: compile without caching
            compiled = numba.njit(signature, **_JIT_OPTIONS)(self._pyfunc)
        self._compiled[dtype] = compiled
        return compiled


def _kernel(signature):
    return lambda pyfunc: _Kernel(pyfunc, signature)


def _contiguous(a):
    """a itself when it is C-contiguous (read-only or misaligned is fine), else a C copy."""
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _blas_ready(a):
    """a itself when it is C-contiguous and aligned, else a fresh (aligned) C copy."""
    flags = a.flags
    return a if flags.c_contiguous and flags.aligned else a.copy(order="C")


def _flat(a):
    """a as a 1-D C-contiguous array (a view when a is C-contiguous)."""
    return _contiguous(a).reshape(-1)


# ---------------------------------------------------------------------------- exp

# A float's bits as the integer of its width, and back.
_SAME_WIDTH = {
    types.float32: types.int32,
    types.int32: types.float32,
    types.float64: types.int64,
    types.int64: types.float64,
}


@intrinsic
def _bitcast(typingctx, value):
    """value's bits reinterpreted: float32 <-> int32, float64 <-> int64 (free: an LLVM bitcast)."""
    target = _SAME_WIDTH.get(value)
    if target is None:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(target))

    return target(value), codegen


class _ExpConst:
    """The constants of ``_exp`` for one dtype, as ``ExpConst`` and ``ExpPoly`` in vexp.hpp."""

    def __init__(self, float_type, int_type, *, lo, hi, ln2_hi, ln2_lo, mant, bias, poly):
        f = float_type
        self.int_type = int_type
        self.lo, self.hi = f(lo), f(hi)  # outside [lo, hi], exp rounds to 0 or overflows
        self.log2e, self.ln2_hi, self.ln2_lo = f(1.4426950408889634074), f(ln2_hi), f(ln2_lo)  # n * ln2_hi is exact
        self.magic = f(1.5 * 2.0**mant)  # adding it rounds to an integer, left in the low mantissa bits
        self.magic_bits = int_type(np.array(self.magic).view(int_type))
        self.mant, self.bias = int_type(mant), int_type(bias)
        self.half, self.one = f(0.5), f(1)
        self.poly = tuple(f(c) for c in poly)  # exp(r) = 1 + r + r^2 * P(r), P's coefficients highest first


_EXP_CONST = {
    types.float32: _ExpConst(
        np.float32, np.int32, lo=-104.0, hi=89.0, ln2_hi=0.693359375, ln2_lo=-2.12194440e-4, mant=23, bias=127,
        poly=(1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1),
    ),
    types.float64: _ExpConst(
        np.float64, np.int64, lo=-746.0, hi=710.0, ln2_hi=6.93147180369123816490e-01,
        ln2_lo=1.90821492927058770002e-10, mant=52, bias=1023,
        poly=tuple(1.0 / math.factorial(k) for k in range(13, 1, -1)),  # Taylor to r^13
    ),
}


def _exp(x):
    """exp(x) for one float32 or float64, in x's dtype (njit only)."""


@overload(_exp, jit_options=_JIT_OPTIONS)
def _exp_impl(x):
    # n = round(x / ln2) by the magic-number trick (no float->int conversion, so NaN is harmless),
    # r = x - n ln2 in two exact steps, exp(r) by a polynomial on |r| <= ln2/2, times 2^n applied
    # as 2^n1 * 2^n2 (n1 = round(n/2)), both normal, so denormal and overflowing results round
    # once. x is first clamped into [lo, hi]; comparisons with NaN are false, so NaN passes.
    c = _EXP_CONST.get(x)
    if c is None:
        return None
    lo, hi, log2e, ln2_hi, ln2_lo, magic, half, one = c.lo, c.hi, c.log2e, c.ln2_hi, c.ln2_lo, c.magic, c.half, c.one
    magic_bits, mant, bias, int_type = c.magic_bits, c.mant, c.bias, c.int_type
    top, rest = c.poly[0], c.poly[1:]

    def impl(x):
        x = lo if x < lo else x
        x = hi if x > hi else x
        t = x * log2e + magic
        n = t - magic
        r = (x - n * ln2_hi) - n * ln2_lo
        p = top
        for coefficient in rest:
            p = p * r + coefficient
        p = (p * (r * r) + r) + one
        n_bits = _bitcast(t) - magic_bits
        n1_bits = _bitcast(n * half + magic) - magic_bits
        s1 = _bitcast(int_type((n1_bits + bias) << mant))
        s2 = _bitcast(int_type((n_bits - n1_bits + bias) << mant))
        return p * s1 * s2

    return impl


# ---------------------------------------------------------------------------- Affine


@_kernel(lambda f: (_arg(f, 2), _arg(f, 2), _arg(f, 1)))
def _affine_forward(x, W, b):
    # x is (N,D), W is (D,M), b is (M,); out is (N,M)
    out = np.dot(x, W)
    N, M = out.shape
    for i in range(N):
        for j in range(M):
            out[i, j] += b[j]
    return out


@_kernel(lambda f: (_arg(f, 2), _arg(f, 2), _arg(f, 2), types.boolean))
def _affine_backward(dout, x, W, need_dx):
    # dout is (N,M), x is (N,D), W is (D,M); dx is (N,D) (or (0,0) when not needed), dW (D,M), db (M,)
    dx = np.dot(dout, W.T) if need_dx else np.empty((0, 0), dout.dtype)
    dW = np.dot(x.T, dout)
    N, M = dout.shape
    db = np.zeros(M, dout.dtype)
    for i in range(N):
        for j in range(M):
            db[j] += dout[i, j]
    return dx, dW, db


def affine_forward(x, W, b):
    """x is (N,D), W is (D,M), b is (M,); returns out = x·W + b, (N,M)."""
    if not (x.ndim == 2 and W.ndim == 2 and x.shape[1] == W.shape[0] and b.shape == (W.shape[1],)):
        raise ValueError(f"affine_forward: x {x.shape}, W {W.shape}, b {b.shape} do not fit (N,D), (D,M), (M,)")
    return _affine_forward[x.dtype](_blas_ready(x), _blas_ready(W), _contiguous(b))


def affine_backward(dout, x, W, need_dx=True):
    """dout is (N,M), x is (N,D), W is (D,M); returns (dx (N,D) or None, dW (D,M), db (M,))."""
    if not (W.ndim == 2 and x.ndim == 2 and x.shape[1] == W.shape[0] and dout.shape == (x.shape[0], W.shape[1])):
        raise ValueError(
            f"affine_backward: dout {dout.shape}, x {x.shape}, W {W.shape} do not fit (N,M), (N,D), (D,M)"
        )
    dx, dW, db = _affine_backward[dout.dtype](_blas_ready(dout), _blas_ready(x), _blas_ready(W), bool(need_dx))
    return (dx if need_dx else None), dW, db


# ---------------------------------------------------------------------------- ReLU


@_kernel(lambda f: (_arg(f, 1),))
def _relu_forward(x):
    # x, out and mask are (n,); one pass writes both outputs
    n = x.shape[0]
    out = np.empty(n, x.dtype)
    mask = np.empty(n, np.bool_)
    zero = x.dtype.type(0)
    for i in range(n):
        v = x[i]
        m = v <= zero  # NaN is not <= 0: it stays in out, unmasked, like the reference
        mask[i] = m
        out[i] = zero if m else v
    return out, mask


@_kernel(lambda f: (_out(f, 1), _MASK))
def _relu_backward(dout, mask):
    # dout and mask are (n,); dout is zeroed where mask is set, in place
    zero = dout.dtype.type(0)
    for i in range(dout.shape[0]):
        if mask[i]:
            dout[i] = zero


def relu_forward(x):
    """Any shape; returns (out, mask) with mask = (x <= 0) and out = x where not mask, else 0."""
    out, mask = _relu_forward[x.dtype](_flat(x))
    return out.reshape(x.shape), mask.reshape(x.shape)


def relu_backward(dout, mask):
    """Zeroes dout where mask is set, in place (dout is writable and has mask's shape)."""
    if dout.shape != mask.shape:
        raise ValueError(f"relu_backward: dout {dout.shape} and mask {mask.shape} differ")
    if mask.dtype != np.bool_:
        raise ValueError(f"relu_backward: mask must be bool, not {mask.dtype}")
    flags = dout.flags
    if flags.c_contiguous and flags.aligned and flags.writeable:
        _relu_backward[dout.dtype](dout.reshape(-1), _flat(mask))
    else:  # strided or misaligned: let NumPy write through the strides (raises when read-only)
        np.putmask(dout, mask, 0)


# ---------------------------------------------------------------------------- Sigmoid


@_kernel(lambda f: (_arg(f, 1),))
def _sigmoid_forward(x):
    # x and out are (n,)
    out = np.empty(x.shape[0], x.dtype)
    one = x.dtype.type(1)
    for i in range(x.shape[0]):
        out[i] = one / (one + _exp(-x[i]))
    return out


@_kernel(lambda f: (_arg(f, 1), _arg(f, 1)))
def _sigmoid_backward(dout, out):
    # dout, out and dx are (n,)
    dx = np.empty(dout.shape[0], dout.dtype)
    one = dout.dtype.type(1)
    for i in range(dout.shape[0]):
        dx[i] = dout[i] * (one - out[i]) * out[i]
    return dx


def sigmoid_forward(x):
    """Any shape; returns 1 / (1 + exp(-x))."""
    return _sigmoid_forward[x.dtype](_flat(x)).reshape(x.shape)


def sigmoid_backward(dout, out):
    """dout and out have one shape; returns dout * (1 - out) * out."""
    if dout.shape != out.shape:
        raise ValueError(f"sigmoid_backward: dout {dout.shape} and out {out.shape} differ")
    return _sigmoid_backward[dout.dtype](_flat(dout), _flat(out)).reshape(dout.shape)


# ---------------------------------------------------------------------------- Softmax and loss


@numba.njit(**_JIT_OPTIONS)
def _row_max(x):
    # the largest of x (C,), NaN ignored (a NaN poisons the row's exp later); eight running maxima
    C = x.shape[0]
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = x.dtype.type(-np.inf)
    full = C - C % 8
    for j in range(0, full, 8):
        m0 = x[j] if x[j] > m0 else m0
        m1 = x[j + 1] if x[j + 1] > m1 else m1
        m2 = x[j + 2] if x[j + 2] > m2 else m2
        m3 = x[j + 3] if x[j + 3] > m3 else m3
        m4 = x[j + 4] if x[j + 4] > m4 else m4
        m5 = x[j + 5] if x[j + 5] > m5 else m5
        m6 = x[j + 6] if x[j + 6] > m6 else m6
        m7 = x[j + 7] if x[j + 7] > m7 else m7
    for j in range(full, C):
        m0 = x[j] if x[j] > m0 else m0
    for m in (m1, m2, m3, m4, m5, m6, m7):
        m0 = m if m > m0 else m0
    return m0


@numba.njit(fastmath={"reassoc"}, **_JIT_OPTIONS)
def _row_sum(y):
    # the sum of y (C,), in whatever order vectorises (the one fast-math flag in this module)
    total = y.dtype.type(0)
    for j in range(y.shape[0]):
        total += y[j]
    return total


@numba.njit(**_JIT_OPTIONS)
def _softmax_row(x, y, i):
    # y[i] = softmax(x[i]): max, exp, sum, divide; a row with +inf or NaN gives NaN like the reference
    xi, yi = x[i], y[i]
    top = _row_max(xi)
    for j in range(xi.shape[0]):
        yi[j] = _exp(xi[j] - top)
    total = _row_sum(yi)
    for j in range(yi.shape[0]):
        yi[j] /= total


@numba.njit(**_JIT_OPTIONS)
def _argmax_row(t, i):
    # np.argmax of t[i]: the first maximum, or the first NaN when there is one
    best = 0
    for j in range(1, t.shape[1]):
        v = t[i, j]
        if v != v:
            return best if t[i, best] != t[i, best] else j
        if v > t[i, best]:
            best = j
    return best


@_kernel(lambda f: (_arg(f, 2),))
def _softmax(x):
    # x and y are (N,C)
    y = np.empty(x.shape, x.dtype)
    for i in range(x.shape[0]):
        _softmax_row(x, y, i)
    return y


@numba.njit(**_JIT_OPTIONS)
def _xent_term(y, i, label):
    # log(y[i, label] + 1e-7) in y's dtype, after checking label is a valid column
    if label < 0 or label >= y.shape[1]:
        raise ValueError("softmax_xent: label out of range")
    return np.log(y[i, label] + y.dtype.type(1e-7))


def _row_label(t, i):
    """The label of row i: t[i] for (N,) labels, argmax(t[i]) for (N,C) one-hot targets."""


@overload(_row_label, jit_options=_JIT_OPTIONS)
def _row_label_impl(t, i):
    if t.ndim == 1:
        return lambda t, i: t[i]
    return lambda t, i: _argmax_row(t, i)


def _softmax_xent_forward_py(x, t):
    # x and y are (N,C), t is (N,) labels or (N,C) one-hot; the loss sums in float64, divides by N
    N = x.shape[0]
    y = np.empty(x.shape, x.dtype)
    total = 0.0
    for i in range(N):
        _softmax_row(x, y, i)
        total += _xent_term(y, i, _row_label(t, i))
    return y, -total / N


_softmax_xent_forward_labels = _Kernel(_softmax_xent_forward_py, lambda f: (_arg(f, 2), _LABELS))
_softmax_xent_forward_onehot = _Kernel(_softmax_xent_forward_py, lambda f: (_arg(f, 2), _arg(f, 2)))


@_kernel(lambda f: (_arg(f, 2), _LABELS))
def _softmax_xent_backward_labels(y, t):
    # y and dx are (N,C), t is (N,): dx = (y - onehot(t)) / N, the reference's order of operations
    N, C = y.shape
    dx = np.empty((N, C), y.dtype)
    n = y.dtype.type(N)
    one = y.dtype.type(1)
    for i in range(N):
        label = t[i]
        if label < 0 or label >= C:
            raise ValueError("softmax_xent: label out of range")
        for j in range(C):
            dx[i, j] = y[i, j] / n
        dx[i, label] = (y[i, label] - one) / n
    return dx


@_kernel(lambda f: (_arg(f, 2), _arg(f, 2)))
def _softmax_xent_backward_onehot(y, t):
    # y, t and dx are (N,C): dx = (y - t) / N
    N, C = y.shape
    dx = np.empty((N, C), y.dtype)
    n = y.dtype.type(N)
    for i in range(N):
        for j in range(C):
            dx[i, j] = (y[i, j] - t[i, j]) / n
    return dx


def _check_logits(x, where):
    if x.ndim != 2 or x.shape[1] == 0:
        raise ValueError(f"{where}: x must be (N,C) with C > 0, not {x.shape}")


def _check_targets(x, t, where):
    _check_logits(x, where)
    if t.shape != x.shape and t.shape != x.shape[:1]:
        raise ValueError(f"{where}: t {t.shape} is neither (N,) labels nor (N,C) one-hot for x {x.shape}")


def softmax(x):
    """x is (N,C); returns the row-wise softmax, shifted by the row max for stability."""
    _check_logits(x, "softmax")
    return _softmax[x.dtype](_contiguous(x))


def softmax_xent_forward(x, t):
    """x is (N,C) logits, t is (N,) labels or (N,C) one-hot; returns (y (N,C), loss).

    The loss is the book's ``-sum(log(y[i, t_i] + 1e-7)) / N``, one-hot t reduced by argmax.
    """
    _check_targets(x, t, "softmax_xent_forward")
    if t.ndim == 2:
        y, loss = _softmax_xent_forward_onehot[x.dtype](_contiguous(x), _contiguous(t))
    else:
        y, loss = _softmax_xent_forward_labels[x.dtype](_contiguous(x), np.ascontiguousarray(t, dtype=np.int64))
    return y, x.dtype.type(loss)


def softmax_xent_backward(y, t):
    """y is (N,C), t is (N,) labels or (N,C) one-hot; returns dx = (y - t) / N, (N,C)."""
    _check_targets(y, t, "softmax_xent_backward")
    if t.ndim == 2:
        return _softmax_xent_backward_onehot[y.dtype](_contiguous(y), _contiguous(t))
    return _softmax_xent_backward_labels[y.dtype](_contiguous(y), np.ascontiguousarray(t, dtype=np.int64))
