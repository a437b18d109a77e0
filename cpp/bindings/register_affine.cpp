// Bindings of the Affine kernels and the GEMM beneath them (the GEMM for tests and benchmarks),
// plus the SciPy BLAS escape hatch's setter.
//
// Every function: take the arrays; check dtype (TypeError), shapes (ValueError naming both) and
// flags; make aligned C-contiguous copies of inputs that need them and allocate fresh outputs;
// release the GIL and call the kernel. The private submodule _ref holds the _ref twins.
// Dtypes: all float32, all float64, or float32 x (GEMM: a) with the rest float64 (the book's
// float32 data times float64 weights; x is widened inside the kernel, results are float64).
#include <cstdint>
#include <string>
#include <vector>

#include "arrays.hpp"
#include "bpfast/cache_hint.hpp"
#include "bpfast/gemm.hpp"
#include "bpfast/ops.hpp"
#include "register.hpp"

namespace bpfast::bindings {
namespace {

using ssize = py::ssize_t;

// Below this many multiply-adds a kernel runs with the GIL held: releasing and re-taking it
// costs more than the product (the GIL is released for anything that takes longer).
constexpr ssize kKeepGilFma = 16 * 1024;

template <class F>
void run_kernel(ssize fma, F&& f) {
    if (fma < kKeepGilFma)
        f();
    else
        without_gil(f);
}

// Like with_float_dtype, but also accepts `first` float32 with every other argument float64:
// calls f(T{}, TX{}) with TX the first argument's type.
template <class F>
auto with_affine_dtypes(const char* fn, const Arg& first, const std::vector<Arg>& rest, F&& f) {
    if (py::isinstance<py::array_t<float>>(first.array) && !rest.empty() &&
        py::isinstance<py::array_t<double>>(rest.front().array)) {
        bool all_double = true;
        for (const Arg& a : rest) all_double = all_double && py::isinstance<py::array_t<double>>(a.array);
        if (all_double) return f(double{}, float{});
    }
    std::vector<Arg> all;
    all.reserve(rest.size() + 1);
    all.push_back(first);
    for (const Arg& a : rest) all.push_back(a);
    return with_float_dtype(fn, all, [&](auto tag) { return f(tag, tag); });
}

// affine_forward: x is (N,D), W is (D,M), b is (M,) or (1,M); out is (N,M); with relu also the
// mask (N,M) = pre-activation <= 0
py::object affine_forward_py(const py::array& x, const py::array& W, const py::array& b, bool relu, bool ref) {
    const char* fn = relu ? "affine_relu_forward" : "affine_forward";
    return with_affine_dtypes(fn, {"x", x}, {{"W", W}, {"b", b}}, [&](auto tag, auto xtag) -> py::object {
        using T = decltype(tag);
        using TX = decltype(xtag);
        expect_ndim(fn, {"x", x}, 2);
        expect_ndim(fn, {"W", W}, 2);
        if (x.shape(1) != W.shape(0)) shape_error(fn, {"x", x}, {"W", W});
        const ssize N = x.shape(0), D = x.shape(1), M = W.shape(1);
        const bool b_ok = (b.ndim() == 1 && b.shape(0) == M) || (b.ndim() == 2 && b.shape(0) == 1 && b.shape(1) == M);
        if (!b_ok) shape_error(fn, {"W", W}, {"b", b});
        py::array_t<T> out({N, M});  // first: an impossible output fails before any input is copied
        auto xc = contiguous<TX>(x);
        auto Wc = contiguous<T>(W), bc = contiguous<T>(b);
        T* o = out.mutable_data();
        const TX* px = xc.data();
        const T *pW = Wc.data(), *pb = bc.data();
        if (!relu) {
            run_kernel(N * D * M, [=] { (ref ? affine_forward_ref<T, TX> : affine_forward<T, TX>)(o, px, pW, pb, N, D, M); });
            return std::move(out);
        }
        py::array_t<bool> mask({N, M});
        bool* pm = mask.mutable_data();
        run_kernel(N * D * M, [=] {
            (ref ? affine_relu_forward_ref<T, TX> : affine_relu_forward<T, TX>)(o, pm, px, pW, pb, N, D, M);
        });
        return py::make_tuple(out, mask);
    });
}

// affine_backward: dout is (N,M), x is (N,D), W is (D,M); returns (dx (N,D) or None, dW (D,M), db (M,))
py::tuple affine_backward_py(const py::array& dout, const py::array& x, const py::array& W, bool need_dx, bool ref) {
    const char* fn = "affine_backward";
    return with_affine_dtypes(fn, {"x", x}, {{"dout", dout}, {"W", W}}, [&](auto tag, auto xtag) -> py::tuple {
        using T = decltype(tag);
        using TX = decltype(xtag);
        expect_ndim(fn, {"dout", dout}, 2);
        expect_ndim(fn, {"x", x}, 2);
        expect_ndim(fn, {"W", W}, 2);
        if (x.shape(1) != W.shape(0)) shape_error(fn, {"x", x}, {"W", W});
        if (dout.shape(0) != x.shape(0)) shape_error(fn, {"dout", dout}, {"x", x});
        if (dout.shape(1) != W.shape(1)) shape_error(fn, {"dout", dout}, {"W", W});
        const ssize N = x.shape(0), D = x.shape(1), M = W.shape(1);
        auto doutc = contiguous<T>(dout), Wc = contiguous<T>(W);
        auto xc = contiguous<TX>(x);
        py::object dx_obj = py::none();
        T* pdx = nullptr;
        if (need_dx) {
            py::array_t<T> dx = fresh_matrix<T>(N, D);
            pdx = dx.mutable_data();
            dx_obj = dx;
        }
        py::array_t<T> dW({D, M}), db(M);
        T *pdW = dW.mutable_data(), *pdb = db.mutable_data();
        const T *pdout = doutc.data(), *pW = Wc.data();
        const TX* px = xc.data();
        // The layer's caller usually writes W next (an SGD step); take its lines for writing now.
        const ssize W_bytes = ref ? 0 : bytes_updatable_in_place(W, Wc);
        run_kernel(N * D * M * (need_dx ? 2 : 1), [=] {
            (ref ? affine_backward_ref<T, TX> : affine_backward<T, TX>)(pdx, pdW, pdb, pdout, px, pW, N, D, M);
            prefetch_for_write(pW, W_bytes);
        });
        return py::make_tuple(dx_obj, dW, db);
    });
}

template <class T, class TA>
void call_gemm(bool ref, T* C, const TA* A, const T* B, ssize M, ssize N, ssize K, bool ta, bool tb,
               const Epilogue<T>& ep) {
    if (ref)
        gemm_ref(C, A, B, M, N, K, ta, tb, ep);
    else
        gemm(C, A, B, M, N, K, ta, tb, ep);
}

// _gemm: op(a) is (M,K), op(b) is (K,N), bias is (N,) or None; returns op(a)·op(b) + bias, (M,N),
// or (relu(that), mask) when relu; zeroed where zero_mask (bool (M,N) or None) is set; then
// update (M,N) -= update_rate * result, in place, when update is not None
py::object gemm_py(const py::array& a, const py::array& b, const py::object& bias_obj, bool trans_a, bool trans_b,
                   bool relu, const py::object& zero_mask_obj, const py::object& update_obj, double update_rate,
                   bool ref) {
    const char* fn = "gemm";
    std::vector<Arg> rest{{"b", b}};
    const bool has_bias = !bias_obj.is_none();
    py::array bias = has_bias ? py::array::ensure(bias_obj) : py::array();
    if (has_bias) rest.push_back({"bias", bias});
    const bool has_zero_mask = !zero_mask_obj.is_none();
    const py::array zero_mask = has_zero_mask ? py::array::ensure(zero_mask_obj) : py::array();
    const bool has_update = !update_obj.is_none();
    if (has_update && !py::isinstance<py::array>(update_obj))
        throw py::type_error(std::string(fn) + ": update must be a NumPy array, updated in place");
    py::array update = has_update ? py::reinterpret_borrow<py::array>(update_obj) : py::array();
    return with_affine_dtypes(fn, {"a", a}, rest, [&](auto tag, auto atag) -> py::object {
        using T = decltype(tag);
        using TA = decltype(atag);
        expect_ndim(fn, {"a", a}, 2);
        expect_ndim(fn, {"b", b}, 2);
        const ssize M = a.shape(trans_a ? 1 : 0), K = a.shape(trans_a ? 0 : 1);
        const ssize N = b.shape(trans_b ? 0 : 1);
        if (b.shape(trans_b ? 1 : 0) != K) shape_error(fn, {"a", a}, {"b", b});
        if (has_bias && (bias.ndim() != 1 || bias.shape(0) != N)) shape_error(fn, {"b", b}, {"bias", bias});
        if (has_zero_mask) {
            expect_bool(fn, {"zero_mask", zero_mask});
            if (zero_mask.ndim() != 2 || zero_mask.shape(0) != M || zero_mask.shape(1) != N)
                shape_error(fn, {"a", a}, {"zero_mask", zero_mask});
        }
        T* pupdate = nullptr;
        if (has_update) {
            pupdate = writable_param<T>(fn, "update", update);
            if (update.ndim() != 2 || update.shape(0) != M || update.shape(1) != N)
                shape_error(fn, {"a", a}, {"update", update});
            if (overlaps(update, a) || overlaps(update, b) || (has_bias && overlaps(update, bias)) ||
                (has_zero_mask && overlaps(update, zero_mask)))
                throw py::value_error(std::string(fn) + ": update shares memory with an operand");
        }
        py::array_t<T> out = fresh_matrix<T>(M, N);  // first: an impossible output fails before any input is copied
        auto ac = contiguous<TA>(a);
        auto bc = contiguous<T>(b);
        py::object biasc, mask;  // only allocated when asked for
        Epilogue<T> ep;
        if (has_bias) {
            auto bcopy = contiguous<T>(bias);
            ep.bias = bcopy.data();
            biasc = std::move(bcopy);
        }
        py::array_t<bool> zero_maskc;
        if (has_zero_mask) {
            zero_maskc = contiguous<bool>(zero_mask);
            ep.zero_mask = zero_maskc.data();
        }
        ep.update = pupdate;
        ep.update_rate = static_cast<T>(update_rate);
        ep.relu = relu;
        if (relu) {
            py::array_t<bool> m({M, N});
            ep.mask = m.mutable_data();
            mask = std::move(m);
        }
        T* o = out.mutable_data();
        const TA* pa = ac.data();
        const T* pb = bc.data();
        run_kernel(M * N * K, [=] { call_gemm(ref, o, pa, pb, M, N, K, trans_a, trans_b, ep); });
        if (relu) return py::make_tuple(out, mask);
        return std::move(out);
    });
}

// The functions that have a _ref twin, bound once on the fast path and once on the ref path.
void register_gemm_and_affine(py::module_& m, bool ref) {
    m.def(
        "affine_forward",
        [ref](const py::array& x, const py::array& W, const py::array& b) {
            return affine_forward_py(x, W, b, false, ref);
        },
        py::arg("x"), py::arg("W"), py::arg("b"),
        "x is (N,D), W is (D,M), b is (M,); returns x·W + b, (N,M). x may be float32 with W, b float64.");
    m.def(
        "affine_relu_forward",
        [ref](const py::array& x, const py::array& W, const py::array& b) {
            return affine_forward_py(x, W, b, true, ref);
        },
        py::arg("x"), py::arg("W"), py::arg("b"),
        "x is (N,D), W is (D,M), b is (M,); a = x·W + b; returns (out, mask) with mask = a <= 0 and "
        "out = a where not mask, else 0; both (N,M).");
    m.def(
        "affine_backward",
        [ref](const py::array& dout, const py::array& x, const py::array& W, bool need_dx) {
            return affine_backward_py(dout, x, W, need_dx, ref);
        },
        py::arg("dout"), py::arg("x"), py::arg("W"), py::arg("need_dx") = true,
        "dout is (N,M), x is (N,D), W is (D,M); returns (dx (N,D) or None, dW (D,M), db (M,)). x may be "
        "float32 with dout, W float64.");
    m.def(
        ref ? "gemm" : "_gemm",
        [ref](const py::array& a, const py::array& b, const py::object& bias, bool trans_a, bool trans_b, bool relu,
              const py::object& zero_mask, const py::object& update, double update_rate) {
            return gemm_py(a, b, bias, trans_a, trans_b, relu, zero_mask, update, update_rate, ref);
        },
        py::arg("a"), py::arg("b"), py::arg("bias") = py::none(), py::arg("trans_a") = false,
        py::arg("trans_b") = false, py::arg("relu") = false, py::arg("zero_mask") = py::none(),
        py::arg("update") = py::none(), py::arg("update_rate") = 0.0,
        "op(a) is (M,K), op(b) is (K,N); returns op(a)·op(b) (+ bias), (M,N); with relu, (out, mask); then 0 "
        "where zero_mask (bool, (M,N)) is set; then update -= update_rate * out in place (update: (M,N), C's "
        "dtype). a may be float32 with b, bias float64.");
}

}  // namespace

void register_affine(py::module_& m) {
    register_gemm_and_affine(m, false);
    py::module_ ref = m.def_submodule("_ref", "the plain _ref twins of the fast kernels (tests)");
    register_gemm_and_affine(ref, true);
    m.def(
        "_set_blas_gemm",
        [](bool on) {
            if (!on) return set_blas_gemm(nullptr, nullptr);
            // SciPy exports its Fortran BLAS as PyCapsules (the way Numba finds them); the
            // addresses never pass through Python, so no caller can hand us a bad pointer.
            const py::dict capi = py::module_::import("scipy.linalg.cython_blas").attr("__pyx_capi__");
            const auto address = [&](const char* name) {
                return reinterpret_cast<std::uintptr_t>(capi[name].cast<py::capsule>().get_pointer());
            };
            set_blas_gemm(reinterpret_cast<BlasSgemm>(address("sgemm")), reinterpret_cast<BlasDgemm>(address("dgemm")));
        },
        py::arg("on"),
        "Route the GEMM through SciPy's BLAS sgemm/dgemm (on) or back to bpfast's own kernels; see bpfast._blas.");
    m.def("_gemm_backend", &gemm_backend, "'bpfast' (own kernels) or 'blas' (the escape hatch).");
    m.def("_set_skip_zeros", &set_gemm_skip_zeros, py::arg("on"),
          "Zero skipping in the GEMM on (the default) or off (every k of every tile: the same bits, for tests "
          "and benchmarks); returns the previous setting.");
    m.def("_skipped_ks", &gemm_skipped_ks, py::arg("reset") = false,
          "The (tile, k) pairs zero skipping has left out since the last reset (a diagnostic).");
}

}  // namespace bpfast::bindings
