// bpfast's thread pool: parallel_for over a fixed number of chunks.
//
// Contract:
// - parallel_for(n_chunks, f) calls f(c) exactly once for every c in [0, n_chunks) and
//   returns when all calls have finished. The calling thread takes part. Which thread runs
//   which chunk varies, so callers make each chunk's work depend only on c (never on the
//   thread count): reductions are split into fixed chunks and summed in chunk order
//   afterwards, so results do not depend on num_threads().
// - One parallel region runs at a time; a call made while another runs (another Python
//   thread, or a nested call from inside f) runs its chunks inline on the calling thread.
//   Inside f of a region of 2+ chunks on 2+ threads, region_threads() is 1, so a kernel called
//   there plans for the one thread it gets.
// - f must not throw.
// - Workers start lazily, spin briefly after a region (so back-to-back kernels do not pay a
//   wake-up), then sleep. After fork() the child starts fresh workers on first use. When the
//   system refuses another thread, the regions run on the workers already started (and the
//   caller): fewer threads, never an error.
#pragma once

#include <cstddef>
#include <functional>
#include <string>

namespace bpfast {

// The most threads set_num_threads and BPFAST_NUM_THREADS take.
constexpr int kMaxThreads = 1 << 16;

// Threads used by parallel_for (the caller included); at least 1. The count set, or fewer once
// the system refused to start a worker (a thread limit, or no memory for its stack).
int num_threads();
// The count set (set_num_threads, BPFAST_NUM_THREADS or the default), whatever started.
int requested_num_threads();
// The threads a parallel_for called from here would use: 1 inside a chunk of a region on the
// pool, else num_threads(). Kernels plan their split with this.
int region_threads();
// Set the thread count (1 <= n <= kMaxThreads); takes effect at the next parallel_for.
void set_num_threads(int n);
// The default: BPFAST_NUM_THREADS when set to a whole number from 1 to kMaxThreads, else the CPUs
// this process may run on.
int default_num_threads();
// Why BPFAST_NUM_THREADS was ignored, or "" (unset, or used); read once, with the default.
const std::string& num_threads_env_problem();

void parallel_for(std::ptrdiff_t n_chunks, const std::function<void(std::ptrdiff_t)>& f);

}  // namespace bpfast
