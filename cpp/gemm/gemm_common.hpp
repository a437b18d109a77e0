// The blocked GEMM's common ground: the Simd<T> each per-ISA translation unit specialises, the
// Blocking parameters, index arithmetic, per-thread scratch buffers, C's row stride and the
// parallel loop.
// Part of the blocked GEMM (gemm_blocked.hpp, which includes it): in the same anonymous
// namespace, for the same reason (each per-ISA translation unit gets its own copy).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>

#include "bpfast/gemm.hpp"

namespace bpfast {
namespace {

using std::ptrdiff_t;

template <class T>
struct Simd;  // specialised by the including TU

// Register block MR x (NV vectors), cache blocks KC, MC, NC (elements); WR rows for the tile of
// three vectors that layers three vectors wide take (see wide_layer in gemm_blocked), 0 for none.
template <int MR, int NV, int KC, int MC, int NC, int WR = 0>
struct Blocking {
    static constexpr int mr = MR, nv = NV, kc = KC, mc = MC, nc = NC, wr = WR;
};

inline ptrdiff_t min_of(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
inline ptrdiff_t max_of(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }
inline ptrdiff_t ceil_div(ptrdiff_t a, ptrdiff_t b) { return (a + b - 1) / b; }
inline ptrdiff_t round_up(ptrdiff_t a, ptrdiff_t m) { return ceil_div(a, m) * m; }

// A growable 64-byte aligned scratch buffer, one per thread and type (thread_local where used): no
// allocation on the hot path once warm.
template <class T>
struct Scratch {
    T* p = nullptr;
    ptrdiff_t size = 0;
    T* get(ptrdiff_t n) {
        if (n > size) {
            if (p) ::operator delete(p, std::align_val_t(64));
            p = static_cast<T*>(::operator new(static_cast<std::size_t>(n) * sizeof(T), std::align_val_t(64)));
            size = n;
        }
        return p;
    }
    ~Scratch() {
        if (p) ::operator delete(p, std::align_val_t(64));
    }
};

// C's row stride: ep.ldc, or N when that is 0 (dense).
template <class T>
ptrdiff_t row_stride(const Epilogue<T>& ep, ptrdiff_t N) {
    return ep.ldc ? ep.ldc : N;
}

// parallel_for through a baseline-compiled trampoline (gemm.cpp): building the std::function
// here would compile std::function's inline members with this TU's -m flags (the ODR trap).
template <class F>
void run_parallel(ptrdiff_t n_chunks, F& f) {
    detail::gemm_parallel_for(
        n_chunks, [](void* ctx, ptrdiff_t c) { (*static_cast<F*>(ctx))(c); }, &f);
}

}  // namespace
}  // namespace bpfast
