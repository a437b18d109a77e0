"""The compiled GEMM: every kernel path x dtype (float32, float64, float32 A with float64 B) x
transpose flags x awkward sizes, against the _ref twin and NumPy; the fused epilogues (bias,
ReLU with its mask, the zero mask of a ReLU backward, the SGD update), thread-count
independence, the Affine kernels built on it, and the SciPy BLAS escape hatch."""

from __future__ import annotations

import os

import numpy as np
import pytest

_core = pytest.importorskip("bpfast._core")

INFO = _core.info()
KINDS = ["float32", "float64", "mixed"]  # mixed: float32 A, float64 B and C
SIZES = [1, 2, 3, 7, 13, 15, 17, 31, 33, 47, 63, 65, 100, 127, 129, 255, 257, 784]
# A transposed with rows over 2 KB apart and C's rows shorter than a panel and not whole vectors
# (10, 12, 3 columns; 24 in float32): computed as C^T, then stored transposed through the
# epilogue. The last two have rows close enough to be read in place (the direct path).
NARROW_TRANSPOSED = [(1024, 10, 300), (600, 10, 1000), (784, 24, 50), (520, 12, 40), (600, 3, 7), (100, 10, 50),
                     (11, 10, 5)]

# Each size as M, as N and as K against small partners, then shapes off every block and the book's.
SHAPES = (
    [(s, 17, 9) for s in SIZES]
    + [(5, s, 11) for s in SIZES]
    + [(7, 13, s) for s in SIZES]
    + [(0, 5, 3), (4, 0, 3), (4, 5, 0), (0, 0, 0), (33, 65, 257), (129, 100, 63), (100, 50, 784), (100, 10, 50)]
    + [(600, 50, 784)]  # many rows past a row-major B: B packed beside an A read in place
    + [(45, 300, 70)]  # A packed from its rows: a short last panel, k past the last transposed block
    # N in column blocks of equal width: a long K narrows the blocks; 5000 columns pass the widest
    + [(2, 600, 4096), (113, 5000, 16)]
    # three vectors wide and a few columns more (AVX-512: tiles of three vectors, then dot products):
    # 48-52 columns in float32, 24-26 in float64; (31, 50, 63) has too short a K for it
    + [(13, 48, 100), (37, 52, 70), (45, 26, 40), (9, 24, 33), (31, 50, 63)]
    # one vector and a few columns, narrower than a panel (the book's 10 classes in float64 with
    # AVX-512): the vector's tile, then dot products, on each path's widths
    + [(29, 18, 70), (23, 9, 65), (19, 5, 40)]
    + NARROW_TRANSPOSED
)




def operands(kind, M, N, K, trans_a, trans_b, seed=0):
    rng = np.random.default_rng(seed)
    a_dtype = np.float64 if kind == "float64" else np.float32
    b_dtype = np.float32 if kind == "float32" else np.float64
    a = rng.standard_normal((K, M) if trans_a else (M, K)).astype(a_dtype)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(b_dtype)
    bias = rng.standard_normal(N).astype(b_dtype)
    return a, b, bias


def exact_product(a, b, trans_a, trans_b):
    """op(a)·op(b) in float64, and the scale |op(a)|·|op(b)| errors are measured against."""
    A = (a.T if trans_a else a).astype(np.float64)
    B = (b.T if trans_b else b).astype(np.float64)
    return A @ B, np.abs(A) @ np.abs(B)


def assert_product_close(out, expected, scale, kind, K):
    """float64 (and mixed): 1e-10 relative to |A|·|B|; float32: 4·sqrt(K)·eps of it."""
    assert out.dtype == (np.float32 if kind == "float32" else np.float64)
    assert out.shape == expected.shape
    rel = 4 * np.sqrt(max(K, 1)) * np.finfo(np.float32).eps if kind == "float32" else 1e-10
    err = np.abs(out.astype(np.float64) - expected)
    assert np.all(err <= rel * (scale + 1e-30)), f"max err {err.max()} (K={K})"


