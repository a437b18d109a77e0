// The elementwise and row-wise kernels on SIMD vectors: exp, ReLU, sigmoid, softmax, softmax
// with cross-entropy (forward and backward). Single-threaded over the range they are given;
// the drivers in relu.cpp, sigmoid.cpp, softmax.cpp, softmax_xent.cpp split the work.
//
// Included by exactly one translation unit per instruction set (elementwise_<isa>.cpp), each
// compiled with its own -m flags after defining BPFAST_VEC_BYTES. Everything here has internal
// linkage, so every TU keeps its own copy (no ODR mixing of code built for different ISAs);
// only builtins and C library functions are called. BPFAST_DEFINE_OPS_ISA(isa) at the end of
// the TU fills bpfast::ops_<isa>::table.
//
// Contract: dense arrays, row-major (rows,C) for the row kernels; outputs overwritten and not
// aliasing inputs (relu_backward works in place); same semantics as the _ref twins in the op files.
#pragma once

#include "../simd/vexp.hpp"
#include "bpfast/ops_dispatch.hpp"

namespace bpfast::simd {
namespace {

template <class T>
constexpr T neg_inf() {
    return static_cast<T>(-__builtin_inf());
}

// x, out are (n,): out = exp(x)
template <class T>
void exp_kernel(T* out, const T* x, ptrdiff_t n) {
    constexpr ptrdiff_t W = Vec<T>::W;
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(out + i, vexp<T>(loadu(x + i)));
    if (i < n) store_partial(out + i, vexp<T>(load_partial(x + i, n - i, T(0))), n - i);
}

// x, out, mask are (n,): mask = x <= 0 (NaN: false), out = mask ? +0 : x
template <class T>
void relu_forward_kernel(T* out, bool* mask, const T* x, ptrdiff_t n) {
    typedef typename Vec<T>::I I;
    typedef typename Vec<T>::B B;
    constexpr ptrdiff_t W = Vec<T>::W;
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) {
        const V<T> v = loadu(x + i);
        const I m = v <= V<T>{};  // -1 where masked
        storeu(out + i, m ? V<T>{} : v);
        const B b = __builtin_convertvector(-m, B);  // 1 where masked
        __builtin_memcpy(mask + i, &b, sizeof b);
    }
    for (; i < n; ++i) {
        const bool m = x[i] <= T(0);
        mask[i] = m;
        out[i] = m ? T(0) : x[i];
    }
}

// dout, mask are (n,): dout = 0 where mask, in place
template <class T>
void relu_backward_kernel(T* dout, const bool* mask, ptrdiff_t n) {
    typedef typename Vec<T>::I I;
    typedef typename Vec<T>::B B;
    constexpr ptrdiff_t W = Vec<T>::W;
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) {
        B b;
        __builtin_memcpy(&b, mask + i, sizeof b);
        const I m = __builtin_convertvector(b, I);
        storeu(dout + i, m != 0 ? V<T>{} : loadu(dout + i));
    }
    for (; i < n; ++i)
        if (mask[i]) dout[i] = T(0);
}

// x, out are (n,): out = 1 / (1 + exp(-x))
template <class T>
void sigmoid_forward_kernel(T* out, const T* x, ptrdiff_t n) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const V<T> one = splat(T(1));
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(out + i, one / (one + vexp<T>(-loadu(x + i))));
    if (i < n) store_partial(out + i, one / (one + vexp<T>(-load_partial(x + i, n - i, T(0)))), n - i);
}

// dout, out, dx are (n,): dx = dout * (1 - out) * out, in NumPy's order of operations
template <class T>
void sigmoid_backward_kernel(T* dx, const T* dout, const T* out, ptrdiff_t n) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const V<T> one = splat(T(1));
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) {
        const V<T> o = loadu(out + i);
        storeu(dx + i, loadu(dout + i) * (one - o) * o);
    }
    for (; i < n; ++i) dx[i] = dout[i] * (T(1) - out[i]) * out[i];
}

