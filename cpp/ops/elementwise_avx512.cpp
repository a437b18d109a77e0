// Elementwise and row-wise kernels, avx512 path: -mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma, 64-byte vectors, masked tails.
// The kernels are in elementwise_kernels.hpp; contract: include/bpfast/ops_dispatch.hpp.
#define BPFAST_VEC_BYTES 64
#include "elementwise_kernels.hpp"

BPFAST_DEFINE_OPS_ISA(avx512)