@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("kind", KINDS)
def test_gemm_vs_numpy_and_ref(cpu_path, kind, trans_a, trans_b):
    for M, N, K in SHAPES:
        a, b, bias = operands(kind, M, N, K, trans_a, trans_b)
        expected, scale = exact_product(a, b, trans_a, trans_b)
        out = _core._gemm(a, b, None, trans_a, trans_b)
        assert_product_close(out, expected, scale, kind, K)
        assert_product_close(_core._ref.gemm(a, b, None, trans_a, trans_b), expected, scale, kind, K)
        with_bias = _core._gemm(a, b, bias, trans_a, trans_b)
        assert_product_close(with_bias, expected + bias, scale + np.abs(bias), kind, K)


@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("kind", KINDS)
def test_relu_epilogue_mask_is_exact(cpu_path, kind, trans_a):
    shapes = [(1, 1, 1), (13, 33, 17), (100, 50, 784), (65, 129, 31), (3, 7, 0), (0, 4, 2)]
    for M, N, K in shapes + (NARROW_TRANSPOSED if trans_a else []):
        a, b, bias = operands(kind, M, N, K, trans_a, False, seed=M + N + K)
        plain = _core._gemm(a, b, bias, trans_a)
        out, mask = _core._gemm(a, b, bias, trans_a, relu=True)
        assert mask.dtype == np.bool_ and mask.shape == (M, N)
        np.testing.assert_array_equal(mask, plain <= 0)
        np.testing.assert_array_equal(out, np.where(mask, 0, plain))
        ref_out, ref_mask = _core._ref.gemm(a, b, bias, trans_a, relu=True)
        expected, scale = exact_product(a, b, trans_a, False)
        assert_product_close(ref_out, np.maximum(expected + bias, 0), scale + np.abs(bias), kind, K)
        # masks agree with the oracle wherever the value is not within rounding of zero
        clear = np.abs(expected + bias) > 1e-3 * (scale + np.abs(bias) + 1)
        np.testing.assert_array_equal(mask[clear], ref_mask[clear])


@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("kind", KINDS)
def test_zero_mask_epilogue(cpu_path, kind, trans_a, trans_b):
    """C = 0 where zero_mask, after bias and ReLU: exactly the product then the mask applied, on
    every block edge, the narrow transposed form and the reference."""
    for M, N, K in SHAPES:
        a, b, bias = operands(kind, M, N, K, trans_a, trans_b, seed=M + 2 * N + K)
        zero = np.random.default_rng(M * N + K).random((M, N)) < 0.5
        if M > 1 and N > 1:
            zero = np.asfortranarray(zero)  # any layout: copied to C order first
        plain = _core._gemm(a, b, bias, trans_a, trans_b)
        np.testing.assert_array_equal(_core._gemm(a, b, bias, trans_a, trans_b, zero_mask=zero),
                                      np.where(zero, 0, plain))
        out, mask = _core._gemm(a, b, bias, trans_a, trans_b, relu=True, zero_mask=zero)
        np.testing.assert_array_equal(mask, plain <= 0)
        np.testing.assert_array_equal(out, np.where(zero | mask, 0, plain))
        ref_plain = _core._ref.gemm(a, b, bias, trans_a, trans_b)
        np.testing.assert_array_equal(_core._ref.gemm(a, b, bias, trans_a, trans_b, zero_mask=zero),
                                      np.where(zero, 0, ref_plain))


