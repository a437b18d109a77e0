// Bindings of the layer kernels (and the GEMM, for tests and benchmarks).
//
// Every function: take the arrays; check dtype (TypeError), shapes (ValueError naming both) and
// flags; make aligned C-contiguous copies of inputs that need them and allocate fresh outputs;
// release the GIL and call the kernel. The private submodule _ref holds the _ref twins.
#include <cstdint>
#include <string>

#include "arrays.hpp"
#include "bpfast/gemm.hpp"
#include "bpfast/ops.hpp"
#include "register.hpp"

namespace bpfast::bindings {
namespace {

using ssize = py::ssize_t;

// affine_forward: x is (N,D), W is (D,M), b is (M,) or (1,M); out is (N,M)
py::array affine_forward_py(const py::array& x, const py::array& W, const py::array& b, bool ref) {
    const char* fn = "affine_forward";
    return with_float_dtype(fn, {{"x", x}, {"W", W}, {"b", b}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        expect_ndim(fn, {"x", x}, 2);
        expect_ndim(fn, {"W", W}, 2);
        if (x.shape(1) != W.shape(0)) shape_error(fn, {"x", x}, {"W", W});
        const ssize N = x.shape(0), D = x.shape(1), M = W.shape(1);
        const bool b_ok = (b.ndim() == 1 && b.shape(0) == M) || (b.ndim() == 2 && b.shape(0) == 1 && b.shape(1) == M);
        if (!b_ok) shape_error(fn, {"W", W}, {"b", b});
        auto xc = contiguous<T>(x), Wc = contiguous<T>(W), bc = contiguous<T>(b);
        py::array_t<T> out({N, M});
        T* o = out.mutable_data();
        const T *px = xc.data(), *pW = Wc.data(), *pb = bc.data();
        without_gil([=] { (ref ? affine_forward_ref<T> : affine_forward<T>)(o, px, pW, pb, N, D, M); });
        return out;
    });
}

// affine_backward: dout is (N,M), x is (N,D), W is (D,M); returns (dx (N,D) or None, dW (D,M), db (M,))
py::tuple affine_backward_py(const py::array& dout, const py::array& x, const py::array& W, bool need_dx, bool ref) {
    const char* fn = "affine_backward";
    return with_float_dtype(fn, {{"dout", dout}, {"x", x}, {"W", W}}, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        expect_ndim(fn, {"dout", dout}, 2);
        expect_ndim(fn, {"x", x}, 2);
        expect_ndim(fn, {"W", W}, 2);
        if (x.shape(1) != W.shape(0)) shape_error(fn, {"x", x}, {"W", W});
        if (dout.shape(0) != x.shape(0)) shape_error(fn, {"dout", dout}, {"x", x});
        if (dout.shape(1) != W.shape(1)) shape_error(fn, {"dout", dout}, {"W", W});
        const ssize N = x.shape(0), D = x.shape(1), M = W.shape(1);
        auto doutc = contiguous<T>(dout), xc = contiguous<T>(x), Wc = contiguous<T>(W);
        py::object dx_obj = py::none();
        T* pdx = nullptr;
        if (need_dx) {
            py::array_t<T> dx({N, D});
            pdx = dx.mutable_data();
            dx_obj = dx;
        }
        py::array_t<T> dW({D, M}), db(M);
        T *pdW = dW.mutable_data(), *pdb = db.mutable_data();
        const T *pdout = doutc.data(), *px = xc.data(), *pW = Wc.data();
        without_gil([=] {
            (ref ? affine_backward_ref<T> : affine_backward<T>)(pdx, pdW, pdb, pdout, px, pW, N, D, M);
        });
        return py::make_tuple(dx_obj, dW, db);
    });
}

// _gemm: op(a) is (M,K), op(b) is (K,N), bias is (N,) or None; returns op(a)·op(b) + bias, (M,N)
py::array gemm_py(const py::array& a, const py::array& b, const py::object& bias_obj, bool trans_a, bool trans_b,
                  bool ref) {
    const char* fn = "gemm";
    std::vector<Arg> args{{"a", a}, {"b", b}};
    const bool has_bias = !bias_obj.is_none();
    py::array bias = has_bias ? py::array::ensure(bias_obj) : py::array();
    if (has_bias) args.push_back({"bias", bias});
    return with_float_dtype(fn, args, [&](auto tag) -> py::array {
        using T = decltype(tag);
        expect_ndim(fn, {"a", a}, 2);
        expect_ndim(fn, {"b", b}, 2);
        const ssize M = a.shape(trans_a ? 1 : 0), K = a.shape(trans_a ? 0 : 1);
        const ssize N = b.shape(trans_b ? 0 : 1);
        if (b.shape(trans_b ? 1 : 0) != K) shape_error(fn, {"a", a}, {"b", b});
        if (has_bias && (bias.ndim() != 1 || bias.shape(0) != N)) shape_error(fn, {"b", b}, {"bias", bias});
        auto ac = contiguous<T>(a), bc = contiguous<T>(b);
        py::array_t<T> biasc = has_bias ? contiguous<T>(bias) : py::array_t<T>(0);
        py::array_t<T> out({M, N});
        T* o = out.mutable_data();
        const T *pa = ac.data(), *pb = bc.data(), *pbias = has_bias ? biasc.data() : nullptr;
        without_gil([=] { (ref ? gemm_ref<T> : gemm<T>)(o, pa, pb, pbias, M, N, K, trans_a, trans_b); });
        return out;
    });
}

std::pair<py::array, py::array> relu_forward_py(const py::array& x) {
    return with_float_dtype("relu_forward", {{"x", x}}, [&](auto tag) -> std::pair<py::array, py::array> {
        using T = decltype(tag);
        auto xc = contiguous<T>(x);
        py::array_t<T> out(shape_vector(x));
        py::array_t<bool> mask(shape_vector(x));
        T* o = out.mutable_data();
        bool* m = mask.mutable_data();
        const T* px = xc.data();
        const ssize n = x.size();
        without_gil([=] { relu_forward<T>(o, m, px, n); });
        return {out, mask};
    });
}

void relu_backward_py(py::array dout, const py::array& mask) {
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
        without_gil([=] { relu_backward<T>(d, m, n); });
    });
}

