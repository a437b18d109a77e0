// Which elementwise kernel table runs: the one of the path runtime/cpu.cpp chose (probe,
// BPFAST_CPU, or the _set_cpu_path test hook). Compiled with baseline flags.
#include "bpfast/ops_dispatch.hpp"

#include <cstring>

#include "bpfast/cpu.hpp"

namespace bpfast {

const OpsTable& active_ops() {
    const char* path = active_kernels().path;
#if BPFAST_HAVE_AVX512
    if (std::strcmp(path, "avx512") == 0) return ops_avx512::table;
#endif
#if BPFAST_HAVE_AVX2
    if (std::strcmp(path, "avx2") == 0) return ops_avx2::table;
#endif
    (void)path;
    return ops_generic::table;
}

}  // namespace bpfast