@pytest.mark.parametrize("trans_a", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("kind", KINDS)
def test_update_epilogue(cpu_path, kind, trans_a):
    """update -= rate * C after the rest of the epilogue, rounded as NumPy's `w -= rate * c` (the
    product to C's dtype, then the difference): bit for bit, on every block edge."""
    for M, N, K in SHAPES:
        a, b, bias = operands(kind, M, N, K, trans_a, False, seed=M + 3 * N + K)
        rng = np.random.default_rng(M + N * K)
        zero = rng.random((M, N)) < 0.3
        out, mask = _core._gemm(a, b, bias, trans_a, relu=True, zero_mask=zero)
        for gemm in (_core._gemm, _core._ref.gemm):
            w = rng.standard_normal((M, N)).astype(b.dtype)
            before = w.copy()
            out2, mask2 = gemm(a, b, bias, trans_a, relu=True, zero_mask=zero, update=w, update_rate=0.37)
            np.testing.assert_array_equal(w, before - b.dtype.type(0.37) * out2)
            if gemm is _core._gemm:  # the update leaves the product as it was
                np.testing.assert_array_equal(out2, out)
                np.testing.assert_array_equal(mask2, mask)


def test_update_is_checked():
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match="update has shape"):
        _core._gemm(a, b, update=np.zeros((5, 4), np.float32))
    with pytest.raises(ValueError, match="update must be a writable, aligned, C-contiguous float32 array"):
        _core._gemm(a, b, update=np.zeros((4, 5), np.float64))
    with pytest.raises(ValueError, match="writable"):
        _core._gemm(a, b, update=np.zeros((5, 4), np.float32).T)
    frozen = np.zeros((4, 5), np.float32)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writable"):
        _core._gemm(a, b, update=frozen)
    with pytest.raises(TypeError, match="update must be a NumPy array"):
        _core._gemm(a, b, update=[[0.0] * 5] * 4)
    both = np.zeros((4, 8), np.float32)  # a and update in one buffer
    with pytest.raises(ValueError, match="update shares memory with an operand"):
        _core._gemm(both[:, :3], b, update=both.reshape(-1)[:20].reshape(4, 5))
    square = np.ones((4, 4), np.float32)
    with pytest.raises(ValueError, match="update shares memory with an operand"):
        _core._gemm(square, square, update=square)
    assert np.all(square == 1)


def test_zero_mask_is_checked():
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    with pytest.raises(ValueError, match="zero_mask has shape"):
        _core._gemm(a, b, zero_mask=np.zeros((5, 4), bool))
    with pytest.raises(TypeError, match="zero_mask has dtype uint8; expected bool"):
        _core._gemm(a, b, zero_mask=np.zeros((4, 5), np.uint8))


def test_relu_epilogue_nan_not_masked(cpu_path):
    for kind in KINDS:
        a, b, bias = operands(kind, 20, 40, 30, False, False)
        a[3, 5] = np.nan
        bias[:] = 0
        b[:, 7] = 0  # column 7 is exactly 0 (masked) except in row 3 (NaN: not masked)
        out, mask = _core._gemm(a, b, bias, relu=True)
        assert np.all(np.isnan(out[3])) and not mask[3].any()
        assert np.all(mask[np.arange(20) != 3, 7]) and np.all(out[np.arange(20) != 3, 7] == 0)


@pytest.mark.parametrize("kind", KINDS)
def test_results_do_not_depend_on_thread_count(cpu_path, kind):
    before = _core.get_num_threads()
    # The thread count decides whether a row-major B beside an A read in place is packed: on the
    # AVX-512 path (100, 50, 784) reads it in place on two threads and packs it on one; and the
    # row chunks: (100, 64, 784) runs 13-row tiles on two threads, (20, 40, 300) 7-row ones; N
    # in column blocks: (2, 600, 4096) with columns split across the threads, (113, 5000, 16) rows
    shapes = [(300, 200, 500), (100, 50, 784), (600, 50, 784), (784, 50, 100), (100, 784, 50), (1, 2000, 300),
              (2000, 3, 300), (300, 26, 200), (100, 64, 784), (20, 40, 300), (2, 600, 4096),
              (113, 5000, 16)] + NARROW_TRANSPOSED
    try:
        for trans_a, trans_b in [(False, False), (True, False), (False, True)]:
            for M, N, K in shapes:
                a, b, bias = operands(kind, M, N, K, trans_a, trans_b)
                results = []
                for n in (1, 2, 3):
                    _core.set_num_threads(n)
                    results.append(_core._gemm(a, b, bias, trans_a, trans_b, relu=True))
                for out, mask in results[1:]:
                    np.testing.assert_array_equal(out, results[0][0])
                    np.testing.assert_array_equal(mask, results[0][1])
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
def test_wide_layer_with_a_long_k(cpu_path, kind):
    """A layer three vectors wide and a few columns more (50 float32, 26 float64 columns) keeps
    its N columns in one block however long K is (elsewhere, a long K cuts N into blocks)."""
    N, K = (50 if kind == "float32" else 26), 140_000
    a, b, bias = operands(kind, 3, N, K, False, False, seed=N)
    plain = _core._gemm(a, b, bias, False, False)
    expected, scale = exact_product(a, b, False, False)
    assert_product_close(plain, expected + bias, scale + np.abs(bias), kind, K)
    out, mask = _core._gemm(a, b, bias, False, False, relu=True)
    np.testing.assert_array_equal(mask, plain <= 0)
    np.testing.assert_array_equal(out, np.where(mask, 0, plain))


