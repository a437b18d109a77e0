// Bindings of the Affine kernels and the GEMM beneath them (the GEMM for tests and benchmarks).
//
// Every function: take the arrays; check dtype (TypeError), shapes (ValueError naming both) and
// flags; make aligned C-contiguous copies of inputs that need them and allocate fresh outputs;
// release the GIL and call the kernel. The private submodule _ref holds the _ref twins.
#include <string>
#include <vector>

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

void register_affine(py::module_& m) {
    register_gemm_and_affine(m, false);
    py::module_ ref = m.def_submodule("_ref", "the plain _ref twins of the fast kernels (tests)");
    register_gemm_and_affine(ref, true);
}

}  // namespace bpfast::bindings
