// GEMM, generic path: baseline flags only (SSE2 on x86-64, NEON/none elsewhere), 16-byte vectors.
// Microkernels sgemm_generic_4x8 and dgemm_generic_4x4. Contract: include/bpfast/gemm.hpp.
#define BPFAST_VEC_BYTES 16
#include "gemm_blocked.hpp"

#include "bpfast/gemm.hpp"

namespace bpfast::gemm_generic {
using SBlock = Blocking<4, 2, 256, 128, 4096>;
using DBlock = Blocking<4, 2, 256, 128, 2048>;
}  // namespace bpfast::gemm_generic

BPFAST_DEFINE_GEMM_ISA(generic, "sgemm_generic_4x8 dgemm_generic_4x4, KC=256 MC=128")
