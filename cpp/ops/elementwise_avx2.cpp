// Elementwise and row-wise kernels, avx2 path: -mavx2 -mfma, 32-byte vectors.
// The kernels are in elementwise_kernels.hpp; contract: include/bpfast/ops_dispatch.hpp.
#define BPFAST_VEC_BYTES 32
#include "elementwise_kernels.hpp"

BPFAST_DEFINE_OPS_ISA(avx2)
