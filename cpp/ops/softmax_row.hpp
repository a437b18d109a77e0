// One row of softmax, shared by softmax.cpp and softmax_xent.cpp (both compiled with the same
// baseline flags). Contract: y and x are (C,), y overwritten, no aliasing.
#pragma once

#include <cmath>
#include <cstddef>

namespace bpfast {

template <class T>
inline void softmax_row(T* y, const T* x, std::ptrdiff_t C) {
    if (C <= 0) return;
    T max = x[0];  // NaN propagates like np.max
    for (std::ptrdiff_t j = 1; j < C; ++j)
        if (x[j] > max || std::isnan(x[j])) max = x[j];
    T sum = 0;
    for (std::ptrdiff_t j = 0; j < C; ++j) {
        y[j] = std::exp(x[j] - max);
        sum += y[j];
    }
    for (std::ptrdiff_t j = 0; j < C; ++j) y[j] /= sum;
}

}  // namespace bpfast
