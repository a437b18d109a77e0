// CPU feature probe and dispatch: which GEMM translation unit runs.
//
// Contract: the table is chosen on first use (from BPFAST_CPU or the probe) and can be
// switched by select_path() (test hook); reads and switches are atomic, so a kernel running
// on another thread finishes on the table it started with. Compiled with baseline flags.
#include <atomic>
#include <cstdlib>
#include <mutex>

#include "bpfast/cpu.hpp"

namespace bpfast {
namespace {

#define BPFAST_KERNEL_TABLE(isa) \
    KernelTable{#isa, gemm_##isa::sgemm, gemm_##isa::dgemm, gemm_##isa::mgemm, gemm_##isa::blocking}

const KernelTable generic_table = BPFAST_KERNEL_TABLE(generic);
#if BPFAST_HAVE_AVX2
const KernelTable avx2_table = BPFAST_KERNEL_TABLE(avx2);
#endif
#if BPFAST_HAVE_AVX512
const KernelTable avx512_table = BPFAST_KERNEL_TABLE(avx512);
#endif

std::atomic<const KernelTable*> active{nullptr};
std::mutex choice_mutex;
std::string active_reason;  // guarded by choice_mutex

// Whether this machine runs the path (empty string) or why not.
std::string missing_for(const std::string& path) {
    const CpuFeatures f = cpu_features();
    if (path == "generic") return "";
    if (path == "avx2") {
#if BPFAST_HAVE_AVX2
        return f.avx2 && f.fma ? "" : "the CPU lacks avx2/fma";
#else
        return "this build has no avx2 kernels";
#endif
    }
    if (path == "avx512") {
#if BPFAST_HAVE_AVX512
        return f.avx512f && f.avx512vl && f.avx512bw && f.avx512dq && f.fma ? ""
                                                                            : "the CPU lacks avx512f/vl/bw/dq";
#else
        return "this build has no avx512 kernels";
#endif
    }
    return "it is not one of generic|avx2|avx512";
}

const KernelTable* table_for(const std::string& path) {
#if BPFAST_HAVE_AVX512
    if (path == "avx512") return &avx512_table;
#endif
#if BPFAST_HAVE_AVX2
    if (path == "avx2") return &avx2_table;
#endif
    (void)path;
    return &generic_table;
}

std::string best_path() {
    for (const char* path : {"avx512", "avx2"})
        if (missing_for(path).empty()) return path;
    return "generic";
}

}  // namespace

CpuFeatures cpu_features() {
    CpuFeatures f{};
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    f.sse2 = __builtin_cpu_supports("sse2");
    f.avx = __builtin_cpu_supports("avx");
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512dq = __builtin_cpu_supports("avx512dq");
#endif
    return f;
}

std::vector<std::string> compiled_paths() {
    std::vector<std::string> paths{"generic"};
#if BPFAST_HAVE_AVX2
    paths.emplace_back("avx2");
#endif
#if BPFAST_HAVE_AVX512
    paths.emplace_back("avx512");
#endif
    return paths;
}

PathChoice select_path(const std::string& requested, const std::string& source) {
    const std::string best = best_path();
    std::string reason;
    std::string path = best;
    if (requested.empty()) {
        reason = "probe: " + best + " is the best path this CPU and build support";
    } else {
        const std::string missing = missing_for(requested);
        if (missing.empty()) {
            path = requested;
            reason = source + "=" + requested;
        } else {
            reason = source + "=" + requested + " ignored (" + missing + "); probe chose " + best;
        }
    }
    std::lock_guard<std::mutex> lock(choice_mutex);
    active.store(table_for(path));
    active_reason = reason;
    return {table_for(path), reason};
}

const KernelTable& active_kernels() {
    const KernelTable* t = active.load();
    if (t) return *t;
    const char* env = std::getenv("BPFAST_CPU");
    return *select_path(env ? env : "", "BPFAST_CPU").kernels;
}

PathChoice active_choice() {
    const KernelTable& t = active_kernels();
    std::lock_guard<std::mutex> lock(choice_mutex);
    return {&t, active_reason};
}

}  // namespace bpfast