py::array sigmoid_forward_py(const py::array& x) {
    return with_float_dtype("sigmoid_forward", {{"x", x}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        auto xc = contiguous<T>(x);
        py::array_t<T> out(shape_vector(x));
        T* o = out.mutable_data();
        const T* px = xc.data();
        const ssize n = x.size();
        without_gil([=] { sigmoid_forward<T>(o, px, n); });
        return out;
    });
}

py::array sigmoid_backward_py(const py::array& dout, const py::array& out) {
    const char* fn = "sigmoid_backward";
    return with_float_dtype(fn, {{"dout", dout}, {"out", out}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        expect_same_shape(fn, {"dout", dout}, {"out", out});
        auto doutc = contiguous<T>(dout), outc = contiguous<T>(out);
        py::array_t<T> dx(shape_vector(dout));
        T* pdx = dx.mutable_data();
        const T *pdout = doutc.data(), *pout = outc.data();
        const ssize n = dout.size();
        without_gil([=] { sigmoid_backward<T>(pdx, pdout, pout, n); });
        return dx;
    });
}

// softmax along the last axis: x is (..., C)
py::array softmax_py(const py::array& x) {
    const char* fn = "softmax";
    return with_float_dtype(fn, {{"x", x}}, [&](auto tag) -> py::array {
        using T = decltype(tag);
        if (x.ndim() < 1) throw py::value_error(std::string(fn) + ": x must have at least one axis, got shape ()");
        const ssize C = x.shape(x.ndim() - 1), N = C ? x.size() / C : 0;
        auto xc = contiguous<T>(x);
        py::array_t<T> y(shape_vector(x));
        T* py_ = y.mutable_data();
        const T* px = xc.data();
        without_gil([=] { softmax<T>(py_, px, N, C); });
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

py::tuple softmax_xent_forward_py(const py::array& x, const py::array& t) {
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
            without_gil([&] { loss = softmax_xent_forward_onehot<T>(py_, px, pt, N, C); });
        } else {
            auto labels = checked_labels(fn, x, t);
            const std::int64_t* pl = labels.data();
            without_gil([&] { loss = softmax_xent_forward<T>(py_, px, pl, N, C); });
        }
        return py::make_tuple(y, py::dtype::of<T>().attr("type")(loss));
    });
}

