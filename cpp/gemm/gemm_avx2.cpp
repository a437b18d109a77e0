// GEMM, AVX2 path (-mavx2 -mfma), 32-byte vectors.
// Microkernels sgemm_avx2_6x16 and dgemm_avx2_6x8. Contract: include/bpfast/gemm.hpp.
#define BPFAST_VEC_BYTES 32
#include "gemm_blocked.hpp"

#include "bpfast/gemm.hpp"

namespace bpfast::gemm_avx2 {
using SBlock = Blocking<6, 2, 256, 120, 4096>;
using DBlock = Blocking<6, 2, 256, 120, 2048>;
}  // namespace bpfast::gemm_avx2

BPFAST_DEFINE_GEMM_ISA(avx2, "sgemm_avx2_6x16 dgemm_avx2_6x8, KC=256 MC=120")
