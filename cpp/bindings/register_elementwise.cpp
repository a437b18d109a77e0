// Bindings of the elementwise and row-wise kernels: ReLU, sigmoid, softmax, softmax with loss.
//
// Every function: take the arrays; check dtype (TypeError), shapes (ValueError naming both) and
// flags; make aligned C-contiguous copies of inputs that need them and allocate fresh outputs;
// release the GIL and call the kernel. The common case (float32 or float64 arrays that are
// already C-contiguous and aligned) is checked off the array descriptors without allocating, and
// small inputs keep the GIL: releasing and retaking it would cost more than the kernel.
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "bpfast/ops.hpp"
#include "register.hpp"

namespace bpfast::bindings {
namespace {

using ssize = py::ssize_t;
using npy = py::detail::npy_api;

// Raised (as bpfast._core.NotInPlaceError, a ValueError) when relu_backward cannot zero dout in place.
struct NotInPlace : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Kernels on fewer elements than this run with the GIL held.
constexpr ssize kReleaseGil = 16384;

template <class F>
void run_kernel(ssize work, const F& f) {
    if (work >= kReleaseGil)
        without_gil(f);
    else
        f();
}

// 1 for float32, 2 for float64 (native byte order), else 0; read off the descriptor.
int float_code(const py::array& a) {
    const py::dtype d = a.dtype();
    if (d.byteorder() == '>') return 0;
    const int num = d.num();
    return num == npy::NPY_FLOAT_ ? 1 : num == npy::NPY_DOUBLE_ ? 2 : 0;
}

// f(float{}) when every array is float32, f(double{}) when every one is float64; otherwise
// with_float_dtype raises the TypeError that names them.
template <class F, class... Rest>
auto float_dispatch(const char* fn, const F& f, const Arg& first, const Rest&... rest) {
    const int code = float_code(first.array);
    if (code != 0 && ((float_code(rest.array) == code) && ...)) {
        if (code == 1) return f(float{});
        return f(double{});
    }
    return with_float_dtype(fn, {first, rest...}, f);
}

// a, whose dtype is T, itself when C-contiguous and aligned, else an aligned C-contiguous copy.
template <class T>
py::array_t<T> c_array(const py::array& a) {
    if (is_c_aligned(a)) return py::reinterpret_borrow<py::array_t<T>>(a);
    return contiguous<T>(a);
}

std::pair<py::array, py::array> relu_forward_py(const py::array& x, bool ref) {
    return float_dispatch("relu_forward", [&](auto tag) -> std::pair<py::array, py::array> {
        using T = decltype(tag);
        auto xc = c_array<T>(x);
        py::array_t<T> out(shape_vector(x));
        py::array_t<bool> mask(shape_vector(x));
        T* o = out.mutable_data();
        bool* m = mask.mutable_data();
        const T* px = xc.data();
        const ssize n = x.size();
        run_kernel(n, [=] { (ref ? relu_forward_ref<T> : relu_forward<T>)(o, m, px, n); });
        return {out, mask};
    }, Arg{"x", x});
}

void relu_backward_py(py::array dout, const py::array& mask, bool ref) {
    const char* fn = "relu_backward";
    float_dispatch(fn, [&](auto tag) {
        using T = decltype(tag);
        expect_bool(fn, {"mask", mask});
        expect_same_shape(fn, {"dout", dout}, {"mask", mask});
        if (!dout.writeable()) throw py::value_error(std::string(fn) + ": dout is read-only; it is zeroed in place");
        if (!is_c_aligned(dout))
            throw NotInPlace(std::string(fn) +
                             ": dout must be C-contiguous and aligned to be zeroed in place "
                             "(bpfast.backends.cpp falls back to np.putmask)");
        auto maskc = c_array<bool>(mask);
        T* d = static_cast<T*>(dout.mutable_data());
        const bool* m = maskc.data();
        const ssize n = dout.size();
        run_kernel(n, [=] { (ref ? relu_backward_ref<T> : relu_backward<T>)(d, m, n); });
    }, Arg{"dout", dout});
}

// out = kernel(x) elementwise, any shape; pick(tag) gives the kernel for T = decltype(tag)
template <class Pick>
py::array unary_py(const char* fn, const py::array& x, Pick pick) {
    return float_dispatch(fn, [&](auto tag) -> py::array {
        using T = decltype(tag);
        void (*kernel)(T*, const T*, ptrdiff_t) = pick(tag);
        auto xc = c_array<T>(x);
        py::array_t<T> out(shape_vector(x));
        T* o = out.mutable_data();
        const T* px = xc.data();
        const ssize n = x.size();
        run_kernel(n, [=] { kernel(o, px, n); });
        return out;
    }, Arg{"x", x});
}

py::array sigmoid_forward_py(const py::array& x, bool ref) {
    return unary_py("sigmoid_forward", x, [ref](auto tag) {
        using T = decltype(tag);
        return ref ? sigmoid_forward_ref<T> : sigmoid_forward<T>;
    });
}

py::array sigmoid_backward_py(const py::array& dout, const py::array& out, bool ref) {
    const char* fn = "sigmoid_backward";
    return float_dispatch(fn, [&](auto tag) -> py::array {
        using T = decltype(tag);
        expect_same_shape(fn, {"dout", dout}, {"out", out});
        auto doutc = c_array<T>(dout), outc = c_array<T>(out);
        py::array_t<T> dx(shape_vector(dout));
        T* pdx = dx.mutable_data();
        const T *pdout = doutc.data(), *pout = outc.data();
        const ssize n = dout.size();
        run_kernel(n, [=] { (ref ? sigmoid_backward_ref<T> : sigmoid_backward<T>)(pdx, pdout, pout, n); });
        return dx;
    }, Arg{"dout", dout}, Arg{"out", out});
}

// _exp: bpfast's vector exp, any shape (a test hook for its accuracy)
py::array exp_py(const py::array& x) {
    return unary_py("exp", x, [](auto tag) { return exp_elementwise<decltype(tag)>; });
}

// softmax along the last axis: x is (..., C)
py::array softmax_py(const py::array& x, bool ref) {
    const char* fn = "softmax";
    return float_dispatch(fn, [&](auto tag) -> py::array {
        using T = decltype(tag);
        if (x.ndim() < 1) throw py::value_error(std::string(fn) + ": x must have at least one axis, got shape ()");
        const ssize C = x.shape(x.ndim() - 1), N = C ? x.size() / C : 0;
        auto xc = c_array<T>(x);
        py::array_t<T> y(shape_vector(x));
        T* py_ = y.mutable_data();
        const T* px = xc.data();
        run_kernel(4 * N * C, [=] { (ref ? softmax_ref<T> : softmax<T>)(py_, px, N, C); });
        return y;
    }, Arg{"x", x});
}

// Labels t (N,) for x (N,C): the row counts must agree, then the shared checks.
py::array_t<std::int64_t> checked_labels(const char* fn, const py::array& x, const py::array& t) {
    if (t.shape(0) != x.shape(0)) shape_error(fn, {"x", x}, {"t", t});
    return bindings::checked_labels(fn, t, x.shape(1));
}

// x is (N,C), t is (N,) labels or (N,C) one-hot: the shared checks; returns whether t is one-hot.
bool check_xent_args(const char* fn, const char* xname, const py::array& x, const py::array& t) {
    expect_ndim(fn, {xname, x}, 2);
    if (t.ndim() == 2) {
        expect_same_shape(fn, {xname, x}, {"t", t});
        return true;
    }
    if (t.ndim() != 1)
        throw py::value_error(std::string(fn) + ": t must be (N,) labels or (N, C) one-hot, got shape " +
                              shape_of(t));
    return false;
}

// f(tag) for the float dtype of x (and of one-hot t): the TypeError names both when they differ.
template <class F>
auto xent_dispatch(const char* fn, const char* xname, const py::array& x, const py::array& t, bool onehot,
                   const F& f) {
    if (onehot) return float_dispatch(fn, f, Arg{xname, x}, Arg{"t", t});
    return float_dispatch(fn, f, Arg{xname, x});
}

py::tuple softmax_xent_forward_py(const py::array& x, const py::array& t, bool ref) {
    const char* fn = "softmax_xent_forward";
    const bool onehot = check_xent_args(fn, "x", x, t);
    return xent_dispatch(fn, "x", x, t, onehot, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        const ssize N = x.shape(0), C = x.shape(1);
        if (N == 0)
            throw py::value_error(std::string(fn) + ": empty batch (x has shape " + shape_of(x) +
                                  "); the loss divides by N");
        if (C == 0 && onehot)
            throw py::value_error(std::string(fn) + ": x has no classes (shape " + shape_of(x) + ")");
        auto xc = c_array<T>(x);
        py::array_t<T> y({N, C});
        T* py_ = y.mutable_data();
        const T* px = xc.data();
        double loss = 0;
        if (onehot) {
            auto tc = c_array<T>(t);
            const T* pt = tc.data();
            run_kernel(4 * N * C, [&] {
                loss = (ref ? softmax_xent_forward_onehot_ref<T> : softmax_xent_forward_onehot<T>)(py_, px, pt, N, C);
            });
        } else {
            auto labels = checked_labels(fn, x, t);
            const std::int64_t* pl = labels.data();
            run_kernel(4 * N * C, [&] { loss = (ref ? softmax_xent_forward_ref<T> : softmax_xent_forward<T>)(py_, px, pl, N, C); });
        }
        return py::make_tuple(y, py::dtype::of<T>().attr("type")(loss));
    });
}

py::array softmax_xent_backward_py(const py::array& y, const py::array& t, bool ref) {
    const char* fn = "softmax_xent_backward";
    const bool onehot = check_xent_args(fn, "y", y, t);
    return xent_dispatch(fn, "y", y, t, onehot, [&](auto tag) -> py::array {
        using T = decltype(tag);
        const ssize N = y.shape(0), C = y.shape(1);
        auto yc = c_array<T>(y);
        py::array_t<T> dx({N, C});
        T* pdx = dx.mutable_data();
        const T* py_ = yc.data();
        if (onehot) {
            auto tc = c_array<T>(t);
            const T* pt = tc.data();
            run_kernel(N * C, [=] {
                (ref ? softmax_xent_backward_onehot_ref<T> : softmax_xent_backward_onehot<T>)(pdx, py_, pt, N, C);
            });
        } else {
            auto labels = checked_labels(fn, y, t);
            const std::int64_t* pl = labels.data();
            run_kernel(N * C, [=] { (ref ? softmax_xent_backward_ref<T> : softmax_xent_backward<T>)(pdx, py_, pl, N, C); });
        }
        return dx;
    });
}

// The functions that have a _ref twin, bound once on the fast path and once on the ref path.
void register_ops(py::module_& m, bool ref) {
    m.def(
        "relu_forward", [ref](const py::array& x) { return relu_forward_py(x, ref); }, py::arg("x"),
        "Any shape; returns (out, mask) with mask = x <= 0 (bool) and out = 0 where mask, else x.");
    m.def(
        "relu_backward", [ref](py::array dout, const py::array& mask) { relu_backward_py(std::move(dout), mask, ref); },
        py::arg("dout"), py::arg("mask"),
        "Zeroes dout where mask, in place; dout must be writable, C-contiguous and aligned.");
    m.def(
        "sigmoid_forward", [ref](const py::array& x) { return sigmoid_forward_py(x, ref); }, py::arg("x"),
        "Any shape; returns 1 / (1 + exp(-x)).");
    m.def(
        "sigmoid_backward",
        [ref](const py::array& dout, const py::array& out) { return sigmoid_backward_py(dout, out, ref); },
        py::arg("dout"), py::arg("out"), "dout and out have one shape; returns dout * (1 - out) * out.");
    m.def(
        "softmax", [ref](const py::array& x) { return softmax_py(x, ref); }, py::arg("x"),
        "x is (N,C) (or (..., C)); returns the row-wise softmax.");
    m.def(
        "softmax_xent_forward",
        [ref](const py::array& x, const py::array& t) { return softmax_xent_forward_py(x, t, ref); }, py::arg("x"),
        py::arg("t"), "x is (N,C), t is (N,) labels or (N,C) one-hot; returns (y, loss) with loss a NumPy scalar.");
    m.def(
        "softmax_xent_backward",
        [ref](const py::array& y, const py::array& t) { return softmax_xent_backward_py(y, t, ref); }, py::arg("y"),
        py::arg("t"), "y is (N,C), t is (N,) labels or (N,C) one-hot; returns dx = (y - t) / N.");
}

}  // namespace

void register_elementwise(py::module_& m) {
    py::register_exception<NotInPlace>(m, "NotInPlaceError", PyExc_ValueError);
    register_ops(m, false);
    py::module_ ref = py::hasattr(m, "_ref") ? py::reinterpret_borrow<py::module_>(m.attr("_ref"))
                                             : m.def_submodule("_ref", "the plain _ref twins of the fast kernels (tests)");
    register_ops(ref, true);
    m.def("_exp", &exp_py, py::arg("x"), "Test hook: bpfast's vector exp on the active path, any shape.");
}

}  // namespace bpfast::bindings
