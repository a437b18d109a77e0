"""Every entry point of the compiled core, called with mutated arguments.

Each entry point starts from a valid call; every argument is then mutated one way at a time
(dtype, shape, layout, special values, wrong Python type), and a seeded sample of double
mutations follows. Each call must return or raise TypeError/ValueError/MemoryError, never
crash, and never write into an input it does not own. Where a call succeeds, the fast kernel
and its ``_ref`` twin agree (the same exception type when they refuse).

Under the sanitizer build (``.ci/sanitize``) this is the test that walks the bindings'
validation paths with the most unusual arrays.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Callable, NamedTuple

import numpy as np
import pytest
from conftest import available_backends

if "cpp" not in available_backends():
    pytest.skip("the compiled core is not built here", allow_module_level=True)

from bpfast import _core  # noqa: E402 - after the skip

REFUSALS = (TypeError, ValueError, MemoryError)
rng = np.random.default_rng(7)


def normal(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


class EntryPoint(NamedTuple):
    name: str
    args: Callable[[], list]  # a valid argument list, fresh each time
    in_place: tuple[int, ...] = ()  # arguments the call may write into


ENTRY_POINTS = [
    EntryPoint("affine_forward", lambda: [normal(5, 7), normal(7, 3), normal(3)]),
    EntryPoint("affine_relu_forward", lambda: [normal(5, 7), normal(7, 3), normal(3)]),
    EntryPoint("affine_backward", lambda: [normal(5, 3), normal(5, 7), normal(7, 3), True]),
    EntryPoint("_gemm", lambda: [normal(5, 7), normal(7, 3), normal(3), False, False, True]),
    EntryPoint("relu_forward", lambda: [normal(5, 7)]),
    EntryPoint("relu_backward", lambda: [normal(5, 7), normal(5, 7) > 0], in_place=(0,)),
    EntryPoint("sigmoid_forward", lambda: [normal(5, 7)]),
    EntryPoint("sigmoid_backward", lambda: [normal(5, 7), normal(5, 7)]),
    EntryPoint("softmax", lambda: [normal(5, 7)]),
    EntryPoint("softmax_xent_forward", lambda: [normal(5, 7), np.array([0, 6, 2, 2, 1])]),
    EntryPoint("softmax_xent_backward", lambda: [normal(5, 7), np.eye(7)[[0, 6, 2, 2, 1]]]),
    EntryPoint("two_layer_gradient", lambda: [normal(5, 7), np.array([0, 2, 1, 1, 0]), normal(7, 4), normal(4), normal(4, 3), normal(3)]),
    EntryPoint(
        "two_layer_train_step",
        lambda: [normal(5, 7, dtype=np.float32), np.array([0, 2, 1, 1, 0]), normal(7, 4), normal(4), normal(4, 3), normal(3), 0.1],
        in_place=(2, 3, 4, 5),
    ),
    EntryPoint("_exp", lambda: [normal(5, 7)]),
]


def misaligned(a: np.ndarray) -> np.ndarray:
    buffer = bytearray(a.nbytes + 1)
    view = np.frombuffer(buffer, dtype=a.dtype, offset=1, count=a.size).reshape(a.shape)
    view[...] = a
    return view


def read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.flags.writeable = False
    return a


def with_special(a: np.ndarray, value) -> np.ndarray:
    a = a.copy()
    if a.size:
        a.flat[a.size // 2] = value
    return a


def resized(a: np.ndarray, axis: int, delta: int) -> np.ndarray:
    shape = list(a.shape)
    shape[axis] = max(shape[axis] + delta, 0)
    return np.resize(a, shape) if all(shape) else np.zeros(shape, a.dtype)


ARRAY_MUTATIONS: dict[str, Callable[[np.ndarray], Any]] = {
    **{f"dtype-{d}": (lambda d: lambda a: a.astype(d))(d) for d in ("f2", "f4", "f8", ">f8", ">f4", "i4", "i8", "u1", "?", "c16", "g")},
    "dtype-object": lambda a: a.astype(object),
    "dtype-str": lambda a: a.astype(str),
    "transposed": lambda a: np.ascontiguousarray(a.T).T,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2] if a.ndim else a,
    "negative-stride": lambda a: np.flip(np.flip(a).copy()),
    "read-only": read_only,
    "misaligned": misaligned,
    "broadcast": lambda a: np.broadcast_to(a[:1], a.shape) if a.ndim else a,
    "nan": lambda a: with_special(a, np.nan) if a.dtype.kind == "f" else a,
    "inf": lambda a: with_special(a, -np.inf) if a.dtype.kind == "f" else a,
    "huge": lambda a: with_special(a, 2**40 if a.dtype.kind in "iu" else np.finfo(a.dtype).max if a.dtype.kind == "f" else 1),
    "negative": lambda a: with_special(a, -1 if a.dtype.kind != "b" else False),
    "add-axis": lambda a: a[..., None],
    "drop-axis": lambda a: a[0] if a.ndim else a,
    "scalar": lambda a: a.ravel()[0] if a.size else np.float64(0),
    "first-axis-0": lambda a: resized(a, 0, -a.shape[0]) if a.ndim else a,
    "first-axis+1": lambda a: resized(a, 0, 1) if a.ndim else a,
    "last-axis-1": lambda a: resized(a, -1, -1) if a.ndim else a,
    "last-axis-0": lambda a: resized(a, -1, -a.shape[-1]) if a.ndim else a,
    "last-axis+1": lambda a: resized(a, -1, 1) if a.ndim else a,
    "list": lambda a: a.tolist(),
    "none": lambda a: None,
    "string": lambda a: "1.0",
}
SCALAR_MUTATIONS: dict[str, Any] = {"none": None, "string": "x", "huge-int": 2**70, "nan": float("nan"), "array": np.ones(2)}


def mutations(value) -> dict[str, Callable[[Any], Any]]:
    if isinstance(value, np.ndarray):
        return ARRAY_MUTATIONS
    return {name: (lambda v: lambda _: v)(v) for name, v in SCALAR_MUTATIONS.items()}


def call(fn, args: list, in_place: tuple[int, ...]):
    """``fn(*args)``: ('ok', result) or ('refused', exception type); inputs it must not write, unchanged."""
    snapshots = {i: a.copy() for i, a in enumerate(args) if isinstance(a, np.ndarray) and (i not in in_place or not a.flags.writeable)}
    try:
        with np.errstate(all="ignore"):
            outcome = ("ok", fn(*args))
    except REFUSALS as exc:
        outcome = ("refused", type(exc))
    for i, before in snapshots.items():
        assert same_contents(args[i], before), f"argument {i} was written"
    return outcome


def same_contents(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit (NaN payloads included); object arrays by identity of their items."""
    if a.dtype == object:
        return all(x is y for x, y in zip(a.flat, b.flat))
    return np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def mutated(args: list, position: int, mutation: str) -> bool:
    """Apply ``mutation`` to ``args[position]`` in place; False when it does not apply to that value."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            args[position] = mutations(args[position])[mutation](args[position])
    except (TypeError, ValueError, IndexError, OverflowError, Warning):
        return False  # e.g. a string array cast back to float, or complex to real
    return True


def flat_arrays(result) -> list[np.ndarray]:
    if isinstance(result, (tuple, list)):
        return [a for item in result for a in flat_arrays(item)]
    return [] if result is None else [np.asarray(result)]


def own_copies(args: list, in_place: tuple[int, ...]) -> list:
    """``args`` with each writable in-place argument copied, so two calls start from the same values."""
    return [a.copy() if i in in_place and isinstance(a, np.ndarray) and a.flags.writeable else a for i, a in enumerate(args)]


def check(entry: EntryPoint, args: list):
    fast = getattr(_core, entry.name)
    ref = getattr(_core._ref, entry.name.lstrip("_"), None)
    fast_args = own_copies(args, entry.in_place)
    status, fast_result = call(fast, fast_args, entry.in_place)
    if ref is None:
        return
    ref_args = own_copies(args, entry.in_place)
    ref_status, ref_result = call(ref, ref_args, entry.in_place)
    assert status == ref_status, f"fast {status} {fast_result!r} but _ref {ref_status} {ref_result!r}"
    if status == "refused":
        assert issubclass(fast_result, ref_result) or issubclass(ref_result, fast_result), (fast_result, ref_result)
        return
    got = flat_arrays(fast_result) + [a for i, a in enumerate(fast_args) if i in entry.in_place]
    expected = flat_arrays(ref_result) + [a for i, a in enumerate(ref_args) if i in entry.in_place]
    for g, e in zip(got, expected, strict=True):
        assert g.dtype == e.dtype and g.shape == e.shape
        tol = 1e-4 if g.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(g, e, rtol=tol, atol=tol, equal_nan=True)


SINGLE = [
    (entry, position, mutation)
    for entry in ENTRY_POINTS
    for position, value in enumerate(entry.args())
    for mutation in mutations(value)
]


@pytest.mark.parametrize(
    "entry, position, mutation", SINGLE, ids=[f"{e.name}-arg{p}-{m}" for e, p, m in SINGLE]
)
def test_one_mutation(entry, position, mutation):
    args = entry.args()
    assert mutated(args, position, mutation)
    check(entry, args)


@pytest.mark.parametrize("seed", range(8))
def test_random_double_mutations(seed):
    """300 calls per seed, each with two arguments (or one twice) mutated."""
    chooser = random.Random(seed)
    for _ in range(300):
        entry = chooser.choice(ENTRY_POINTS)
        args = entry.args()
        for position in (chooser.randrange(len(args)), chooser.randrange(len(args))):
            mutated(args, position, chooser.choice(list(mutations(args[position]))))
        check(entry, args)


@pytest.mark.parametrize("n", [0, -1, -(2**31), 2**31, 2**40])
def test_thread_count_extremes_are_refused_or_clamped(n):
    before = _core.get_num_threads()
    try:
        try:
            _core.set_num_threads(n)
        except REFUSALS:
            pass
        assert _core.get_num_threads() >= 1
        x = normal(300, 200)
        np.testing.assert_allclose(_core.softmax(x), _core._ref.softmax(x), rtol=1e-12)
    finally:
        _core.set_num_threads(before)


@pytest.mark.parametrize("value", ["avx1024", "", None, 3, "GENERIC"])
def test_unknown_cpu_path_is_harmless(value):
    before = _core.info()["kernel_path"]
    try:
        try:
            _core._set_cpu_path(value)
        except REFUSALS:
            pass
        a, b = normal(9, 33), normal(33, 17)
        np.testing.assert_allclose(_core._gemm(a, b), a @ b, rtol=1e-12)
    finally:
        _core._set_cpu_path(before)


def test_entry_points_are_all_covered():
    """A new binding must join ENTRY_POINTS (or the list of hooks below, with a reason)."""
    hooks = {"info", "get_num_threads", "set_num_threads", "_set_cpu_path", "_gemm_backend", "_pool_selftest", "_set_blas_gemm",
             "_peak_gflops", "_set_skip_zeros", "_skipped_ks",  # (these two: test_zero_skipping.py)
             "_num_threads_env_problem"}  # (test_threads.py)
    public = {name for name in dir(_core) if callable(getattr(_core, name)) and not name.startswith("__")}
    public -= {"NotInPlaceError"}
    assert public - hooks == {entry.name for entry in ENTRY_POINTS}



@pytest.mark.parametrize("args", [(-1, 1), (2**40, 1), (4, -1), ("4", 1), (None, None), (5000, 1, True)])
def test_pool_selftest_refuses_bad_counts(args):
    with pytest.raises((TypeError, ValueError)):
        _core._pool_selftest(*args)


@pytest.mark.parametrize(
    "args", [("float32", -1.0), ("float32", 1e9), ("float32", float("inf")), ("float64", "0.1"), (None,), ("f", 0.1), (np.float32, 0.1)]
)
def test_peak_gflops_refuses_bad_arguments(args):
    with pytest.raises((TypeError, ValueError)):
        _core._peak_gflops(*args)


@pytest.mark.parametrize("value", ["yes", 12345, None, [1]])
def test_blas_hook_takes_no_addresses(value):
    """The BLAS escape hatch finds SciPy's functions itself: no argument is ever a pointer."""
    before = _core._gemm_backend()
    try:
        try:
            _core._set_blas_gemm(value)
        except (TypeError, ImportError):
            pass
        a, b = normal(9, 33), normal(33, 17)
        np.testing.assert_allclose(_core._gemm(a, b), a @ b, rtol=1e-12)
    finally:
        _core._set_blas_gemm(before == "blas")