// x, y are (C,): y = exp(x - max) / sum. NaN anywhere in the row reaches the sum (exp(NaN) is NaN),
// so the max may ignore it; +inf or all -inf make x - max NaN: the whole row is NaN, like NumPy.
template <class T>
inline void softmax_row_kernel(T* y, const T* x, ptrdiff_t C) {
    constexpr ptrdiff_t W = Vec<T>::W;
    V<T> m0 = splat(neg_inf<T>()), m1 = m0;
    ptrdiff_t j = 0;
    for (; j + 2 * W <= C; j += 2 * W) {
        m0 = vmax<T>(m0, loadu(x + j));
        m1 = vmax<T>(m1, loadu(x + j + W));
    }
    if (j + W <= C) {
        m0 = vmax<T>(m0, loadu(x + j));
        j += W;
    }
    if (j < C) m1 = vmax<T>(m1, load_partial(x + j, C - j, neg_inf<T>()));
    const V<T> mx = splat(hmax<T>(vmax<T>(m0, m1)));

    // exp and sum: vector sums over blocks of kBlock elements, the block sums added in double
    // (a long float row summed in one vector would lose digits that NumPy's pairwise sum keeps)
    constexpr ptrdiff_t kBlock = 128 * 2 * W;
    double total = 0;
    j = 0;
    while (j < C) {
        const ptrdiff_t end = C - j > kBlock ? j + kBlock : C;
        V<T> s0{}, s1{};
        for (; j + 2 * W <= end; j += 2 * W) {
            const V<T> e0 = vexp<T>(loadu(x + j) - mx), e1 = vexp<T>(loadu(x + j + W) - mx);
            storeu(y + j, e0);
            storeu(y + j + W, e1);
            s0 += e0;
            s1 += e1;
        }
        if (j + W <= end) {
            const V<T> e = vexp<T>(loadu(x + j) - mx);
            storeu(y + j, e);
            s0 += e;
            j += W;
        }
        if (j < end) {
            const V<T> e = vexp<T>(load_partial(x + j, end - j, T(0)) - mx);
            store_partial(y + j, e, end - j);
            s1 += keep_first<T>(e, end - j);
            j = end;
        }
        total += static_cast<double>(hsum<T>(s0 + s1));
    }
    const V<T> sum = splat(static_cast<T>(total));

    for (j = 0; j + W <= C; j += W) storeu(y + j, loadu(y + j) / sum);
    if (j < C) store_partial(y + j, load_partial(y + j, C - j, T(1)) / sum, C - j);
}

// x, y are (rows,C)
template <class T>
void softmax_rows_kernel(T* y, const T* x, ptrdiff_t rows, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < rows; ++i) softmax_row_kernel(y + i * C, x + i * C, C);
}

// x, y are (rows,C), labels (rows,): softmax, and sum_i log(y[i, t_i] + 1e-7)
template <class T>
double softmax_xent_rows_kernel(T* y, const T* x, const std::int64_t* labels, ptrdiff_t rows, ptrdiff_t C) {
    double sum = 0;
    for (ptrdiff_t i = 0; i < rows; ++i) {
        softmax_row_kernel(y + i * C, x + i * C, C);
        sum += __builtin_log(static_cast<double>(y[i * C + labels[i]]) + 1e-7);
    }
    return sum;
}

// The first index of the row's max, a NaN counting as the max (np.argmax).
template <class T>
ptrdiff_t argmax_row(const T* t, ptrdiff_t C) {
    ptrdiff_t best = 0;
    for (ptrdiff_t j = 1; j < C; ++j)
        if (t[j] > t[best] || (__builtin_isnan(t[j]) && !__builtin_isnan(t[best]))) best = j;
    return best;
}

template <class T>
double softmax_xent_rows_onehot_kernel(T* y, const T* x, const T* t_onehot, ptrdiff_t rows, ptrdiff_t C) {
    double sum = 0;
    for (ptrdiff_t i = 0; i < rows; ++i) {
        softmax_row_kernel(y + i * C, x + i * C, C);
        sum += __builtin_log(static_cast<double>(y[i * C + argmax_row(t_onehot + i * C, C)]) + 1e-7);
    }
    return sum;
}

// y, dx are (rows,C), labels (rows,): dx = y; dx[i, t_i] -= 1; dx /= batch
template <class T>
void xent_backward_rows_kernel(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t rows, ptrdiff_t C,
                               T batch) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const ptrdiff_t n = rows * C;
    const V<T> b = splat(batch);
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(dx + i, loadu(y + i) / b);
    if (i < n) store_partial(dx + i, load_partial(y + i, n - i, T(1)) / b, n - i);
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const ptrdiff_t k = r * C + labels[r];
        dx[k] = (y[k] - T(1)) / batch;
    }
}

// y, t_onehot, dx are (n,): dx = (y - t) / batch
template <class T>
void xent_backward_onehot_kernel(T* dx, const T* y, const T* t_onehot, ptrdiff_t n, T batch) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const V<T> b = splat(batch);
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(dx + i, (loadu(y + i) - loadu(t_onehot + i)) / b);
    for (; i < n; ++i) dx[i] = (y[i] - t_onehot[i]) / batch;
}

template <class T>
constexpr ElementwiseKernels<T> kernels_of() {
    return {exp_kernel<T>,
            relu_forward_kernel<T>,
            relu_backward_kernel<T>,
            sigmoid_forward_kernel<T>,
            sigmoid_backward_kernel<T>,
            softmax_rows_kernel<T>,
            softmax_xent_rows_kernel<T>,
            softmax_xent_rows_onehot_kernel<T>,
            xent_backward_rows_kernel<T>,
            xent_backward_onehot_kernel<T>};
}

}  // namespace
}  // namespace bpfast::simd

// The table of this TU's instruction set, bpfast::ops_<isa>::table.
#define BPFAST_DEFINE_OPS_ISA(isa)                                                                  \
    namespace bpfast::ops_##isa {                                                                   \
    const OpsTable table = {#isa, simd::kernels_of<float>(), simd::kernels_of<double>()};           \
    }
