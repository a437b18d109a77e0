// Affine layer: out = x·W + b forward; dx = dout·W^T, dW = x^T·dout, db = colsum(dout) backward.
//
// Contract: row-major dense arrays; outputs overwritten (never accumulated), must not alias
// inputs; reentrant. The matrix products go through bpfast::gemm (transposes read in place,
// bias fused in the epilogue); the _ref twins use bpfast::gemm_ref.
#include "bpfast/gemm.hpp"
#include "bpfast/ops.hpp"

namespace bpfast {
namespace {

template <class T>
void column_sums(T* db, const T* dout, ptrdiff_t N, ptrdiff_t M) {
    for (ptrdiff_t j = 0; j < M; ++j) db[j] = 0;
    for (ptrdiff_t i = 0; i < N; ++i)
        for (ptrdiff_t j = 0; j < M; ++j) db[j] += dout[i * M + j];
}

// x is (N,D), W is (D,M), b is (M,), out is (N,M)
template <class T, GemmFn<T> Gemm>
void forward(T* out, const T* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M) {
    Gemm(out, x, W, b, N, M, D, false, false);
}

// dout is (N,M), x is (N,D), W is (D,M); dx is (N,D) or null, dW is (D,M), db is (M,)
template <class T, GemmFn<T> Gemm>
void backward(T* dx, T* dW, T* db, const T* dout, const T* x, const T* W, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M) {
    if (dx) Gemm(dx, dout, W, nullptr, N, D, M, false, true);
    Gemm(dW, x, dout, nullptr, D, M, N, true, false);
    column_sums(db, dout, N, M);
}

}  // namespace

template <class T>
void affine_forward(T* out, const T* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M) {
    forward<T, gemm<T>>(out, x, W, b, N, D, M);
}
template <class T>
void affine_forward_ref(T* out, const T* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M) {
    forward<T, gemm_ref<T>>(out, x, W, b, N, D, M);
}
template <class T>
void affine_backward(T* dx, T* dW, T* db, const T* dout, const T* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                     ptrdiff_t M) {
    backward<T, gemm<T>>(dx, dW, db, dout, x, W, N, D, M);
}
template <class T>
void affine_backward_ref(T* dx, T* dW, T* db, const T* dout, const T* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                         ptrdiff_t M) {
    backward<T, gemm_ref<T>>(dx, dW, db, dout, x, W, N, D, M);
}

#define BPFAST_INSTANTIATE(T)                                                                             \
    template void affine_forward<T>(T*, const T*, const T*, const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t);     \
    template void affine_forward_ref<T>(T*, const T*, const T*, const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t); \
    template void affine_backward<T>(T*, T*, T*, const T*, const T*, const T*, ptrdiff_t, ptrdiff_t,          \
                                     ptrdiff_t);                                                            \
    template void affine_backward_ref<T>(T*, T*, T*, const T*, const T*, const T*, ptrdiff_t, ptrdiff_t,      \
                                         ptrdiff_t);
BPFAST_INSTANTIATE(float)
BPFAST_INSTANTIATE(double)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
