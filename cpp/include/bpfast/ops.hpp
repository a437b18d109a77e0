// The layer kernels of "Deep Learning from Scratch" ch. 5 (cpp/ops/*.cpp), float and double.
//
// Contract for every kernel here:
// - Arguments: outputs, then inputs, then sizes; all arrays dense, row-major, aligned to
//   their element type; outputs never alias inputs (except relu_backward, in place).
// - Outputs are overwritten, never accumulated into.
// - Plain functions of their arguments: reentrant, no global state, no Python.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bpfast {

using std::ptrdiff_t;

// The Affine kernels: T is float or double; TX (x's type) is T, or float with T = double
// (float32 data times float64 weights: x is widened inside the GEMM's packing, results are double).

// x is (N,D), W is (D,M), b is (M,), out is (N,M): out = x·W + b
template <class T, class TX = T>
void affine_forward(T* out, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M);
template <class T, class TX = T>
void affine_forward_ref(T* out, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D, ptrdiff_t M);

// x is (N,D), W is (D,M), b is (M,), out and mask are (N,M): a = x·W + b, mask = a <= 0 (NaN not
// masked), out = mask ? 0 : a; one pass over out (the ReLU fused into the GEMM's epilogue)
template <class T, class TX = T>
void affine_relu_forward(T* out, bool* mask, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D,
                         ptrdiff_t M);
template <class T, class TX = T>
void affine_relu_forward_ref(T* out, bool* mask, const TX* x, const T* W, const T* b, ptrdiff_t N, ptrdiff_t D,
                             ptrdiff_t M);

// dout is (N,M), x is (N,D), W is (D,M); dx is (N,D) (skipped when null), dW is (D,M), db is (M,)
// dx = dout·W^T, dW = x^T·dout, db = column sums of dout (summed in a fixed order)
template <class T, class TX = T>
void affine_backward(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                     ptrdiff_t M);
template <class T, class TX = T>
void affine_backward_ref(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                         ptrdiff_t M);
// What affine_backward_fused does besides affine_backward, each in the epilogue of the product
// it follows (the one-call step's): the same values as the separate passes, one pass fewer.
template <class T>
struct AffineBackwardFusion {
    // (N,D): x came out of a ReLU with this mask; dx = 0 where set (that ReLU's backward). Null: none.
    const bool* dx_relu_mask = nullptr;
    // (D,M): W_update -= rate * dW (an SGD step, rounded as sgd_update), as dW is stored. Must not
    // overlap x or dout, nor W when dx is computed. Null: none.
    T* W_update = nullptr;
    T rate = 0;
};
template <class T, class TX = T>
void affine_backward_fused(T* dx, T* dW, T* db, const T* dout, const TX* x, const T* W, ptrdiff_t N, ptrdiff_t D,
                           ptrdiff_t M, const AffineBackwardFusion<T>& fuse);

// The elementwise and row-wise kernels run the active path's vector kernels (ops_dispatch.hpp),
// on the thread pool for large inputs; results never depend on the thread count. Each has a
// plain scalar _ref twin (std::exp), the oracle in tests.

// x, out, mask are (n,): mask = x <= 0 (NaN not masked), out = mask ? 0 : x
template <class T>
void relu_forward(T* out, bool* mask, const T* x, ptrdiff_t n);
template <class T>
void relu_forward_ref(T* out, bool* mask, const T* x, ptrdiff_t n);
// dout, mask are (n,): dout = 0 where mask, in place
template <class T>
void relu_backward(T* dout, const bool* mask, ptrdiff_t n);
template <class T>
void relu_backward_ref(T* dout, const bool* mask, ptrdiff_t n);

// x, out are (n,): out = exp(x), bpfast's vector exp (about 1 ulp; inf, 0, denormals, NaN as std::exp)
template <class T>
void exp_elementwise(T* out, const T* x, ptrdiff_t n);

// x, out are (n,): out = 1 / (1 + exp(-x))
template <class T>
void sigmoid_forward(T* out, const T* x, ptrdiff_t n);
template <class T>
void sigmoid_forward_ref(T* out, const T* x, ptrdiff_t n);
// dout, out, dx are (n,): dx = dout * (1 - out) * out
template <class T>
void sigmoid_backward(T* dx, const T* dout, const T* out, ptrdiff_t n);
template <class T>
void sigmoid_backward_ref(T* dx, const T* dout, const T* out, ptrdiff_t n);

// x is (N,C), y is (N,C): y = exp(x - rowmax) / rowsum
template <class T>
void softmax(T* y, const T* x, ptrdiff_t N, ptrdiff_t C);
template <class T>
void softmax_ref(T* y, const T* x, ptrdiff_t N, ptrdiff_t C);

// x is (N,C), labels is (N,) in [0,C), y is (N,C); returns -sum log(y[i,t_i] + 1e-7) / N (N > 0)
template <class T>
double softmax_xent_forward(T* y, const T* x, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C);
template <class T>
double softmax_xent_forward_ref(T* y, const T* x, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C);
// x, t_onehot, y are (N,C); the label of row i is argmax t_onehot[i] (first max wins)
template <class T>
double softmax_xent_forward_onehot(T* y, const T* x, const T* t_onehot, ptrdiff_t N, ptrdiff_t C);
template <class T>
double softmax_xent_forward_onehot_ref(T* y, const T* x, const T* t_onehot, ptrdiff_t N, ptrdiff_t C);
// The loss softmax_xent_forward returns, from its y (N,C) and labels (N,) or, when labels is
// null, one-hot t (N,C): the same sums in the same order, so the same bits.
template <class T>
double softmax_xent_loss(const T* y, const std::int64_t* labels, const T* t_onehot, ptrdiff_t N, ptrdiff_t C);
// y, dx are (N,C), labels is (N,) in [0,C): dx = y; dx[i,t_i] -= 1; dx /= N
template <class T>
void softmax_xent_backward(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C);
template <class T>
void softmax_xent_backward_ref(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t N, ptrdiff_t C);
// y, t_onehot, dx are (N,C): dx = (y - t) / N
template <class T>
void softmax_xent_backward_onehot(T* dx, const T* y, const T* t_onehot, ptrdiff_t N, ptrdiff_t C);
template <class T>
void softmax_xent_backward_onehot_ref(T* dx, const T* y, const T* t_onehot, ptrdiff_t N, ptrdiff_t C);

}  // namespace bpfast
