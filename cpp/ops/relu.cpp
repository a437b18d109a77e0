// ReLU: forward writes out and mask (x <= 0; NaN is not masked, so out stays NaN) in one pass;
// backward zeroes dout where mask, in place.
//
// Contract: dense arrays of n elements; forward overwrites out and mask (which must not alias x);
// backward writes dout in place and nothing else; reentrant. The fast versions run the active
// path's vector kernel (elementwise_kernels.hpp) on the thread pool for large n.
#include "bpfast/ops.hpp"
#include "bpfast/ops_dispatch.hpp"
#include "parallel_chunks.hpp"

namespace bpfast {
namespace {
// Memory-bound: a chunk is 128 KiB of float; below min_parallel one thread is faster.
constexpr ptrdiff_t kChunk = 32768, kMinParallel = 65536;
// Outputs of at least this many bytes bypass the caches (they would not stay there anyway, and
// normal stores first read every line they write).
constexpr ptrdiff_t kStreamBytes = ptrdiff_t(16) << 20;
}  // namespace

// x, out, mask are (n,)
template <class T>
void relu_forward(T* out, bool* mask, const T* x, ptrdiff_t n) {
    const auto kernel = n * ptrdiff_t(sizeof(T)) >= kStreamBytes ? ops_kernels<T>().relu_forward_stream
                                                                  : ops_kernels<T>().relu_forward;
    run_chunked(n, kChunk, kMinParallel, [=](ptrdiff_t b, ptrdiff_t e) { kernel(out + b, mask + b, x + b, e - b); });
}

template <class T>
void relu_forward_ref(T* out, bool* mask, const T* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) {
        const bool m = x[i] <= T(0);
        mask[i] = m;
        out[i] = m ? T(0) : x[i];
    }
}

// dout, mask are (n,)
template <class T>
void relu_backward(T* dout, const bool* mask, ptrdiff_t n) {
    const auto kernel = ops_kernels<T>().relu_backward;
    run_chunked(n, kChunk, kMinParallel, [=](ptrdiff_t b, ptrdiff_t e) { kernel(dout + b, mask + b, e - b); });
}

template <class T>
void relu_backward_ref(T* dout, const bool* mask, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i)
        if (mask[i]) dout[i] = T(0);
}

#define BPFAST_INSTANTIATE(T)                                                 \
    template void relu_forward<T>(T*, bool*, const T*, ptrdiff_t);           \
    template void relu_forward_ref<T>(T*, bool*, const T*, ptrdiff_t);       \
    template void relu_backward<T>(T*, const bool*, ptrdiff_t);              \
    template void relu_backward_ref<T>(T*, const bool*, ptrdiff_t);
BPFAST_INSTANTIATE(float)
BPFAST_INSTANTIATE(double)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
