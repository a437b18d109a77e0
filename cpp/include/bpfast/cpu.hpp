// CPU feature probe and the kernel dispatch table.
//
// Contract: the path is chosen once at import (probe, or BPFAST_CPU=generic|avx2|avx512)
// and may be changed by select_path() (a test hook). active_kernels() is safe to call from
// any thread at any time; the table it returns is static and never freed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "bpfast/gemm.hpp"

namespace bpfast {

struct CpuFeatures {
    bool sse2, avx, avx2, fma, avx512f, avx512vl, avx512bw, avx512dq;
    bool prefetchw;  // PREFETCHW (CPUID 0x80000001 ECX bit 8: AMD since K6, Intel since Broadwell)
};

// One GEMM entry of the table: C = op(A)·op(B) then the epilogue (see gemm.hpp).
template <class T, class TA = T>
using GemmKernel = void (*)(T* C, const TA* A, const T* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
                            bool trans_a, bool trans_b, const Epilogue<T>& ep);

struct KernelTable {
    const char* path;  // "generic", "avx2" or "avx512"
    GemmKernel<float> sgemm;
    GemmKernel<double> dgemm;
    GemmKernel<double, float> mgemm;  // float A, double B and C
    // steps of independent FMAs through the microkernel's vectors, on the calling thread;
    // returns the floating-point operations done (the benchmarks' peak, see _peak_gflops)
    std::int64_t (*fma_probe_f32)(std::int64_t steps, double* sink);
    std::int64_t (*fma_probe_f64)(std::int64_t steps, double* sink);
    const char* blocking;  // register and cache blocks, for info()
};

struct PathChoice {
    const KernelTable* kernels;
    std::string reason;
};

CpuFeatures cpu_features();
std::vector<std::string> compiled_paths();
// Choose a path: requested is "" (probe), or a path name; an unsupported or unknown request
// falls back to the best supported path and says so in the reason.
PathChoice select_path(const std::string& requested, const std::string& source);
// The chosen path; the first call selects it from the environment (BPFAST_CPU).
const KernelTable& active_kernels();
PathChoice active_choice();

}  // namespace bpfast
