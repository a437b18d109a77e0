// GEMM for bpfast: C = op(A)·op(B) (+ bias row), row-major, float and double.
//
// Contract:
// - Row-major, dense: op(A) is (M,K) and stored as A (M,K), or as A (K,M) when trans_a;
//   op(B) is (K,N) and stored as B (K,N), or as B (N,K) when trans_b; C is (M,N).
//   Transposes are read in place by the packing routines, never materialised.
// - C is overwritten (beta = 0): C = op(A)·op(B), plus bias[j] on every row when bias
//   is not null. K = 0 gives C = bias (or zeros). C must not alias A, B or bias.
// - Thread safety: reentrant; each call allocates its own packing buffers.
#pragma once

#include <cstddef>

namespace bpfast {

template <class T>
using GemmFn = void (*)(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N,
                        std::ptrdiff_t K, bool trans_a, bool trans_b);

// The blocked kernel on the path chosen at import (see runtime/cpu.hpp).
template <class T>
void gemm(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
          bool trans_a, bool trans_b);

// The plain triple loop: the oracle in tests.
template <class T>
void gemm_ref(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N,
              std::ptrdiff_t K, bool trans_a, bool trans_b);

// One translation unit per instruction set defines these (gemm/gemm_<isa>.cpp).
#define BPFAST_DECLARE_GEMM_ISA(isa)                                                                 \
    namespace gemm_##isa {                                                                         \
    void sgemm(float* C, const float* A, const float* B, const float* bias, std::ptrdiff_t M,      \
               std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a, bool trans_b);                    \
    void dgemm(double* C, const double* A, const double* B, const double* bias, std::ptrdiff_t M,  \
               std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a, bool trans_b);                    \
    extern const char* const blocking;                                                             \
    }
BPFAST_DECLARE_GEMM_ISA(generic)
BPFAST_DECLARE_GEMM_ISA(avx2)
BPFAST_DECLARE_GEMM_ISA(avx512)
#undef BPFAST_DECLARE_GEMM_ISA

}  // namespace bpfast