@pytest.mark.parametrize("kind", KINDS)
def test_affine_kernels(cpu_path, kind):
    """affine_forward / affine_relu_forward / affine_backward against the _ref twins and NumPy,
    float32 x with float64 W, b, dout included (results float64)."""
    for N, D, M in [(1, 1, 1), (100, 784, 50), (100, 50, 10), (7, 33, 129), (0, 5, 3), (4, 0, 3), (4, 5, 0)]:
        x, W, b = operands(kind, N, M, D, False, False, seed=N + D + M)
        dout = np.random.default_rng(1).standard_normal((N, M)).astype(b.dtype)
        xe, We = x.astype(np.float64), W.astype(np.float64)
        expected, scale = xe @ We + b, np.abs(xe) @ np.abs(We) + np.abs(b)
        out = _core.affine_forward(x, W, b)
        assert_product_close(out, expected, scale, kind, D)
        assert_product_close(_core._ref.affine_forward(x, W, b), expected, scale, kind, D)
        r_out, r_mask = _core.affine_relu_forward(x, W, b)
        np.testing.assert_array_equal(r_mask, out <= 0)
        np.testing.assert_array_equal(r_out, np.where(r_mask, 0, out))
        dx, dW, db = _core.affine_backward(dout, x, W)
        de = dout.astype(np.float64)
        assert_product_close(dx, de @ We.T, np.abs(de) @ np.abs(We.T), kind, M)
        assert_product_close(dW, xe.T @ de, np.abs(xe.T) @ np.abs(de), kind, N)
        assert_product_close(db, de.sum(axis=0), np.abs(de).sum(axis=0), kind, N)
        rdx, rdW, rdb = _core._ref.affine_backward(dout, x, W)
        np.testing.assert_array_equal(db, rdb)  # same summation order
        assert _core.affine_backward(dout, x, W, need_dx=False)[0] is None


