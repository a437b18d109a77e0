"""Zero skipping in the compiled GEMM: a tile of op(A) rows runs over the k its rows use when op(B)
is finite, and must give the same bits as running over every k (`_core._set_skip_zeros(False)`),
on every kernel path, dtype, transpose, epilogue and thread count; with an infinity or a NaN in
op(B) every k runs (0·inf is NaN). `_core._skipped_ks()` counts the (tile, k) pairs left out, so
each case also checks that skipping happened where it should, and not where it should not."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_python

_core = pytest.importorskip("bpfast._core")

KINDS = ["float32", "float64", "mixed"]  # mixed: float32 A, float64 B and C


def digit_like(n, seed=0, side=28, dtype=np.float32):
    """n images of side x side pixels, flattened: a random blob of ink around the centre on a
    blank background (about 80% zeros, in runs, as MNIST's)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    images = np.zeros((n, side, side))
    for i in range(n):
        cy, cx = rng.uniform(side * 0.35, side * 0.65, 2)
        ry, rx = rng.uniform(side * 0.12, side * 0.3, 2)
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        images[i][inside] = rng.uniform(0.05, 1.0, inside.sum())
    return images.reshape(n, side * side).astype(dtype)


def dtypes(kind):
    return (np.float64 if kind == "float64" else np.float32), (np.float32 if kind == "float32" else np.float64)


def both_ways(*args, **kwargs):
    """_gemm with zero skipping on, then off; the number of (tile, k) pairs skipped by the first."""
    before = _core._set_skip_zeros(True)
    try:
        _core._skipped_ks(reset=True)
        on = _core._gemm(*args, **kwargs)
        skipped = _core._skipped_ks(reset=True)
        _core._set_skip_zeros(False)
        off = _core._gemm(*args, **kwargs)
        assert _core._skipped_ks() == 0, "skipping was off"
    finally:
        _core._set_skip_zeros(before)
    return on, off, skipped


def assert_same_bits(on, off):
    if isinstance(on, tuple):
        for x, y in zip(on, off):
            assert_same_bits(x, y)
        return
    assert on.dtype == off.dtype and on.shape == off.shape
    np.testing.assert_array_equal(on.view(np.uint8), off.view(np.uint8))


# (M, N, K) for op(A) (M,K) with digit-like rows: x·W of the book's layers and wider ones, a K past
# one cache block (784 in several K blocks of the generic and AVX2 paths; 46x46 = 2116 pixels in
# several of the AVX-512 path's), M off the register block, N off the vectors (50 = 3 vectors and
# 2 columns in float32, 6 and 2 in float64), narrow N (10: C^T is computed instead).
X_SHAPES = [(100, 50, 784), (50, 50, 784), (37, 100, 784), (300, 1024, 784), (7, 2048, 784), (256, 10, 784),
            (130, 26, 784), (100, 48, 784), (60, 50, 2116), (45, 96, 2116)]
# x^T·dout: op(A) = x^T (pixels, images), transposed in place. With fewer columns than a panel
# (up to 32) and not whole vectors, some paths compute C^T = dout^T·x instead, where x is op(B),
# and skip nothing.
XT_SHAPES = [(784, 50, 100), (784, 1024, 64), (784, 10, 300), (784, 26, 41), (784, 50, 1000), (784, 50, 2100)]


@pytest.mark.parametrize("kind", KINDS)
def test_x_times_w_same_bits(cpu_path, kind):
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(1)
    for M, N, K in X_SHAPES:
        x = digit_like(M, seed=M, side=math.isqrt(K), dtype=a_dt)
        w = rng.standard_normal((K, N)).astype(b_dt)
        bias = rng.standard_normal(N).astype(b_dt)
        on, off, skipped = both_ways(x, w)
        assert_same_bits(on, off)
        assert skipped > 0, (M, N, K)
        ref = _core._ref.gemm(x, w)
        tol = 1e-4 if kind == "float32" else 1e-10
        np.testing.assert_allclose(on, ref, rtol=tol, atol=tol * np.abs(ref).max())
        # the fused epilogues: bias, the ReLU and its mask
        on, off, _ = both_ways(x, w, bias, relu=True)
        assert_same_bits(on, off)


# (M, N, K) whose op(B) is small enough (512 KB in float64) for the rows of x to run one at a time,
# with at least four vectors a row (64 float32 columns with AVX-512): the book's first layer in
# float64, M odd (a row runs alone, not beside another), 65 (64 columns and one past them: in the
# row's vectors or dot_edge, by path), 80 float64 columns (ten vectors: a second group with
# AVX-512), and K = 1024 (four K blocks with AVX2 and the generic path).
ROW_SHAPES = [(100, 64, 784), (37, 64, 784), (33, 65, 784), (50, 80, 784), (45, 64, 1024)]


@pytest.mark.parametrize("kind", KINDS)
def test_rows_one_at_a_time(cpu_path, kind):
    """With few columns each digit-like row of x runs over its own nonzero pixels alone
    (gemm_sparse_rows): every zero of x is skipped, row by row (a tile of rows would skip only the
    pixels all its rows leave at zero), and the bits are those of the full product, with each
    epilogue, and of every thread count."""
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(13)
    before = _core.get_num_threads()
    try:
        book = [(100, 50, 784)] if b_dt == np.float64 else []  # (float32: three vectors, tiles)
        for M, N, K in ROW_SHAPES + book:
            x = digit_like(M, seed=M + N, side=math.isqrt(K), dtype=a_dt)
            x[::3, ::2] = 0  # (so that a row uses under half the pixels a tile does, in every K block)
            w = rng.standard_normal((K, N)).astype(b_dt)
            bias = rng.standard_normal(N).astype(b_dt)
            zero = rng.random((M, N)) < 0.3
            upd = rng.standard_normal((M, N)).astype(b_dt)
            runs = []
            for threads in (1, 2, 3):
                _core.set_num_threads(threads)
                on, off, skipped = both_ways(x, w)
                assert_same_bits(on, off)
                assert skipped == (x == 0).sum(), (M, N, K, threads)
                for kwargs in ({"bias": bias, "relu": True}, {"zero_mask": zero}):
                    assert_same_bits(*both_ways(x, w, **kwargs)[:2])
                u_on, u_off = upd.copy(), upd.copy()
                before_skip = _core._set_skip_zeros(True)
                try:
                    g_on = _core._gemm(x, w, update=u_on, update_rate=0.1)
                    _core._set_skip_zeros(False)
                    g_off = _core._gemm(x, w, update=u_off, update_rate=0.1)
                finally:
                    _core._set_skip_zeros(before_skip)
                assert_same_bits((g_on, u_on), (g_off, u_off))
                runs.append(on)
            for r in runs[1:]:
                assert_same_bits(r, runs[0])
            ref = _core._ref.gemm(x, w)
            tol = 1e-4 if kind == "float32" else 1e-10
            np.testing.assert_allclose(runs[0], ref, rtol=tol, atol=tol * np.abs(ref).max())
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_b_one_row_at_a_time(cpu_path, kind):
    """The rows one at a time check op(B) for infinities and NaNs inside their parallel region, a
    part per chunk, and run again over every k when one is there: an infinity or a NaN in the first
    or the last row of op(B), at a pixel no image uses (NaN down its column only then), gives the
    bits of the full product, with the ReLU's output and mask, and nothing counts as skipped."""
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(14)
    before = _core.get_num_threads()
    try:
        M, N, K = 100, 64, 784
        x = digit_like(M, seed=3, dtype=a_dt)
        x[::3, ::2] = 0
        x[:, [0, K - 1]] = 0
        w = rng.standard_normal((K, N)).astype(b_dt)
        assert both_ways(x, w)[2] == (x == 0).sum(), "the rows run one at a time while op(B) is finite"
        bias = rng.standard_normal(N).astype(b_dt)
        for threads in (1, 2, 3):
            _core.set_num_threads(threads)
            for k, value in ((0, np.inf), (K - 1, np.nan), (0, -np.inf)):
                wk = w.copy()
                wk[k, 5] = value
                on, off, skipped = both_ways(x, wk, bias, relu=True)
                assert skipped == 0, (threads, k, value)
                assert_same_bits(on, off)
                assert np.isnan(on[0][:, 5]).all() and np.isfinite(np.delete(on[0], 5, axis=1)).all()
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("n", [64, 65, 80])
@pytest.mark.parametrize("kind", KINDS)
def test_negative_zero_sums_one_row_at_a_time(cpu_path, kind, n):
    """test_negative_zero_sums for rows run one at a time: row 0's only term, a denormal times
    -0.01, rounds to -0.0, and the full sum's zero terms after it make it +0.0; the row must run
    again over every k and give +0.0 too."""
    a_dt, b_dt = dtypes(kind)
    M, K = 100, 784
    x = digit_like(M, seed=14, dtype=a_dt)
    x[0] = 0
    x[0, 7] = 3 * np.finfo(a_dt).smallest_subnormal
    w = np.abs(np.random.default_rng(0).standard_normal((K, n))).astype(b_dt) + 0.5
    w[7] = -0.01
    on, off, skipped = both_ways(x, w)
    assert skipped == (x == 0).sum()  # the rows ran one at a time
    assert_same_bits(on, off)
    if a_dt == b_dt == np.float32:  # the product underflows: the full sum ends at +0.0
        assert not np.signbit(off[0]).any() and (off[0] == 0).all()


@pytest.mark.parametrize("trans_b", [False, True], ids=["N", "T"])
@pytest.mark.parametrize("kind", KINDS)
def test_x_transposed_times_dout_same_bits(cpu_path, kind, trans_b):
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(2)
    for M, N, K in XT_SHAPES:
        x = digit_like(K, seed=K, dtype=a_dt)  # (images, pixels): op(A) = x^T is (pixels, images)
        dout = rng.standard_normal((N, K) if trans_b else (K, N)).astype(b_dt)
        on, off, skipped = both_ways(x, dout, trans_a=True, trans_b=trans_b)
        assert_same_bits(on, off)
        assert skipped > 0 or N < 32, (M, N, K)
        # the SGD update fused into dW's store, and the zero mask of a ReLU backward
        w = rng.standard_normal((M, N)).astype(b_dt)
        w_on, w_off = w.copy(), w.copy()
        before = _core._set_skip_zeros(True)
        try:
            g_on = _core._gemm(x, dout, trans_a=True, trans_b=trans_b, update=w_on, update_rate=0.1)
            _core._set_skip_zeros(False)
            g_off = _core._gemm(x, dout, trans_a=True, trans_b=trans_b, update=w_off, update_rate=0.1)
        finally:
            _core._set_skip_zeros(before)
        assert_same_bits(g_on, g_off)
        assert_same_bits(w_on, w_off)
        zero = rng.random((M, N)) < 0.5
        assert_same_bits(*both_ways(x, dout, trans_a=True, trans_b=trans_b, zero_mask=zero)[:2])


@pytest.mark.parametrize("kind", KINDS)
def test_odd_zeros(cpu_path, kind):
    """Negative zeros, whole zero rows and columns, an all-zero A, NaN and inf among the zeros of
    A (they count as used), denormals: the same bits either way."""
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(3)
    M, N, K = 120, 50, 784
    w = rng.standard_normal((K, N)).astype(b_dt)
    cases = {}
    x = digit_like(M, seed=5, dtype=a_dt)
    x[x == 0] = -0.0 * (rng.random((x == 0).sum()) < 0.5)
    cases["negative zeros"] = x
    x = digit_like(M, seed=6, dtype=a_dt)
    x[:, 300:500] = 0
    x[10:40] = 0
    cases["zero rows and columns"] = x
    cases["all zero"] = np.zeros((M, K), a_dt)
    x = digit_like(M, seed=7, dtype=a_dt)
    x[3, 5], x[50, 700], x[99, 0] = np.nan, np.inf, -np.inf
    cases["nan and inf"] = x
    x = digit_like(M, seed=8, dtype=a_dt)
    x[x != 0] = np.finfo(a_dt).smallest_subnormal * 3
    cases["denormals"] = x
    x = digit_like(M, seed=9, dtype=a_dt)
    x[::2] = rng.standard_normal((M // 2 + M % 2, K))  # every other row dense: tiles mixed
    cases["half dense"] = x
    x = digit_like(M, seed=12, dtype=a_dt)
    second_half = np.arange(M) % 14 >= 7  # a tile of 14 rows runs in two parts of 7 (transposed A)
    x[second_half] = rng.standard_normal((second_half.sum(), K))
    cases["one part of a tile dense"] = x
    for name, x in cases.items():
        for trans_a in (False, True):
            a = np.ascontiguousarray(x.T) if trans_a else x
            on, off, _ = both_ways(a, w, trans_a=trans_a)
            np.testing.assert_array_equal(on, off, err_msg=name)  # NaN where NaN
            assert_same_bits(np.nan_to_num(on), np.nan_to_num(off))


@pytest.mark.parametrize("n", [50, 34, 16])
@pytest.mark.parametrize("kind", KINDS)
def test_negative_zero_sums(cpu_path, kind, n):
    """A skipped k adds a zero product, and +0.0 turns a -0.0 sum into +0.0: row 0's only term
    is a denormal times -0.01, which rounds to -0.0, and every k after it is unused by the whole
    tile, each adding +0.0 * (w > 0) = +0.0 in the full sum. Skipping must give +0.0 too (it gave
    -0.0 in float32 before the kernels checked their sums for -0.0). n = 50: the microkernel and
    the few columns past its vectors (dot_edge for x·W, edge_columns for x^T·W); 34 the same past
    two-vector tiles; 16 whole vectors only."""
    a_dt, b_dt = dtypes(kind)
    M, K = 100, 300
    x = np.zeros((M, K), a_dt)
    x[1:, :8] = 1.0
    x[0, 7] = 3 * np.finfo(a_dt).smallest_subnormal
    w = np.abs(np.random.default_rng(0).standard_normal((K, n))).astype(b_dt) + 0.5
    w[7] = -0.01
    for trans_a in (False, True):
        a = np.ascontiguousarray(x.T) if trans_a else x
        on, off, skipped = both_ways(a, w, trans_a=trans_a)
        assert skipped > 0
        assert_same_bits(on, off)
        if a_dt == b_dt == np.float32:  # the product underflows: the full sum ends at +0.0
            assert not np.signbit(off[0]).any() and (off[0] == 0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_non_finite_b_runs_every_k(cpu_path, kind):
    """0·inf is NaN: an infinity or a NaN anywhere in op(B) turns skipping off for the call, so the
    rows of C whose x is zero at that k get the NaN the full product gives."""
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(4)
    M, N, K = 100, 50, 784
    x = digit_like(M, seed=10, dtype=a_dt)
    unused = np.flatnonzero((x == 0).all(axis=0))
    assert unused.size, "the test needs a pixel no image uses"
    for value in (np.inf, -np.inf, np.nan):
        for trans_b in (False, True):
            w = rng.standard_normal((K, N)).astype(b_dt)
            w[unused[0], 7] = value
            b = np.ascontiguousarray(w.T) if trans_b else w
            on, off, skipped = both_ways(x, b, trans_b=trans_b)
            assert skipped == 0
            assert np.isnan(on[:, 7]).all()
            np.testing.assert_array_equal(on, off)
            assert np.isfinite(np.delete(on, 7, axis=1)).all()


def test_dense_operands_are_not_skipped():
    """Dense data (no zeros, or a ReLU's half zeros scattered) never triggers skipping."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((300, 784))
    b = rng.standard_normal((784, 50))
    for x in (a, np.maximum(a, 0)):
        on, off, skipped = both_ways(x, b)
        assert skipped == 0
        assert_same_bits(on, off)


@pytest.mark.parametrize("kind", KINDS)
def test_skipping_does_not_depend_on_thread_count(cpu_path, kind):
    a_dt, b_dt = dtypes(kind)
    rng = np.random.default_rng(6)
    before = _core.get_num_threads()
    try:
        for M, N, K in [(100, 50, 784), (300, 1024, 784), (50, 26, 784)]:
            x = digit_like(M, seed=M + 1, dtype=a_dt)
            w = rng.standard_normal((K, N)).astype(b_dt)
            dout = rng.standard_normal((M, N)).astype(b_dt)
            results = []
            for n in (1, 2, 3):
                _core.set_num_threads(n)
                results.append((_core._gemm(x, w, relu=True), _core._gemm(x, dout, trans_a=True)))
            for r in results[1:]:
                assert_same_bits(r, results[0])
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_train_step_same_bits(cpu_path, dtype):
    """The one-call step of TwoLayerNet on digit-like data: gradients, loss and updated weights."""
    from bpfast.nets import TwoLayerNet

    x = digit_like(100, seed=11)
    t = np.random.default_rng(7).integers(0, 10, 100)
    nets, grads, losses = [], [], []
    before = _core._set_skip_zeros(True)
    try:
        for on in (True, False):
            _core._set_skip_zeros(on)
            np.random.seed(8)
            net = TwoLayerNet(784, 50, 10, dtype=dtype)
            grads.append(net.gradient(x, t))
            losses.append(net.train_step(x, t, 0.1))
            nets.append(net)
    finally:
        _core._set_skip_zeros(before)
    for key in ("W1", "b1", "W2", "b2"):
        assert_same_bits(grads[0][key], grads[1][key])
        assert_same_bits(nets[0].params[key], nets[1].params[key])
    assert losses[0] == losses[1]


def test_environment_turns_it_off():
    """BPFAST_SKIP_ZEROS=0 at start-up: `bpfast info` says off and nothing is skipped."""
    script = (
        "import numpy as np; from bpfast import _core; from test_zero_skipping import digit_like; "
        "x = digit_like(100); w = np.ones((784, 50)); _core._gemm(x, w); "
        "print(_core.info()['gemm_zero_skipping'], _core._skipped_ks())"
    )
    tests_dir = str(Path(__file__).parent)
    for value, expected in (("0", "off 0"), ("off", "off 0"), ("1", "on "), (None, "on ")):
        env = {"BPFAST_SKIP_ZEROS": value} if value is not None else {}
        done = run_python(["-c", f"import sys; sys.path.insert(0, {tests_dir!r}); " + script], **env)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(expected), (value, done.stdout)
        if expected == "on ":
            assert int(done.stdout.split()[1]) > 0
