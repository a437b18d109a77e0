// Elementwise and row-wise kernels, generic path: baseline flags only (SSE2 on x86-64), 16-byte vectors, no FMA.
// The kernels are in elementwise_kernels.hpp; contract: include/bpfast/ops_dispatch.hpp.
#define BPFAST_VEC_BYTES 16
#include "elementwise_kernels.hpp"

BPFAST_DEFINE_OPS_ISA(generic)
