// Row-wise softmax: y = exp(x - rowmax) / rowsum, like NumPy: a row holding NaN, +inf, or only
// -inf gives NaN.
//
// Contract: x and y are dense row-major (N,C); y overwritten, must not alias x; reentrant.
#include <cmath>

#include "bpfast/ops.hpp"
#include "softmax_row.hpp"

namespace bpfast {

// x is (N,C), y is (N,C)
template <class T>
void softmax(T* y, const T* x, ptrdiff_t N, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < N; ++i) softmax_row(y + i * C, x + i * C, C);
}

template void softmax<float>(float*, const float*, ptrdiff_t, ptrdiff_t);
template void softmax<double>(double*, const double*, ptrdiff_t, ptrdiff_t);

}  // namespace bpfast