def test_large_product_outputs_start_on_a_cache_line():
    """_gemm's C and affine_backward's dx from 16 KiB on start on a 64-byte line (the threads that
    split their columns then meet at a line boundary), and are still fresh, writable, C-contiguous
    arrays of the right values; smaller ones are NumPy's own allocation."""
    rng = np.random.default_rng(3)
    dout, W = rng.standard_normal((100, 50)), rng.standard_normal((784, 50))
    x = rng.standard_normal((100, 784)).astype(np.float32)
    outs = [_core._gemm(dout, W, None, False, True) for _ in range(4)]
    outs += [_core.affine_backward(dout, x, W)[0] for _ in range(4)]
    outs += [_core._gemm(dout.astype(np.float32), W.astype(np.float32), None, False, True)]
    for out in outs:
        assert out.ctypes.data % 64 == 0
        assert out.shape == (100, 784) and out.flags.c_contiguous and out.flags.writeable
        np.testing.assert_allclose(out, dout @ W.T, rtol=1e-4, atol=1e-4)
    for i, a in enumerate(outs):  # fresh: no two share memory
        assert not any(np.shares_memory(a, b) for b in outs[i + 1:])
    outs[0][...] = 0  # writing one leaves the others alone
    assert np.all(outs[1] == outs[4])
    small = _core._gemm(dout[:4], W[:8], None, False, True)
    np.testing.assert_allclose(small, dout[:4] @ W[:8].T, rtol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_affine_backward_does_not_depend_on_thread_count(cpu_path, kind):
    """On two or more threads, backward runs dW on one thread and dx on the other when their
    outputs are within 10x of each other and each has 64 K multiply-adds or more, the dW thread
    then taking what is left of dx's column blocks (256 bytes wide, while dout is small); otherwise it
    splits each product across the threads. Every way gives the same bits as one thread. Sparse x
    (MNIST-like: dW skips zeros and finishes first, so both threads run dx's blocks) and dx widths
    with a short last block and column tails are among the shapes."""
    before = _core.get_num_threads()
    # side by side: (100, 784, 50), (64, 32, 32) (just 64 K), (100, 790, 50), (100, 770, 50),
    # (100, 1000, 10); split: (1000, 784, 50), (7, 33, 129), (1, 784, 50); too small for either:
    # (20, 50, 10), (40, 50, 13)
    shapes = [(100, 784, 50), (40, 50, 13), (64, 32, 32), (1000, 784, 50), (7, 33, 129), (1, 784, 50), (20, 50, 10),
              (100, 790, 50), (100, 770, 50), (100, 1000, 10)]
    rng = np.random.default_rng(2)
    try:
        for N, D, M in shapes:
            for sparse in (False, True):
                x, W, _ = operands(kind, N, M, D, False, False, seed=N + D + M)
                if sparse:
                    x[rng.random(x.shape) < 0.8] = 0
                dout = rng.standard_normal((N, M)).astype(W.dtype)
                results = []
                for n in (1, 2, 3):
                    _core.set_num_threads(n)
                    results.append(_core.affine_backward(dout, x, W))
                for result in results[1:]:
                    for got, want in zip(result, results[0]):
                        np.testing.assert_array_equal(got, want, err_msg=f"{(N, D, M)} sparse={sparse}")
                de, We = dout.astype(np.float64), W.astype(np.float64)
                assert_product_close(results[1][0], de @ We.T, np.abs(de) @ np.abs(We.T), kind, M)
    finally:
        _core.set_num_threads(before)


def test_mixed_needs_float32_a_and_float64_rest():
    with pytest.raises(TypeError, match="a has dtype float64 but b has dtype float32"):
        _core._gemm(np.ones((2, 3)), np.ones((3, 2), np.float32))
    with pytest.raises(TypeError, match="must match"):
        _core._gemm(np.ones((2, 3), np.float32), np.ones((3, 2)), np.ones(2, np.float32))


@pytest.mark.parametrize("value, gemm, warns", [("scipy", "blas", False), ("bpfast", "bpfast", False),
                                                ("", "bpfast", False), ("openblas", "bpfast", True)])
def test_gemm_environment_variable(value, gemm, warns):
    """BPFAST_GEMM at import: scipy the hatch, bpfast or empty the default, anything else a warning."""
    import subprocess
    import sys

    if value == "scipy":
        pytest.importorskip("scipy.linalg.cython_blas")
    code = ("import warnings; warnings.simplefilter('always')\n"
            "import bpfast; from bpfast import _core; print(_core.info()['gemm'])")
    env = dict(os.environ, BPFAST_GEMM=value, BPFAST_BACKEND="cpp")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == gemm
    assert ("RuntimeWarning: BPFAST_GEMM='openblas' ignored (not 'scipy' or 'bpfast')" in out.stderr) == warns, out.stderr


def test_scipy_blas_hatch():
    pytest.importorskip("scipy.linalg.cython_blas")
    from bpfast import _blas

    try:
        assert _blas.use_scipy_blas(True) == "blas"
        assert _core.info()["gemm"] == "blas"
        for kind in KINDS:
            for trans_a in (False, True):
                for trans_b in (False, True):
                    for M, N, K in [(1, 1, 1), (7, 13, 5), (100, 50, 784), (3, 4, 0), (0, 3, 2)]:
                        a, b, bias = operands(kind, M, N, K, trans_a, trans_b)
                        expected, scale = exact_product(a, b, trans_a, trans_b)
                        out, mask = _core._gemm(a, b, bias, trans_a, trans_b, relu=True)
                        assert_product_close(out, np.maximum(expected + bias, 0), scale + np.abs(bias), kind, K)
                        plain = _core._gemm(a, b, bias, trans_a, trans_b)
                        np.testing.assert_array_equal(mask, plain <= 0)
                        zero = np.arange(M * N).reshape(M, N) % 3 == 0
                        np.testing.assert_array_equal(_core._gemm(a, b, bias, trans_a, trans_b, zero_mask=zero),
                                                      np.where(zero, 0, plain))
                        w = np.ones((M, N), b.dtype)
                        _core._gemm(a, b, bias, trans_a, trans_b, update=w, update_rate=0.5)
                        np.testing.assert_array_equal(w, 1 - b.dtype.type(0.5) * plain)
    finally:
        assert _blas.use_scipy_blas(False) == "bpfast"
    assert _core.info()["gemm"] == "bpfast"
