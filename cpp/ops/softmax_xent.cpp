// Softmax with cross-entropy loss (the book's SoftmaxWithLoss), forward and backward.
// forward:  y = softmax(x); loss = -sum_i log(y[i, t_i] + 1e-7) / N, accumulated in double;
//           one-hot t is reduced by argmax (first max wins, a NaN counts as the max, like np.argmax).
//           One pass per row while it sits in L1: max, exp and sum, normalise, the label's log.
// backward: labels: dx = y; dx[i, t_i] -= 1; dx /= N.   one-hot: dx = (y - t) / N.
//
// Contract: dense row-major (N,C) arrays, labels (N,) already in [0, C); N > 0 and C > 0 for the
// forward (the loss divides by N); outputs overwritten, must not alias inputs; reentrant.
// Threads: rows go in fixed chunks (their size depends on C only); the loss is summed per chunk
// and the chunk sums added in chunk order, so the result does not depend on the thread count.
#include <cmath>
#include <cstdint>
#include <vector>

#include "bpfast/ops.hpp"
#include "bpfast/ops_dispatch.hpp"
#include "bpfast/threads.hpp"
#include "parallel_chunks.hpp"
#include "softmax_row.hpp"

namespace bpfast {
namespace {

// About 16K elements per chunk; one thread below 32K elements.
constexpr ptrdiff_t kChunkElems = 16384, kMinParallelElems = 32768;

ptrdiff_t rows_per_chunk(ptrdiff_t C) { return C >= kChunkElems ? 1 : kChunkElems / C; }

// sum over fixed row chunks of rows_sum(begin, end), chunk sums added in order.
template <class RowsSum>
double chunked_sum(ptrdiff_t N, ptrdiff_t C, const RowsSum& rows_sum) {
    const ptrdiff_t rows = rows_per_chunk(C);
    const ptrdiff_t n_chunks = (N + rows - 1) / rows;
    auto chunk_sum = [&](ptrdiff_t c) { return rows_sum(c * rows, c * rows + rows < N ? c * rows + rows : N); };
    double sum = 0;
    if (n_chunks == 1 || N * C < kMinParallelElems || region_threads() < 2) {
        for (ptrdiff_t c = 0; c < n_chunks; ++c) sum += chunk_sum(c);
        return sum;
    }
    std::vector<double> partial(static_cast<std::size_t>(n_chunks));
    parallel_for(n_chunks, [&](ptrdiff_t c) { partial[static_cast<std::size_t>(c)] = chunk_sum(c); });
    for (double p : partial) sum += p;
    return sum;
}

template <class T>
ptrdiff_t argmax_row(const T* t, ptrdiff_t C) {
    ptrdiff_t best = 0;
    for (ptrdiff_t j = 1; j < C; ++j)
        if (t[j] > t[best] || (std::isnan(t[j]) && !std::isnan(t[best]))) best = j;
    return best;
}

// x, y are (N,C); label(i) gives row i's class
template <class T, class Label>
double forward_ref(T* y, const T* x, ptrdiff_t N, ptrdiff_t C, Label label) {
    double sum = 0;
    for (ptrdiff_t i = 0; i < N; ++i) {
        softmax_row(y + i * C, x + i * C, C);
        sum += std::log(static_cast<double>(y[i * C + label(i)]) + 1e-7);
    }
    return -sum / static_cast<double>(N);
}

}  // namespace

// x, y are (N,C), labels is (N,)
template <class T>
double softmax_xent_forward(T* y, const T* x, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C) {
    const auto kernel = ops_kernels<T>().softmax_xent_rows;
    const double sum = chunked_sum(N, C, [=](ptrdiff_t b, ptrdiff_t e) {
        return kernel(y + b * C, x + b * C, labels + b, e - b, C);
    });
    return -sum / static_cast<double>(N);
}

// x, t_onehot, y are (N,C)
template <class T>
double softmax_xent_forward_onehot(T* y, const T* x, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    const auto kernel = ops_kernels<T>().softmax_xent_rows_onehot;
    const double sum = chunked_sum(N, C, [=](ptrdiff_t b, ptrdiff_t e) {
        return kernel(y + b * C, x + b * C, t_onehot + b * C, e - b, C);
    });
    return -sum / static_cast<double>(N);
}

template <class T>
double softmax_xent_forward_ref(T* y, const T* x, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C) {
    return forward_ref(y, x, N, C, [labels](ptrdiff_t i) { return static_cast<ptrdiff_t>(labels[i]); });
}

template <class T>
double softmax_xent_forward_onehot_ref(T* y, const T* x, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    return forward_ref(y, x, N, C, [t_onehot, C](ptrdiff_t i) { return argmax_row(t_onehot + i * C, C); });
}

// y is (N,C); labels (N,) or, when null, t_onehot (N,C). Row by row as the kernels sum in
// chunked_sum: from 0, in row order, the same log of the same double.
template <class T>
double softmax_xent_loss(const T* y, const std::int64_t* labels, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    const double sum = chunked_sum(N, C, [=](ptrdiff_t b, ptrdiff_t e) {
        double rows_sum = 0;
        for (ptrdiff_t i = b; i < e; ++i) {
            const ptrdiff_t t = labels ? static_cast<ptrdiff_t>(labels[i]) : argmax_row(t_onehot + i * C, C);
            rows_sum += std::log(static_cast<double>(y[i * C + t]) + 1e-7);
        }
        return rows_sum;
    });
    return -sum / static_cast<double>(N);
}

// y, dx are (N,C), labels is (N,)
template <class T>
void softmax_xent_backward(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C) {
    if (C <= 0) return;
    const auto kernel = ops_kernels<T>().xent_backward_rows;
    const T n = static_cast<T>(N);
    run_chunked(N, 2 * rows_per_chunk(C), (2 * kMinParallelElems + C - 1) / C,
                [=](ptrdiff_t b, ptrdiff_t e) { kernel(dx + b * C, y + b * C, labels + b, e - b, C, n); });
}

// y, t_onehot, dx are (N,C)
template <class T>
void softmax_xent_backward_onehot(T* dx, const T* y, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    const auto kernel = ops_kernels<T>().xent_backward_onehot;
    const T n = static_cast<T>(N);
    run_chunked(N * C, 2 * kChunkElems, 2 * kMinParallelElems,
                [=](ptrdiff_t b, ptrdiff_t e) { kernel(dx + b, y + b, t_onehot + b, e - b, n); });
}

template <class T>
void softmax_xent_backward_ref(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C) {
    const T n = static_cast<T>(N);
    for (ptrdiff_t i = 0; i < N; ++i) {
        const ptrdiff_t t = static_cast<ptrdiff_t>(labels[i]);
        for (ptrdiff_t j = 0; j < C; ++j) dx[i * C + j] = (j == t ? y[i * C + j] - T(1) : y[i * C + j]) / n;
    }
}

template <class T>
void softmax_xent_backward_onehot_ref(T* dx, const T* y, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    const T n = static_cast<T>(N);
    for (ptrdiff_t i = 0; i < N * C; ++i) dx[i] = (y[i] - t_onehot[i]) / n;
}

#define BPFAST_INSTANTIATE(T)                                                                               \
    template double softmax_xent_forward<T>(T*, const T*, const std::int64_t*, ptrdiff_t, ptrdiff_t);        \
    template double softmax_xent_forward_onehot<T>(T*, const T*, const T*, ptrdiff_t, ptrdiff_t);            \
    template double softmax_xent_loss<T>(const T*, const std::int64_t*, const T*, ptrdiff_t, ptrdiff_t);     \
    template void softmax_xent_backward<T>(T*, const T*, const std::int64_t*, ptrdiff_t, ptrdiff_t);         \
    template void softmax_xent_backward_onehot<T>(T*, const T*, const T*, ptrdiff_t, ptrdiff_t);             \
    template double softmax_xent_forward_ref<T>(T*, const T*, const std::int64_t*, ptrdiff_t, ptrdiff_t);    \
    template double softmax_xent_forward_onehot_ref<T>(T*, const T*, const T*, ptrdiff_t, ptrdiff_t);        \
    template void softmax_xent_backward_ref<T>(T*, const T*, const std::int64_t*, ptrdiff_t, ptrdiff_t);     \
    template void softmax_xent_backward_onehot_ref<T>(T*, const T*, const T*, ptrdiff_t, ptrdiff_t);
BPFAST_INSTANTIATE(float)
BPFAST_INSTANTIATE(double)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
