// Row-wise softmax: y = exp(x - rowmax) / rowsum, like NumPy: a row holding NaN, +inf, or only
// -inf gives NaN.
//
// Contract: x and y are dense row-major (N,C); y overwritten, must not alias x; reentrant.
// The fast version runs the active path's row kernel (elementwise_kernels.hpp), rows split
// across the thread pool for large inputs (rows are independent: same result on any thread count).
#include "bpfast/ops.hpp"
#include "bpfast/ops_dispatch.hpp"
#include "parallel_chunks.hpp"
#include "softmax_row.hpp"

namespace bpfast {
namespace {
// About 16K elements per chunk; one thread below 32K elements.
constexpr ptrdiff_t kChunkElems = 16384, kMinParallelElems = 32768;
}  // namespace

// x is (N,C), y is (N,C)
template <class T>
void softmax(T* y, const T* x, ptrdiff_t N, ptrdiff_t C) {
    if (C <= 0) return;
    const auto kernel = ops_kernels<T>().softmax_rows;
    const ptrdiff_t rows_per_chunk = C >= kChunkElems ? 1 : kChunkElems / C;
    const ptrdiff_t min_rows = (kMinParallelElems + C - 1) / C;
    run_chunked(N, rows_per_chunk, min_rows,
                [=](ptrdiff_t b, ptrdiff_t e) { kernel(y + b * C, x + b * C, e - b, C); });
}

template <class T>
void softmax_ref(T* y, const T* x, ptrdiff_t N, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < N; ++i) softmax_row(y + i * C, x + i * C, C);
}

template void softmax<float>(float*, const float*, ptrdiff_t, ptrdiff_t);
template void softmax<double>(double*, const double*, ptrdiff_t, ptrdiff_t);
template void softmax_ref<float>(float*, const float*, ptrdiff_t, ptrdiff_t);
template void softmax_ref<double>(double*, const double*, ptrdiff_t, ptrdiff_t);

}  // namespace bpfast
