// Whole-network kernels: the book's TwoLayerNet step in one call, and the SGD update.
//
// Contract: row-major dense arrays aligned to their element type; N > 0 and C > 0 (the loss
// divides by N, softmax's row chunks by C); outputs overwritten, never aliasing inputs;
// reentrant (all scratch is passed in). Built from the layer kernels of ops.hpp, so they
// compute exactly what the layered path computes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bpfast {

using std::ptrdiff_t;

// What the layered path leaves behind: the Relu mask, Affine2's input h, the softmax y,
// the four gradients; dy and dh are scratch (the gradients flowing into Affine2 and Affine1).
template <class T>
struct TwoLayerOutputs {
    T* h;      // (N,H) relu(x·W1 + b1)
    bool* mask;  // (N,H) x·W1 + b1 <= 0
    T* y;      // (N,C) softmax(h·W2 + b2)
    T* dW1;    // (D,H)
    T* db1;    // (H,)
    T* dW2;    // (H,C)
    T* db2;    // (C,)
    T* dy;     // (N,C) scratch: dL/d(h·W2 + b2)
    T* dh;     // (N,H) scratch: dL/dh
};

// x is (N,D), W1 is (D,H), b1 is (H,), W2 is (H,C), b2 is (C,); the targets are labels (N,)
// in [0,C) or, when labels is null, one-hot t (N,C). Affine -> Relu -> Affine ->
// SoftmaxWithLoss forward and backward, skipping dx of the first layer; returns the loss.
// TX is T, or float with T = double (float32 data, float64 weights: x widened in the GEMM).
// With W1_update set (W1's own array, not overlapping x), also W1 -= rate * dW1 as dW1 is
// stored: sgd_update's values, one pass fewer.
template <class T, class TX = T>
double two_layer_gradient(const TwoLayerOutputs<T>& out, const TX* x, const std::int64_t* labels, const T* t_onehot,
                          const T* W1, const T* b1, const T* W2, const T* b2, ptrdiff_t N, ptrdiff_t D, ptrdiff_t H,
                          ptrdiff_t C, T* W1_update = nullptr, T rate = 0);

// param and grad are (n,): param -= lr * grad, rounded as NumPy's `param -= lr * grad` is
// (the product rounded to T, then the difference).
template <class T>
void sgd_update(T* param, const T* grad, T lr, ptrdiff_t n);

}  // namespace bpfast
