// prefetch_for_write (see bpfast/cache_hint.hpp). Compiled with baseline flags; PREFETCHW runs
// only where CPUID reports it.
//
// Why: after Affine.backward, the caller's optimizer writes W next (SGD: W -= lr * dW, in NumPy,
// on the calling thread). With two threads both cores read W in the forward and backward
// products, so its lines sit shared in both caches, and each store of the update waits for the
// other core to drop its copy, one line at a time: the book's W1 (784x50 float64, 313 KB) took
// 110 us to update instead of 15. Asking for ownership of all the lines at once, right after the
// backward, overlaps those waits: the update then took 10 us, and the prefetch about 11 us.
#include "bpfast/cache_hint.hpp"

#include <cstdint>

#include "bpfast/cpu.hpp"

namespace bpfast {
namespace {

constexpr std::uintptr_t kLineBytes = 64;

// Inline assembly, not __builtin_prefetch: GCC may drop a loop of nothing but prefetches (it
// did, at -O3, with the call that led to it), and its PREFETCHW needs -mprfchw for the file.
#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__aarch64__))
void prefetch_lines(std::uintptr_t line, std::uintptr_t end) {
    for (; line < end; line += kLineBytes) {
#if defined(__x86_64__)
        __asm__ volatile("prefetchw (%0)" : : "r"(line));
#else
        __asm__ volatile("prfm pstl1keep, [%0]" : : "r"(line));
#endif
    }
}
bool cpu_can_prefetch_for_write() {
#if defined(__x86_64__)
    static const bool yes = cpu_features().prefetchw;
    return yes;
#else
    return true;
#endif
}
#else
void prefetch_lines(std::uintptr_t, std::uintptr_t) {}
bool cpu_can_prefetch_for_write() { return false; }
#endif

}  // namespace

void prefetch_for_write(const void* p, std::ptrdiff_t bytes) {
    if (!p || bytes <= 0 || bytes > kPrefetchForWriteMaxBytes || !cpu_can_prefetch_for_write()) return;
    // From the line holding the first byte (p need not be line-aligned) to the last byte.
    const auto first = reinterpret_cast<std::uintptr_t>(p);
    prefetch_lines(first - first % kLineBytes, first + static_cast<std::uintptr_t>(bytes));
}

}  // namespace bpfast
