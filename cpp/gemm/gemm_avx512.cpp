// GEMM, AVX-512 path (-mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma), 64-byte vectors.
// Microkernels sgemm_avx512_14x32 and dgemm_avx512_14x16. Contract: include/bpfast/gemm.hpp.
#define BPFAST_VEC_BYTES 64
#include "gemm_blocked.hpp"

#include "bpfast/gemm.hpp"

namespace bpfast::gemm_avx512 {
using SBlock = Blocking<14, 2, 256, 112, 4096>;
using DBlock = Blocking<14, 2, 256, 112, 2048>;
}  // namespace bpfast::gemm_avx512

BPFAST_DEFINE_GEMM_ISA(avx512, "sgemm_avx512_14x32 dgemm_avx512_14x16, KC=256 MC=112")
