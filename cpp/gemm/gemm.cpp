// GEMM entry points: bpfast::gemm (dispatched to the path chosen at import) and bpfast::gemm_ref
// (the plain triple loop, the oracle). Contract: include/bpfast/gemm.hpp.
#include "bpfast/gemm.hpp"

#include "bpfast/cpu.hpp"

namespace bpfast {

template <>
void gemm<float>(float* C, const float* A, const float* B, const float* bias, std::ptrdiff_t M, std::ptrdiff_t N,
                 std::ptrdiff_t K, bool trans_a, bool trans_b) {
    active_kernels().sgemm(C, A, B, bias, M, N, K, trans_a, trans_b);
}

template <>
void gemm<double>(double* C, const double* A, const double* B, const double* bias, std::ptrdiff_t M,
                  std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a, bool trans_b) {
    active_kernels().dgemm(C, A, B, bias, M, N, K, trans_a, trans_b);
}

// A is (M,K) or (K,M) when trans_a, B is (K,N) or (N,K) when trans_b, bias is (N,) or null, C is (M,N)
template <class T>
void gemm_ref(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
              bool trans_a, bool trans_b) {
    for (std::ptrdiff_t i = 0; i < M; ++i)
        for (std::ptrdiff_t j = 0; j < N; ++j) {
            T sum = 0;
            for (std::ptrdiff_t k = 0; k < K; ++k)
                sum += (trans_a ? A[k * M + i] : A[i * K + k]) * (trans_b ? B[j * K + k] : B[k * N + j]);
            C[i * N + j] = bias ? sum + bias[j] : sum;
        }
}

template void gemm_ref<float>(float*, const float*, const float*, const float*, std::ptrdiff_t, std::ptrdiff_t,
                              std::ptrdiff_t, bool, bool);
template void gemm_ref<double>(double*, const double*, const double*, const double*, std::ptrdiff_t,
                               std::ptrdiff_t, std::ptrdiff_t, bool, bool);

}  // namespace bpfast
