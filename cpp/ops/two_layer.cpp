// TwoLayerNet in one call: Affine -> Relu -> Affine -> SoftmaxWithLoss, forward and backward.
//
// Contract (see nets.hpp): the same kernels the layered path runs, in the same order for each
// row (small networks: a share of the rows per thread, through the second layer to dh), on
// buffers the caller owns; dx of the first layer is skipped (nobody asked for it). The SGD
// update sits beside it. Reentrant; no allocation.
#include <cstring>

#include "bpfast/gemm.hpp"
#include "bpfast/nets.hpp"
#include "bpfast/ops.hpp"
#include "bpfast/ops_dispatch.hpp"
#include "bpfast/threads.hpp"
#include "parallel_chunks.hpp"

namespace bpfast {

namespace {

// Rows [r0, r1) of the step up to dh: h and its mask, a2 = h·W2 + b2 (in dy), y = softmax(a2),
// dy = (y - t) / N, dh = dy·W2^T zeroed where masked. Each row's values do not depend on which
// rows go with it (the GEMM's sums follow the layout, not M), so any split gives the same bits.
template <class T, class TX>
void rows_to_dh(const TwoLayerOutputs<T>& out, const TX* x, const std::int64_t* labels, const T* t_onehot,
                const T* W1, const T* b1, const T* W2, const T* b2, ptrdiff_t N, ptrdiff_t D, ptrdiff_t H, ptrdiff_t C,
                ptrdiff_t r0, ptrdiff_t r1) {
    const ptrdiff_t rows = r1 - r0;
    T* h = out.h + r0 * H;
    bool* mask = out.mask + r0 * H;
    T* y = out.y + r0 * C;
    T* dy = out.dy + r0 * C;
    affine_relu_forward<T, TX>(h, mask, x + r0 * D, W1, b1, rows, D, H);
    affine_forward<T>(dy, h, W2, b2, rows, H, C);
    const ElementwiseKernels<T>& k = ops_kernels<T>();
    k.softmax_rows(y, dy, rows, C);
    if (labels)
        k.xent_backward_rows(dy, y, labels + r0, rows, C, static_cast<T>(N));
    else
        k.xent_backward_onehot(dy, y, t_onehot + r0 * C, rows * C, static_cast<T>(N));
    Epilogue<T> through_relu;
    through_relu.zero_mask = mask;
    gemm<T>(out.dh + r0 * H, dy, W2, rows, H, C, false, true, through_relu);
}

// Up to this many bytes of W1 and W2 together, the rows up to dh run in one region, a share of
// the rows per thread (each thread's products on one thread), rather than each product split
// across the threads and the second layer's on one. The second layer then runs on both cores,
// each thread's rows straight after their first layer; but each thread reads all of W1 (and
// copies its last few columns for dot_edge itself). Measured (one build, the split switched by
// an environment variable, alternating processes), train_step, 2 threads, medians, us: A
// (100,784,50 float64, float32 x) 99.9 -> 95.9, (1000,784,50) float64 838 -> 820, (100,784,100)
// float32 98.2 -> 96.1, (256,784,256) float32 500 -> 493; from W1's 1.6 MB on, mixed:
// (512,784,512) float32 1906 -> 1837, but (256,784,256) float64 964 -> 987, C (1024,784,1024)
// float32 7287 -> 7392, (100,784,1000) float32 1092 -> 1162.
// Below kRowRegionMinFma multiply-adds in the first layer, the rows stay on the calling thread.
constexpr ptrdiff_t kRowRegionMaxWeightBytes = ptrdiff_t(1) << 20;
constexpr ptrdiff_t kRowRegionMinFma = 256 * 1024;

}  // namespace

// x is (N,D), W1 is (D,H), W2 is (H,C), y is (N,C)
template <class T, class TX>
double two_layer_gradient(const TwoLayerOutputs<T>& out, const TX* x, const std::int64_t* labels, const T* t_onehot,
                          const T* W1, const T* b1, const T* W2, const T* b2, ptrdiff_t N, ptrdiff_t D, ptrdiff_t H,
                          ptrdiff_t C, T* W1_update, T rate) {
    double loss;
    const bool row_region = (D * H + H * C) * ptrdiff_t(sizeof(T)) <= kRowRegionMaxWeightBytes &&
                            std::strcmp(gemm_backend(), "bpfast") == 0;  // (not through SciPy's threads)
    if (row_region) {
        const ptrdiff_t parts = N * D * H >= kRowRegionMinFma ? region_threads() : 1;
        parallel_for(parts, [&](ptrdiff_t c) {
            rows_to_dh<T, TX>(out, x, labels, t_onehot, W1, b1, W2, b2, N, D, H, C, N * c / parts,
                              N * (c + 1) / parts);
        });
        loss = softmax_xent_loss<T>(out.y, labels, t_onehot, N, C);
        affine_backward<T>(nullptr, out.dW2, out.db2, out.dy, out.h, W2, N, H, C);
    } else {
        // Forward: h = relu(x·W1 + b1) and its mask, the ReLU fused into the GEMM's epilogue.
        affine_relu_forward<T, TX>(out.h, out.mask, x, W1, b1, N, D, H);
        // a2 = h·W2 + b2 (in dy), y = softmax(a2), the loss.
        affine_forward<T>(out.dy, out.h, W2, b2, N, H, C);
        loss = labels ? softmax_xent_forward<T>(out.y, out.dy, labels, N, C)
                      : softmax_xent_forward_onehot<T>(out.y, out.dy, t_onehot, N, C);
        // Backward: dy = (y - t) / N; Affine2 gives dW2, db2 and dh = dy·W2^T, which the Relu's
        // backward zeroes where masked as it is stored.
        if (labels) {
            softmax_xent_backward<T>(out.dy, out.y, labels, N, C);
        } else {
            softmax_xent_backward_onehot<T>(out.dy, out.y, t_onehot, N, C);
        }
        AffineBackwardFusion<T> through_relu;
        through_relu.dx_relu_mask = out.mask;
        affine_backward_fused<T>(out.dh, out.dW2, out.db2, out.dy, out.h, W2, N, H, C, through_relu);
    }
    // Affine1 gives dW1, db1 (its dx is skipped; W1's SGD step, when asked for, as dW1 is stored).
    AffineBackwardFusion<T> sgd_step;
    sgd_step.W_update = W1_update;
    sgd_step.rate = rate;
    affine_backward_fused<T, TX>(nullptr, out.dW1, out.db1, out.dh, x, W1, N, D, H, sgd_step);
    return loss;
}

namespace {
// Chunks of the update: about 32 KiB of parameters each; one thread below two chunks.
constexpr ptrdiff_t kUpdateChunkBytes = 32 * 1024;
}  // namespace

// param and grad are (n,). Split across the pool: both cores then hold written lines of the
// weights, so the next forward pass (where each core reads all of W1) pulls half from the other
// core on each side instead of all of it on one.
template <class T>
void sgd_update(T* param, const T* grad, T lr, ptrdiff_t n) {
    constexpr ptrdiff_t chunk = kUpdateChunkBytes / ptrdiff_t(sizeof(T));
    run_chunked(n, chunk, 2 * chunk, [=](ptrdiff_t b, ptrdiff_t e) {
        for (ptrdiff_t i = b; i < e; ++i) {
            const T step = lr * grad[i];
            param[i] = param[i] - step;
        }
    });
}

#define BPFAST_INSTANTIATE(T, TX)                                                                              \
    template double two_layer_gradient<T, TX>(const TwoLayerOutputs<T>&, const TX*, const std::int64_t*,       \
                                              const T*, const T*, const T*, const T*, const T*, ptrdiff_t,     \
                                              ptrdiff_t, ptrdiff_t, ptrdiff_t, T*, T);
BPFAST_INSTANTIATE(float, float)
BPFAST_INSTANTIATE(double, double)
BPFAST_INSTANTIATE(double, float)
#undef BPFAST_INSTANTIATE
template void sgd_update<float>(float*, const float*, float, ptrdiff_t);
template void sgd_update<double>(double*, const double*, double, ptrdiff_t);

}  // namespace bpfast
