// CPU feature probe and dispatch: which GEMM translation unit runs.
//
// Contract: the table is chosen on first use (from BPFAST_CPU or the probe) and can be
// switched by select_path() (test hook); reads and switches are atomic, so a kernel running
// on another thread finishes on the table it started with. Compiled with baseline flags.
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>

#include "bpfast/cpu.hpp"

#if defined(__x86_64__)
#define BPFAST_X86_64 1
#include <cpuid.h>
#endif

namespace bpfast {
namespace {

#define BPFAST_KERNEL_TABLE(isa)                                                              \
    KernelTable{#isa, gemm_##isa::sgemm, gemm_##isa::dgemm, gemm_##isa::mgemm,                  \
                gemm_##isa::fma_probe_f32, gemm_##isa::fma_probe_f64, gemm_##isa::blocking}

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
    [[maybe_unused]] const CpuFeatures f = cpu_features();  // unused where no AVX path is built
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

// The fastest path this machine runs; why_not collects why each faster one was passed over.
std::string best_path(std::string& why_not) {
    for (const char* path : {"avx512", "avx2"}) {
        const std::string missing = missing_for(path);
        if (missing.empty()) return path;
        why_not += (why_not.empty() ? "" : "; ") + std::string(path) + ": " + missing;
    }
    return "generic";
}

}  // namespace

#if BPFAST_X86_64
namespace {

struct CpuidRegs {
    unsigned eax, ebx, ecx, edx;
};

// CPUID leaf/subleaf (zeros beyond the highest leaf), and XCR0 (the register state the OS saves).
// Plain CPUID rather than __builtin_cpu_supports, which needs libgcc/compiler-rt's __cpu_model
// (not linked under clang-cl).
CpuidRegs cpuid(unsigned leaf, unsigned subleaf) {
    CpuidRegs r{};
    if (!__get_cpuid_count(leaf, subleaf, &r.eax, &r.ebx, &r.ecx, &r.edx)) r = {};
    return r;
}

std::uint64_t xcr0() {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return (std::uint64_t(hi) << 32) | lo;
}

bool bit(unsigned reg, int n) { return (reg >> n) & 1u; }

}  // namespace
#endif

CpuFeatures cpu_features() {
    CpuFeatures f{};
#if BPFAST_X86_64
    const CpuidRegs l1 = cpuid(1, 0), l7 = cpuid(7, 0), ext1 = cpuid(0x80000001u, 0);
    // AVX state (XMM|YMM) and AVX-512 state (also opmask, ZMM_Hi256, Hi16_ZMM) enabled by the OS.
    const std::uint64_t xcr = bit(l1.ecx, 27) ? xcr0() : 0;  // OSXSAVE: XGETBV is usable
    const bool ymm = (xcr & 0x6) == 0x6;
#if defined(__APPLE__)
    const bool zmm = ymm;  // macOS enables the AVX-512 state lazily, on first use (as compiler-rt assumes)
#else
    const bool zmm = ymm && (xcr & 0xE0) == 0xE0;
#endif
    f.sse2 = bit(l1.edx, 26);
    f.avx = ymm && bit(l1.ecx, 28);
    f.fma = f.avx && bit(l1.ecx, 12);
    f.avx2 = f.avx && bit(l7.ebx, 5);
    f.avx512f = zmm && bit(l7.ebx, 16);
    f.avx512dq = f.avx512f && bit(l7.ebx, 17);
    f.avx512bw = f.avx512f && bit(l7.ebx, 30);
    f.avx512vl = f.avx512f && bit(l7.ebx, 31);
    f.prefetchw = bit(ext1.ecx, 8);
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
    std::string why_not;
    const std::string best = best_path(why_not);
    std::string reason;
    std::string path = best;
    if (requested.empty()) {
        reason = "probe: " + best + " is the best path this CPU and build support";
        if (!why_not.empty()) reason += " (" + why_not + ")";
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
