// TwoLayerNet in one call: Affine -> Relu -> Affine -> SoftmaxWithLoss, forward and backward.
//
// Contract (see nets.hpp): the same kernels the layered path runs, in the same order, on
// buffers the caller owns; dx of the first layer is skipped (nobody asked for it). The SGD
// update sits beside it. Reentrant; no allocation.
#include "bpfast/nets.hpp"
#include "bpfast/ops.hpp"
#include "parallel_chunks.hpp"

namespace bpfast {

// x is (N,D), W1 is (D,H), W2 is (H,C), y is (N,C)
template <class T, class TX>
double two_layer_gradient(const TwoLayerOutputs<T>& out, const TX* x, const std::int64_t* labels, const T* t_onehot,
                          const T* W1, const T* b1, const T* W2, const T* b2, ptrdiff_t N, ptrdiff_t D, ptrdiff_t H,
                          ptrdiff_t C, T* W1_update, T rate) {
    // Forward: h = relu(x·W1 + b1) and its mask, the ReLU fused into the GEMM's epilogue.
    affine_relu_forward<T, TX>(out.h, out.mask, x, W1, b1, N, D, H);
    // a2 = h·W2 + b2 (in dy), y = softmax(a2), the loss.
    affine_forward<T>(out.dy, out.h, W2, b2, N, H, C);
    const double loss = labels ? softmax_xent_forward<T>(out.y, out.dy, labels, N, C)
                               : softmax_xent_forward_onehot<T>(out.y, out.dy, t_onehot, N, C);
    // Backward: dy = (y - t) / N; Affine2 gives dW2, db2 and dh = dy·W2^T, which the Relu's
    // backward zeroes where masked as it is stored; Affine1 gives dW1, db1 (its dx is skipped;
    // W1's SGD step, when asked for, as dW1 is stored).
    if (labels) {
        softmax_xent_backward<T>(out.dy, out.y, labels, N, C);
    } else {
        softmax_xent_backward_onehot<T>(out.dy, out.y, t_onehot, N, C);
    }
    AffineBackwardFusion<T> through_relu;
    through_relu.dx_relu_mask = out.mask;
    affine_backward_fused<T>(out.dh, out.dW2, out.db2, out.dy, out.h, W2, N, H, C, through_relu);
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
