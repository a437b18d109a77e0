// Sigmoid: forward out = 1 / (1 + exp(-x)) (large negative x gives exp = inf and out = 0, no
// error); backward dx = dout * (1 - out) * out.
//
// Contract: dense arrays of n elements; outputs overwritten, must not alias inputs; reentrant.
#include <cmath>

#include "bpfast/ops.hpp"

namespace bpfast {

// x, out are (n,)
template <class T>
void sigmoid_forward(T* out, const T* x, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) out[i] = T(1) / (T(1) + std::exp(-x[i]));
}

// dout, out, dx are (n,)
template <class T>
void sigmoid_backward(T* dx, const T* dout, const T* out, ptrdiff_t n) {
    for (ptrdiff_t i = 0; i < n; ++i) dx[i] = dout[i] * (T(1) - out[i]) * out[i];
}

template void sigmoid_forward<float>(float*, const float*, ptrdiff_t);
template void sigmoid_forward<double>(double*, const double*, ptrdiff_t);
template void sigmoid_backward<float>(float*, const float*, const float*, ptrdiff_t);
template void sigmoid_backward<double>(double*, const double*, const double*, ptrdiff_t);

}  // namespace bpfast
