// How the elementwise drivers use the thread pool. Compiled with baseline flags only.
//
// run_chunked(n, chunk, min_parallel, f) calls f(begin, end) over [0, n): in one call on the
// calling thread when n < min_parallel or the pool has one thread, else over fixed chunks of
// `chunk` items on the pool. Only for work whose result does not depend on how [0, n) is split
// (elementwise ops, independent rows); reductions use fixed chunks themselves (softmax_xent.cpp).
#pragma once

#include <cstddef>

#include "bpfast/threads.hpp"

namespace bpfast {

template <class F>
void run_chunked(std::ptrdiff_t n, std::ptrdiff_t chunk, std::ptrdiff_t min_parallel, const F& f) {
    if (n <= 0) return;
    if (n < min_parallel || n <= chunk || region_threads() < 2) {
        f(std::ptrdiff_t(0), n);
        return;
    }
    const std::ptrdiff_t n_chunks = (n + chunk - 1) / chunk;
    parallel_for(n_chunks, [&](std::ptrdiff_t c) {
        const std::ptrdiff_t begin = c * chunk;
        f(begin, begin + chunk < n ? begin + chunk : n);
    });
}

}  // namespace bpfast
