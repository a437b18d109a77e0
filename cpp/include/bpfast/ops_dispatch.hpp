// The per-ISA tables of the elementwise and row-wise kernels (exp, ReLU, sigmoid, softmax,
// softmax with loss), one per instruction set (cpp/ops/elementwise_<isa>.cpp), and the table
// of the active path.
//
// Contract: the kernels here run on one thread over the range they are given (the drivers in
// cpp/ops/*.cpp split work across the pool); arguments as in bpfast/ops.hpp. The active table
// follows the GEMM path chosen in runtime/cpu.cpp (probe, BPFAST_CPU, or _set_cpu_path), read
// at every call, so switching the path switches both.
#pragma once

#include <cstddef>
#include <cstdint>

namespace bpfast {

template <class T>
struct ElementwiseKernels {
    // x, out are (n,)
    void (*exp)(T* out, const T* x, std::ptrdiff_t n);
    void (*relu_forward)(T* out, bool* mask, const T* x, std::ptrdiff_t n);
    // the same, for outputs far larger than the caches (non-temporal stores where the path has them)
    void (*relu_forward_stream)(T* out, bool* mask, const T* x, std::ptrdiff_t n);
    void (*relu_backward)(T* dout, const bool* mask, std::ptrdiff_t n);
    void (*sigmoid_forward)(T* out, const T* x, std::ptrdiff_t n);
    void (*sigmoid_backward)(T* dx, const T* dout, const T* out, std::ptrdiff_t n);
    // x, y are (rows,C)
    void (*softmax_rows)(T* y, const T* x, std::ptrdiff_t rows, std::ptrdiff_t C);
    // softmax of the rows, returning sum_i log(y[i, t_i] + 1e-7) in double (rows summed in order)
    double (*softmax_xent_rows)(T* y, const T* x, const std::int64_t* labels, std::ptrdiff_t rows,
                                std::ptrdiff_t C);
    double (*softmax_xent_rows_onehot)(T* y, const T* x, const T* t_onehot, std::ptrdiff_t rows,
                                       std::ptrdiff_t C);
    // dx = y; dx[i, t_i] -= 1; dx /= batch, for these rows
    void (*xent_backward_rows)(T* dx, const T* y, const std::int64_t* labels, std::ptrdiff_t rows,
                               std::ptrdiff_t C, T batch);
    // dx = (y - t) / batch over n elements
    void (*xent_backward_onehot)(T* dx, const T* y, const T* t_onehot, std::ptrdiff_t n, T batch);
    // x is (rows,cols): sums[j] = sum of column j, added in row order from zero
    void (*column_sums)(T* sums, const T* x, std::ptrdiff_t rows, std::ptrdiff_t cols);
};

struct OpsTable {
    const char* path;  // "generic", "avx2" or "avx512"
    ElementwiseKernels<float> f32;
    ElementwiseKernels<double> f64;
};

// The table of the active path (see runtime/cpu.hpp).
const OpsTable& active_ops();

template <class T>
const ElementwiseKernels<T>& ops_kernels();
template <>
inline const ElementwiseKernels<float>& ops_kernels<float>() {
    return active_ops().f32;
}
template <>
inline const ElementwiseKernels<double>& ops_kernels<double>() {
    return active_ops().f64;
}

namespace ops_generic {
extern const OpsTable table;
}
namespace ops_avx2 {
extern const OpsTable table;
}
namespace ops_avx512 {
extern const OpsTable table;
}

}  // namespace bpfast
