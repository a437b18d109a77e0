// Bindings of the elementwise and row-wise kernels: ReLU, sigmoid, softmax, softmax with loss.
//
// Every function: take the arrays; check dtype (TypeError), shapes (ValueError naming both) and
// flags; make aligned C-contiguous copies of inputs that need them and allocate fresh outputs;
// release the GIL and call the kernel.
#include <cstdint>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "bpfast/ops.hpp"
#include "register.hpp"

namespace bpfast::bindings {
namespace {

using ssize = py::ssize_t;

std::pair<py::array, py::array> relu_forward_py(const py::array& x, bool ref) {
    return with_float_dtype("relu_forward", {{"x", x}}, [&](auto tag) -> std::pair<py::array, py::array> {
        using T = decltype(tag);
        auto xc = contiguous<T>(x);
        py::array_t<T> out(shape_vector(x));
        py::array_t<bool> mask(shape_vector(x));
        T* o = out.mutable_data();
        bool* m = mask.mutable_data();
        const T* px = xc.data();
        const ssize n = x.size();
        without_gil([=] { (ref ? relu_forward_ref<T> : relu_forward<T>)(o, m, px, n); });
        return {out, mask};
    });
}

void relu_backward_py(py::array dout, const py::array& mask, bool ref) {
    const char* fn = "relu_backward";
    with_float_dtype(fn, {{"dout", dout}}, [&](auto tag) {
        using T = decltype(tag);
        if (!py::isinstance<py::array_t<bool>>(mask))
            throw py::type_error(std::string(fn) + ": mask has dtype " + dtype_of(mask) + "; expected bool");
        expect_same_shape(fn, {"dout", dout}, {"mask", mask});
        if (!dout.writeable()) throw py::value_error(std::string(fn) + ": dout is read-only; it is zeroed in place");
        if (!is_c_aligned(dout))
            throw py::value_error(std::string(fn) +
                                  ": dout must be C-contiguous and aligned to be zeroed in place "
                                  "(bpfast.backends.cpp falls back to np.putmask)");
        auto maskc = contiguous<bool>(mask);
        T* d = static_cast<T*>(dout.mutable_data());
        const bool* m = maskc.data();
        const ssize n = dout.size();
        without_gil([=] { (ref ? relu_backward_ref<T> : relu_backward<T>)(d, m, n); });
    });
}

// out = kernel(x) elementwise, any shape; pick(tag) gives the kernel for T = decltype(tag)
template <class Pick>
py::array unary_py(const char* fn, const py::array& x, Pick pick) {
    return with_float_dtype(fn, {{"x", x}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        void (*kernel)(T*, const T*, ptrdiff_t) = pick(tag);
        auto xc = contiguous<T>(x);
        py::array_t<T> out(shape_vector(x));
        T* o = out.mutable_data();
        const T* px = xc.data();
        const ssize n = x.size();
        without_gil([=] { kernel(o, px, n); });
        return out;
    });
}

py::array sigmoid_forward_py(const py::array& x, bool ref) {
    return unary_py("sigmoid_forward", x, [ref](auto tag) {
        using T = decltype(tag);
        return ref ? sigmoid_forward_ref<T> : sigmoid_forward<T>;
    });
}

py::array sigmoid_backward_py(const py::array& dout, const py::array& out, bool ref) {
    const char* fn = "sigmoid_backward";
    return with_float_dtype(fn, {{"dout", dout}, {"out", out}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        expect_same_shape(fn, {"dout", dout}, {"out", out});
        auto doutc = contiguous<T>(dout), outc = contiguous<T>(out);
        py::array_t<T> dx(shape_vector(dout));
        T* pdx = dx.mutable_data();
        const T *pdout = doutc.data(), *pout = outc.data();
        const ssize n = dout.size();
        without_gil([=] { (ref ? sigmoid_backward_ref<T> : sigmoid_backward<T>)(pdx, pdout, pout, n); });
        return dx;
    });
}

// _exp: bpfast's vector exp, any shape (a test hook for its accuracy)
py::array exp_py(const py::array& x) {
    return unary_py("exp", x, [](auto tag) { return exp_elementwise<decltype(tag)>; });
}

// softmax along the last axis: x is (..., C)
py::array softmax_py(const py::array& x, bool ref) {
    const char* fn = "softmax";
    return with_float_dtype(fn, {{"x", x}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        if (x.ndim() < 1) throw py::value_error(std::string(fn) + ": x must have at least one axis, got shape ()");
        const ssize C = x.shape(x.ndim() - 1), N = C ? x.size() / C : 0;
        auto xc = contiguous<T>(x);
        py::array_t<T> y(shape_vector(x));
        T* py_ = y.mutable_data();
        const T* px = xc.data();
        without_gil([=] { (ref ? softmax_ref<T> : softmax<T>)(py_, px, N, C); });
        return y;
    });
}

// Labels t (N,) of any integer dtype, as int64, each checked to lie in [0, C).
py::array_t<std::int64_t> checked_labels(const char* fn, const py::array& x, const py::array& t) {
    const char kind = t.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(fn) + ": labels t have dtype " + dtype_of(t) + "; expected an integer dtype");
    if (t.shape(0) != x.shape(0)) shape_error(fn, {"x", x}, {"t", t});
    auto labels = contiguous<std::int64_t>(t);
    const std::int64_t* p = labels.data();
    const ssize C = x.shape(1);
    for (ssize i = 0; i < labels.size(); ++i)
        if (p[i] < 0 || p[i] >= C)
            throw py::value_error(std::string(fn) + ": label " + std::to_string(p[i]) + " at index " +
                                  std::to_string(i) + " is outside [0, " + std::to_string(C) + ")");
    return labels;
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

std::vector<Arg> xent_float_args(const char* xname, const py::array& x, const py::array& t, bool onehot) {
    std::vector<Arg> args{{xname, x}};
    if (onehot) args.push_back({"t", t});
    return args;
}

py::tuple softmax_xent_forward_py(const py::array& x, const py::array& t, bool ref) {
    const char* fn = "softmax_xent_forward";
    const bool onehot = check_xent_args(fn, "x", x, t);
    return with_float_dtype(fn, xent_float_args("x", x, t, onehot), [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        const ssize N = x.shape(0), C = x.shape(1);
        if (N == 0)
            throw py::value_error(std::string(fn) + ": empty batch (x has shape " + shape_of(x) +
                                  "); the loss divides by N");
        if (C == 0 && onehot)
            throw py::value_error(std::string(fn) + ": x has no classes (shape " + shape_of(x) + ")");
        auto xc = contiguous<T>(x);
        py::array_t<T> y({N, C});
        T* py_ = y.mutable_data();
        const T* px = xc.data();
        double loss = 0;
        if (onehot) {
            auto tc = contiguous<T>(t);
            const T* pt = tc.data();
            without_gil([&] {
                loss = (ref ? softmax_xent_forward_onehot_ref<T> : softmax_xent_forward_onehot<T>)(py_, px, pt, N, C);
            });
        } else {
            auto labels = checked_labels(fn, x, t);
            const std::int64_t* pl = labels.data();
            without_gil([&] { loss = (ref ? softmax_xent_forward_ref<T> : softmax_xent_forward<T>)(py_, px, pl, N, C); });
        }
        return py::make_tuple(y, py::dtype::of<T>().attr("type")(loss));
    });
}

py::array softmax_xent_backward_py(const py::array& y, const py::array& t, bool ref) {
    const char* fn = "softmax_xent_backward";
    const bool onehot = check_xent_args(fn, "y", y, t);
    return with_float_dtype(fn, xent_float_args("y", y, t, onehot), [&](auto tag) -> py::array {
        using T = decltype(tag);
        const ssize N = y.shape(0), C = y.shape(1);
        auto yc = contiguous<T>(y);
        py::array_t<T> dx({N, C});
        T* pdx = dx.mutable_data();
        const T* py_ = yc.data();
        if (onehot) {
            auto tc = contiguous<T>(t);
            const T* pt = tc.data();
            without_gil([=] {
                (ref ? softmax_xent_backward_onehot_ref<T> : softmax_xent_backward_onehot<T>)(pdx, py_, pt, N, C);
            });
        } else {
            auto labels = checked_labels(fn, y, t);
            const std::int64_t* pl = labels.data();
            without_gil([=] { (ref ? softmax_xent_backward_ref<T> : softmax_xent_backward<T>)(pdx, py_, pl, N, C); });
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
    register_ops(m, false);
    py::module_ ref = py::hasattr(m, "_ref") ? py::reinterpret_borrow<py::module_>(m.attr("_ref"))
                                             : m.def_submodule("_ref", "the plain _ref twins of the fast kernels (tests)");
    register_ops(ref, true);
    m.def("_exp", &exp_py, py::arg("x"), "Test hook: bpfast's vector exp on the active path, any shape.");
}

}  // namespace bpfast::bindings
