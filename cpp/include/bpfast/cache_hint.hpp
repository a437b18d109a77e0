// A cache hint for the layered path (see runtime/cache_hint.cpp).
//
// Contract: prefetch_for_write(p, bytes) asks for [p, p + bytes) in the calling core's cache,
// owned, ready to be written (PREFETCHW where the CPU has it, PRFM PST on arm64). No memory is
// read into a result or written; p may point to read-only memory. A no-op above
// kPrefetchForWriteMaxBytes, and on CPUs or compilers without such a prefetch.
#pragma once

#include <cstddef>

namespace bpfast {

// About an L2 cache: more would push the lines out again before they are written.
constexpr std::ptrdiff_t kPrefetchForWriteMaxBytes = 1024 * 1024;

void prefetch_for_write(const void* p, std::ptrdiff_t bytes);

}  // namespace bpfast