py::array softmax_xent_backward_py(const py::array& y, const py::array& t) {
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
            without_gil([=] { softmax_xent_backward_onehot<T>(pdx, py_, pt, N, C); });
        } else {
            auto labels = checked_labels(fn, y, t);
            const std::int64_t* pl = labels.data();
            without_gil([=] { softmax_xent_backward<T>(pdx, py_, pl, N, C); });
        }
        return dx;
    });
}

// The functions that have a _ref twin, bound once on the fast path and once on the ref path.
void register_gemm_and_affine(py::module_& m, bool ref) {
    m.def(
        "affine_forward",
        [ref](const py::array& x, const py::array& W, const py::array& b) { return affine_forward_py(x, W, b, ref); },
        py::arg("x"), py::arg("W"), py::arg("b"), "x is (N,D), W is (D,M), b is (M,); returns x·W + b, (N,M).");
    m.def(
        "affine_backward",
        [ref](const py::array& dout, const py::array& x, const py::array& W, bool need_dx) {
            return affine_backward_py(dout, x, W, need_dx, ref);
        },
        py::arg("dout"), py::arg("x"), py::arg("W"), py::arg("need_dx") = true,
        "dout is (N,M), x is (N,D), W is (D,M); returns (dx (N,D) or None, dW (D,M), db (M,)).");
    m.def(
        ref ? "gemm" : "_gemm",
        [ref](const py::array& a, const py::array& b, const py::object& bias, bool trans_a, bool trans_b) {
            return gemm_py(a, b, bias, trans_a, trans_b, ref);
        },
        py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("trans_a") = false,
        py::arg("trans_b") = false, "op(a) is (M,K), op(b) is (K,N); returns op(a)·op(b) (+ bias), (M,N).");
}

}  // namespace

void register_ops(py::module_& m) {
    register_gemm_and_affine(m, false);
    py::module_ ref = m.def_submodule("_ref", "the plain _ref twins of the fast kernels (tests)");
    register_gemm_and_affine(ref, true);
    m.def("relu_forward", &relu_forward_py, py::arg("x"),
          "Any shape; returns (out, mask) with mask = x <= 0 (bool) and out = 0 where mask, else x.");
    m.def("relu_backward", &relu_backward_py, py::arg("dout"), py::arg("mask"),
          "Zeroes dout where mask, in place; dout must be writable, C-contiguous and aligned.");
    m.def("sigmoid_forward", &sigmoid_forward_py, py::arg("x"), "Any shape; returns 1 / (1 + exp(-x)).");
    m.def("sigmoid_backward", &sigmoid_backward_py, py::arg("dout"), py::arg("out"),
          "dout and out have one shape; returns dout * (1 - out) * out.");
    m.def("softmax", &softmax_py, py::arg("x"), "x is (N,C) (or (..., C)); returns the row-wise softmax.");
    m.def("softmax_xent_forward", &softmax_xent_forward_py, py::arg("x"), py::arg("t"),
          "x is (N,C), t is (N,) labels or (N,C) one-hot; returns (y, loss) with loss a NumPy scalar.");
    m.def("softmax_xent_backward", &softmax_xent_backward_py, py::arg("y"), py::arg("t"),
          "y is (N,C), t is (N,) labels or (N,C) one-hot; returns dx = (y - t) / N.");
}

}  // namespace bpfast::bindings
