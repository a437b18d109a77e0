// ReLU: forward writes out and mask (x <= 0; NaN is not masked, so out stays NaN) in one pass;
// backward zeroes dout where mask, in place.
//
// Contract: dense arrays of n elements; forward overwrites out and mask (which must not alias x);
// backward writes dout in place and nothing else; reentrant.
#include "bpfast/ops.hpp"

namespace bpfast {

// x, out, mask are (n,)
template <class T>
void relu_forward(T* out, bool* mask, const T* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) {
        const bool m = x[i] <= T(0);
        mask[i] = m;
        out[i] = m ? T(0) : x[i];
    }
}

// dout, mask are (n,)
template <class T>
void relu_backward(T* dout, const bool* mask, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i)
        if (mask[i]) dout[i] = T(0);
}

template void relu_forward<float>(float*, bool*, const float*, ptrdiff_t);
template void relu_forward<double>(double*, bool*, const double*, ptrdiff_t);
template void relu_backward<float>(float*, const bool*, ptrdiff_t);
template void relu_backward<double>(double*, const bool*, ptrdiff_t);

}  // namespace bpfast
