// Sigmoid: forward out = 1 / (1 + exp(-x)) with bpfast's vector exp (large negative x gives
// exp = inf and out = 0, large positive x gives 1, no error); backward dx = dout * (1 - out) * out.
// Also the plain elementwise exp (bpfast::exp_elementwise), for tests and other kernels.
//
// Contract: dense arrays of n elements; outputs overwritten, must not alias inputs; reentrant.
// The fast versions run the active path's vector kernel on the thread pool for large n.
#include <cmath>

#include "bpfast/ops.hpp"
#include "bpfast/ops_dispatch.hpp"
#include "parallel_chunks.hpp"

namespace bpfast {
namespace {
// exp costs ~1 ns per element on one core: worth a second thread from ~16K elements.
constexpr ptrdiff_t kChunk = 8192, kMinParallel = 16384;
// The backward is memory-bound like ReLU.
constexpr ptrdiff_t kChunkBwd = 32768, kMinParallelBwd = 65536;
}  // namespace

// x, out are (n,)
template <class T>
void exp_elementwise(T* out, const T* x, ptrdiff_t n) {
    const auto kernel = ops_kernels<T>().exp;
    run_chunked(n, kChunk, kMinParallel, [=](ptrdiff_t b, ptrdiff_t e) { kernel(out + b, x + b, e - b); });
}

// x, out are (n,)
template <class T>
void sigmoid_forward(T* out, const T* x, ptrdiff_t n) {
    const auto kernel = ops_kernels<T>().sigmoid_forward;
    run_chunked(n, kChunk, kMinParallel, [=](ptrdiff_t b, ptrdiff_t e) { kernel(out + b, x + b, e - b); });
}

template <class T>
void sigmoid_forward_ref(T* out, const T* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = T(1) / (T(1) + std::exp(-x[i]));
}

// dout, out, dx are (n,)
template <class T>
void sigmoid_backward(T* dx, const T* dout, const T* out, ptrdiff_t n) {
    const auto kernel = ops_kernels<T>().sigmoid_backward;
    run_chunked(n, kChunkBwd, kMinParallelBwd,
                [=](ptrdiff_t b, ptrdiff_t e) { kernel(dx + b, dout + b, out + b, e - b); });
}

template <class T>
void sigmoid_backward_ref(T* dx, const T* dout, const T* out, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = dout[i] * (T(1) - out[i]) * out[i];
}

#define BPFAST_INSTANTIATE(T)                                                              \
    template void exp_elementwise<T>(T*, const T*, ptrdiff_t);                             \
    template void sigmoid_forward<T>(T*, const T*, ptrdiff_t);                             \
    template void sigmoid_forward_ref<T>(T*, const T*, ptrdiff_t);                         \
    template void sigmoid_backward<T>(T*, const T*, const T*, ptrdiff_t);                  \
    template void sigmoid_backward_ref<T>(T*, const T*, const T*, ptrdiff_t);
BPFAST_INSTANTIATE(float)
BPFAST_INSTANTIATE(double)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
