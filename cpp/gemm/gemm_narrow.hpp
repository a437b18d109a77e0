// x^T·dout for a layer of a few outputs, as C^T = op(B)^T·A (gemm_narrow_transposed).
// Part of the blocked GEMM (gemm_blocked.hpp, which includes it): in the same anonymous
// namespace, for the same reason (each per-ISA translation unit gets its own copy).
#pragma once

#include "gemm_pack.hpp"

namespace bpfast {
namespace {

// The longest step between consecutive k of a transposed A read in place (bytes; measured:
// x^T for 784 features, 3-6 KB, is faster packed; 50 or 100 features, faster in place).
constexpr ptrdiff_t kDirectMaxStrideBytes = 2048;

template <class T, class B, class TA>
void gemm_blocked(T* C, const TA* A, const T* Bm, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, bool trans_a,
                  bool trans_b, const Epilogue<T>& ep);

// op(A) transposed with its stored rows too far apart to be read in place (past
// kDirectMaxStrideBytes), and C's rows shorter than a panel and not whole vectors (dW = x^T·dout
// of a layer with 10 outputs after 784 or 1024 inputs): each row of C would be a partly filled
// vector, and all of op(A) would be packed for that one panel. C^T = op(B)^T·A has instead a few
// rows, and wide rows read where they lie: A is the row-major (K,M) operand. C^T goes to a
// scratch buffer, then to C transposed, through the epilogue. Every element sums the same
// products in the same K blocks and k order, so the result still does not depend on threads.
// Measured (two builds, alternating processes), 2 threads, float32 (float64), us:
// (1024,1024)^T·(1024,10) 318 -> 146 (548 -> 486), (256,1024)^T·(256,10) 60 -> 33,
// (100,784)^T·(100,10) 21.0 -> 17.1 (34.4 -> 35.2, level), 24 columns 400 -> 285. Slower, and so
// left to the direct path: 32 columns (a whole panel), 8 or 16 in float64 (whole vectors), and
// rows close enough to be read in place ((50,300)^T·(50,24): 6.8 -> 13.1).
// Up to kNarrowMaxElements elements of C (the scratch is kept, as the packing buffers are).
constexpr ptrdiff_t kNarrowMaxElements = ptrdiff_t(1) << 22;

template <class T>
bool narrow_transposed(ptrdiff_t M, ptrdiff_t N, int NR, int W) {
    // N < M: C^T is never narrow itself
    return M * ptrdiff_t(sizeof(T)) > kDirectMaxStrideBytes && N < NR && N % W != 0 && N < M &&
           M * N <= kNarrowMaxElements;
}

template <class T, class B>
void gemm_narrow_transposed(T* C, const T* A, const T* Bm, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, bool trans_b,
                            const Epilogue<T>& ep) {
    const ptrdiff_t ldc = row_stride(ep, N);
    static thread_local Scratch<T> ct_scratch;
    T* ct = ct_scratch.get(N * M);
    // op(B)^T (N,K) is B as stored when trans_b, else B read transposed
    gemm_blocked<T, B, T>(ct, Bm, A, N, M, K, !trans_b, false, Epilogue<T>{});
    if (!ep.bias && !ep.relu && !ep.mask && !ep.zero_mask && !ep.update)  // C = ct^T, in registers
        return transpose_rows<T, B::nv * Simd<T>::W, false>(C, ldc, ct, M, static_cast<int>(N), M);
    for (ptrdiff_t i = 0; i < M; ++i) {
        const TileStore<T> st{true,
                              true,
                              ep.relu,
                              ep.bias,
                              ep.mask ? ep.mask + i * ldc : nullptr,
                              ep.zero_mask ? ep.zero_mask + i * ldc : nullptr,
                              ep.update ? ep.update + i * ldc : nullptr,
                              ep.update_rate,
                              ldc};
        for (ptrdiff_t j = 0; j < N; ++j) store_scalar(C + i * ldc, ldc, 0, static_cast<int>(j), ct[j * M + i], st);
    }
}

}  // namespace
}  // namespace bpfast
