// Softmax with cross-entropy loss (the book's SoftmaxWithLoss), forward and backward.
// forward:  y = softmax(x); loss = -sum_i log(y[i, t_i] + 1e-7) / N, accumulated in double;
//           one-hot t is reduced by argmax (first max wins, a NaN counts as the max, like np.argmax).
// backward: labels: dx = y; dx[i, t_i] -= 1; dx /= N.   one-hot: dx = (y - t) / N.
//
// Contract: dense row-major (N,C) arrays, labels (N,) already in [0, C); N > 0 for the forward
// (the loss divides by N); outputs overwritten, must not alias inputs; reentrant.
#include <cmath>
#include <cstdint>

#include "bpfast/ops.hpp"
#include "softmax_row.hpp"

namespace bpfast {
namespace {

template <class T>
ptrdiff_t argmax_row(const T* t, ptrdiff_t C) {
    ptrdiff_t best = 0;
    for (ptrdiff_t j = 1; j < C; ++j)
        if (t[j] > t[best] || (std::isnan(t[j]) && !std::isnan(t[best]))) best = j;
    return best;
}

// x, y are (N,C); label(i) gives row i's class
template <class T, class Label>
double forward(T* y, const T* x, ptrdiff_t N, ptrdiff_t C, Label label) {
    double sum = 0;
    for (ptrdiff_t i = 0; i < N; ++i) {
        softmax_row(y + i * C, x + i * C, C);
        sum += std::log(static_cast<double>(y[i * C + label(i)]) + 1e-7);
    }
    return -sum / static_cast<double>(N);
}

}  // namespace

template <class T>
double softmax_xent_forward(T* y, const T* x, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C) {
    return forward(y, x, N, C, [labels](ptrdiff_t i) { return static_cast<ptrdiff_t>(labels[i]); });
}

template <class T>
double softmax_xent_forward_onehot(T* y, const T* x, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    return forward(y, x, N, C, [t_onehot, C](ptrdiff_t i) { return argmax_row(t_onehot + i * C, C); });
}

// y, dx are (N,C), labels is (N,)
template <class T>
void softmax_xent_backward(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C) {
    const T n = static_cast<T>(N);
    for (ptrdiff_t i = 0; i < N; ++i) {
        const ptrdiff_t t = static_cast<ptrdiff_t>(labels[i]);
        for (ptrdiff_t j = 0; j < C; ++j) dx[i * C + j] = (j == t ? y[i * C + j] - T(1) : y[i * C + j]) / n;
    }
}

// y, t_onehot, dx are (N,C)
template <class T>
void softmax_xent_backward_onehot(T* dx, const T* y, const T* t_onehot, ptrdiff_t N, ptrdiff_t C) {
    const T n = static_cast<T>(N);
    for (ptrdiff_t i = 0; i < N * C; ++i) dx[i] = (y[i] - t_onehot[i]) / n;
}

#define BPFAST_INSTANTIATE(T)                                                                               \
    template double softmax_xent_forward<T>(T*, const T*, const std::int64_t*, ptrdiff_t, ptrdiff_t);        \
    template double softmax_xent_forward_onehot<T>(T*, const T*, const T*, ptrdiff_t, ptrdiff_t);            \
    template void softmax_xent_backward<T>(T*, const T*, const std::int64_t*, ptrdiff_t, ptrdiff_t);         \
    template void softmax_xent_backward_onehot<T>(T*, const T*, const T*, ptrdiff_t, ptrdiff_t);
BPFAST_INSTANTIATE(float)
BPFAST_INSTANTIATE(double)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
