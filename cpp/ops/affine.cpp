// Affine layer: out = x·W + b forward (optionally fused with the ReLU and its mask);
// dx = dout·W^T, dW = x^T·dout, db = colsum(dout) backward.
//
// Contract: row-major dense arrays; outputs overwritten (never accumulated), must not alias
// inputs; reentrant. T is float or double; x may be float with T double (widened inside the
// GEMM's packing). The matrix products go through bpfast::gemm (transposes read in place, bias
// and ReLU fused in the epilogue); the _ref twins use bpfast::gemm_ref. db sums rows in order
// 0..N-1 on the calling thread (the vector kernel of the active path, or the scalar loop below
// in the _ref twins: the same bits), so no result depends on the thread count. The two products of
// backward may run side by side, dW on one pool thread and dx in column blocks on both.
#include <algorithm>
#include <atomic>

#include "bpfast/gemm.hpp"
#include "bpfast/ops.hpp"
#include "bpfast/ops_dispatch.hpp"
#include "bpfast/threads.hpp"

namespace bpfast {
namespace {

// dout is (N,M), db is (M,): the _ref twins' column sums
template <class T>
void column_sums_ref(T* db, const T* dout, ptrdiff_t N, ptrdiff_t M) {
    if (M <= 0) return;  // nothing to sum, however many rows
    for (ptrdiff_t j = 0; j < M; ++j) db[j] = 0;
    for (ptrdiff_t i = 0; i < N; ++i)
        for (ptrdiff_t j = 0; j < M; ++j) db[j] += dout[i * M + j];
}

struct Fast {
    static constexpr bool side_by_side = true;
    template <class T, class TA>
    static void gemm(T* C, const TA* A, const T* B, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, bool ta, bool tb,
                     const Epilogue<T>& ep) {
        bpfast::gemm(C, A, B, M, N, K, ta, tb, ep);
    }
    template <class T>
    static void column_sums(T* db, const T* dout, ptrdiff_t N, ptrdiff_t M) {
        ops_kernels<T>().column_sums(db, dout, N, M);
    }
};
struct Ref {
    static constexpr bool side_by_side = false;
    template <class T, class TA>
    static void gemm(T* C, const TA* A, const T* B, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, bool ta, bool tb,
                     const Epilogue<T>& ep) {
        bpfast::gemm_ref(C, A, B, M, N, K, ta, tb, ep);
    }
    template <class T>
    static void column_sums(T* db, const T* dout, ptrdiff_t N, ptrdiff_t M) {
        column_sums_ref(db, dout, N, M);
    }
};

// x is (N,D), W is (D,M), b is (M,), out and mask (if relu) are (N,M)
template <class G, class T, class TX>
void forward(T* out, bool* mask, bool relu, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D,
             ptrdiff_t M) {
    Epilogue<T> ep;
    ep.bias = b;
    ep.relu = relu;
    ep.mask = mask;
    G::gemm(out, x, W, N, M, D, false, false, ep);
}

// The two products of backward have the same N·D·M multiply-adds; their outputs, dx (N,D) and
// dW (D,M), differ by the factor N/M. Within this factor of each other, running them side by
// side, one per thread, beats splitting each across the threads: 1.05-1.30x on the book's and
// step C's shapes (100x784x50, 100x784x10, 256x784x100, 1024x784x1024). With dx's output 20x
// dW's (1000x784x50) or more, the dx thread finishes last: 0.88-0.96x.
// Below kSideBySideMinFma multiply-adds each, opening a region costs about what it saves
// (measured, side by side against one thread, float32 (float64), us: 40x50x13 4.6 -> 3.4 on one
// thread (5.3 -> 4.0); 100x50x10 level (level); 100x80x10 6.8 -> 6.4 side by side (8.5 -> 8.8
// on one); 100x100x10 8.7 -> 7.2 (12.2 -> 10.4) side by side).
// Past kSideBySideMaxBytes (16 MiB) of x, W and dout together, each product split across the
// threads wins: side by side, each core streams its own operands and packs its own op(B), and
// on a 32 MB L3 (Zen 5) the two evict each other. Measured there, Affine backward, two threads,
// medians (alternating processes), side by side against split, ms (x, W and dout in MiB):
// float32 1024x784x1024 (10) 7.06 vs 7.12, 1024^3 (12) 9.26 vs 9.42; 2048x784x1024 (17) 16.1 vs
// 15.0, 2048x2048x1000 (32) 38.6 vs 36.5, 4096x784x1024 (31) 30.8 vs 29.3, 2048^3 (48) 80.2 vs
// 75.5; float64 1024x784x1024 (20) 17.2 vs 15.4, 1536x1024x1024 (32) 34.1 vs 29.7. (On a 260 MB
// L3, Emerald Rapids, D's 2048x2048x1000 measured level either way.)
constexpr ptrdiff_t kSideBySideMaxRatio = 10;
// dx in column blocks that whichever thread is free takes: the dW thread helps with dx when it
// finishes first (zero skipping makes the book's dW on MNIST about half of dx: 87 us against 159
// on one thread, float64). The width, 64 floats or 32 doubles, is a multiple of every path's
// panel width (NR: 32 floats, 16 doubles with AVX-512), so that each column sees the same tiles,
// and the same sums, as in one product over all of dx. Each block reads all of dout, so only
// while dout is small (kDxBlocksMaxDoutBytes); past that, dx is one block. Measured on Zen 4,
// Affine backward on two threads, medians (alternating processes), us, blocks against one block:
// MNIST's (100,784)·(784,50) float64 140 against 163 (16 and 48 columns level with 32; 64 and 128
// slower), float32 79-80 against 85 (32 columns level with 64); dense x, where dW takes as long
// as dx, float64 level, float32 within 2% (32 columns: 3-8% slower); with dout of 4 MB,
// (1024,784,1024) float32, 32 columns 17.7 ms against 15.7.
constexpr ptrdiff_t kDxBlockBytes = 256;
constexpr ptrdiff_t kDxBlocksMaxDoutBytes = ptrdiff_t(64) << 10;
constexpr ptrdiff_t kSideBySideMinFma = 64 * 1024;
constexpr ptrdiff_t kSideBySideMaxBytes = ptrdiff_t(16) << 20;

bool products_side_by_side(ptrdiff_t N, ptrdiff_t D, ptrdiff_t M, ptrdiff_t elem_bytes) {
    return N * D * M >= kSideBySideMinFma && N <= kSideBySideMaxRatio * M && M <= kSideBySideMaxRatio * N &&
           (N * D + D * M + N * M) * elem_bytes <= kSideBySideMaxBytes && region_threads() > 1;
}

// dout is (N,M), x is (N,D), W is (D,M); dx is (N,D) or null, dW is (D,M), db is (M,); fuse
// as affine_backward_fused
template <class G, class T, class TX>
void backward(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M,
              const AffineBackwardFusion<T>& fuse = {}) {
    Epilogue<T> dx_ep, dW_ep;
    dx_ep.zero_mask = fuse.dx_relu_mask;
    dW_ep.update = fuse.W_update;
    dW_ep.update_rate = fuse.rate;
    const auto dx_product = [&] { G::gemm(dx, dout, W, N, D, M, false, true, dx_ep); };
    const auto dW_product = [&] { G::gemm(dW, x, dout, D, M, N, true, false, dW_ep); };
    if (dx && G::side_by_side && products_side_by_side(N, D, M, ptrdiff_t(sizeof(T)))) {
        // One thread runs dW, then helps with what is left of dx; the other takes dx's column
        // blocks from the start. The caller asks for a chunk first and so nearly always runs
        // chunk 0: dW then sits in its cache for the update that follows.
        const ptrdiff_t width =
            N * M * ptrdiff_t(sizeof(T)) <= kDxBlocksMaxDoutBytes ? kDxBlockBytes / ptrdiff_t(sizeof(T)) : D;
        const ptrdiff_t n_blocks = (D + width - 1) / width;
        std::atomic<ptrdiff_t> next_block{0};
        const auto dx_blocks = [&] {
            for (ptrdiff_t blk = next_block++; blk < n_blocks; blk = next_block++) {
                const ptrdiff_t j0 = blk * width, nj = std::min(width, D - j0);
                Epilogue<T> ep = dx_ep;
                ep.ldc = D;
                if (ep.zero_mask) ep.zero_mask += j0;
                G::gemm(dx + j0, dout, W + j0 * M, N, nj, M, false, true, ep);
            }
        };
        parallel_for(2, [&](ptrdiff_t c) {
            if (c == 0) dW_product();
            dx_blocks();
        });
    } else {
        if (dx) dx_product();
        dW_product();
    }
    G::column_sums(db, dout, N, M);
}

}  // namespace

template <class T, class TX>
void affine_forward(T* out, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M) {
    forward<Fast>(out, nullptr, false, x, W, b, N, D, M);
}
template <class T, class TX>
void affine_forward_ref(T* out, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M) {
    forward<Ref>(out, nullptr, false, x, W, b, N, D, M);
}
template <class T, class TX>
void affine_relu_forward(T* out, bool* mask, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D,
                         ptrdiff_t M) {
    forward<Fast>(out, mask, true, x, W, b, N, D, M);
}
template <class T, class TX>
void affine_relu_forward_ref(T* out, bool* mask, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D,
                             ptrdiff_t M) {
    forward<Ref>(out, mask, true, x, W, b, N, D, M);
}
template <class T, class TX>
void affine_backward(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                     ptrdiff_t M) {
    backward<Fast>(dx, dW, db, dout, x, W, N, D, M);
}
template <class T, class TX>
void affine_backward_ref(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                         ptrdiff_t M) {
    backward<Ref>(dx, dW, db, dout, x, W, N, D, M);
}
template <class T, class TX>
void affine_backward_fused(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                           ptrdiff_t M, const AffineBackwardFusion<T>& fuse) {
    backward<Fast>(dx, dW, db, dout, x, W, N, D, M, fuse);
}

#define BPFAST_INSTANTIATE(T, TX)                                                                                 \
    template void affine_forward<T, TX>(T*, const TX*, const T*, const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t);       \
    template void affine_forward_ref<T, TX>(T*, const TX*, const T*, const T*, ptrdiff_t, ptrdiff_t, ptrdiff_t);   \
    template void affine_relu_forward<T, TX>(T*, bool*, const TX*, const T*, const T*, ptrdiff_t, ptrdiff_t,       \
                                             ptrdiff_t);                                                          \
    template void affine_relu_forward_ref<T, TX>(T*, bool*, const TX*, const T*, const T*, ptrdiff_t, ptrdiff_t,   \
                                                 ptrdiff_t);                                                      \
    template void affine_backward<T, TX>(T*, T*, T*, const T*, const TX*, const T*, ptrdiff_t, ptrdiff_t,          \
                                         ptrdiff_t);                                                              \
    template void affine_backward_ref<T, TX>(T*, T*, T*, const T*, const TX*, const T*, ptrdiff_t, ptrdiff_t,      \
                                             ptrdiff_t);                                                          \
    template void affine_backward_fused<T, TX>(T*, T*, T*, const T*, const TX*, const T*, ptrdiff_t, ptrdiff_t,    \
                                               ptrdiff_t, const AffineBackwardFusion<T>&);
BPFAST_INSTANTIATE(float, float)
BPFAST_INSTANTIATE(double, double)
BPFAST_INSTANTIATE(double, float)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
