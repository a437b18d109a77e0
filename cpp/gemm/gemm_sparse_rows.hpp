// Zero skipping one row at a time (gemm_sparse_rows), for x·W with x mostly zeros.
// Part of the blocked GEMM (gemm_blocked.hpp, which includes it): in the same anonymous
// namespace, for the same reason (each per-ISA translation unit gets its own copy).
#pragma once

#include "gemm_tiles.hpp"
#include "gemm_zero_skip.hpp"

namespace bpfast {
namespace {

// Zero skipping one row at a time. A tile's rows share their loads of op(B), but run over every k
// any of them uses: a tile of 14 MNIST images leaves about 48% of the 784 pixels unused, one image
// 81%. With few columns (op(B) small enough to stay in L2), each row of a row-major op(A) runs
// alone over its own used k instead (gemm_sparse_rows): one FMA per vector of the row and used k,
// op(B) read in place, 64 values of k at a time for all of a chunk's rows (those rows of op(B),
// 25 KB for the book's W1, stay in L1 while the rows pass), two rows side by side (one row's
// chain of FMAs would wait on each FMA's latency), each row's sums kept in a buffer from one
// window of k to the next. The last dot_cols columns, the ones dot_edge takes in the tiles, go
// through dot_edge here too. Every element so gets the FMAs its tile gives it, in the same order
// (a sum stored and reloaded keeps its bits), less some exact zeros: the same bits (see Zero
// skipping), and the choice between the two is one of speed alone. Measured, (100,784)·(784,50)
// of MNIST images, float32 x, float64 W, medians (alternating processes): 114 -> 73 us on one
// thread, 60 -> 44 on two; on two, 1000 images 705 -> 413 us, 4000 2630 -> 2241, 20 21.0 -> 15.6.
// With float32 W (three vectors a row) level on 100 images, 4000 images 1352 -> 1700 and 20 10.9
// -> 12.8: rows of fewer than kRowMinVectors vectors keep their tiles. Tried and
// left: x^T·dout one pixel at a time, by these rows (x^T's columns strided) or by scatter (each
// image adding to its pixels' sums), 93 -> 136 and 131 us on one thread: its tiles' two parts
// already leave 63% of the (part, image) pairs out. Also left, x·W1 as above, float64 W, one
// thread (two builds alternating in one process, medians): four rows over the k any of them uses,
// each vector of op(B) loaded once for the four (they use 305 pixels of 784 where one uses 150),
// 1.16x slower; op(B) copied first with its rows starting on 64-byte lines, level (1.01-1.02x),
// and on two threads, each chunk copying all of it, 1.03-1.17x slower; a prefetch of the op(B)
// row of each row's next used k, 1.09-1.17x slower.
template <class T>
constexpr int kRowVectors = sizeof(typename Simd<T>::V) >= 64 ? 8 : 6;  // of 32 or 16 registers
constexpr ptrdiff_t kSparseRowsMaxBBytes = 512 * 1024;
constexpr ptrdiff_t kSparseRowsProbe = 4;  // rows of a tile whose used k decide (with the tile's)
constexpr ptrdiff_t kSparseRowsGain = 2;   // ... when they use at most 1/kSparseRowsGain of the tile's
constexpr int kRowMinVectors = 4;          // ... and a row has this many vectors or more
constexpr ptrdiff_t kSparseRowsChunkRows = 128;  // (see gemm_sparse_rows' chunks)

// sums[r*lds + v*W] += a[r*lda + k] * b[k*ldb + v*W] for the NV vectors v of RB <= 2 rows r, for
// the k in [0, 64) whose bit is set in used0 (row 0) and used1 (row 1), ascending. The last vector
// has last_lanes columns (1..W; the rest of its lanes add zeros). sums is aligned.
template <class T, int NV, int RB, class TA>
inline void row_sums(T* sums, ptrdiff_t lds, const TA* a, ptrdiff_t lda, const T* b, ptrdiff_t ldb, int last_lanes,
                     std::uint64_t used0, std::uint64_t used1) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    V acc[RB][NV];
#pragma GCC unroll 2
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) acc[r][v] = S::load(sums + r * lds + v * W);
    const bool edge = last_lanes < W;
    auto rank1 = [&](int r, std::uint64_t& used) __attribute__((always_inline)) {
        const ptrdiff_t k = __builtin_ctzll(used);
        used &= used - 1;
        const auto ak = S::bcast(a + r * lda + k);  // as the microkernel's: the same operation
        const T* bk = b + k * ldb;
#pragma GCC unroll 8
        for (int v = 0; v < NV - 1; ++v) acc[r][v] = S::fma(ak, S::loadu(bk + v * W), acc[r][v]);
        const T* last = bk + (NV - 1) * W;
        acc[r][NV - 1] = S::fma(ak, edge ? S::load_n(last, last_lanes) : S::loadu(last), acc[r][NV - 1]);
    };
    if constexpr (RB == 2) {
        while (used0 && used1) {
            rank1(0, used0);
            rank1(1, used1);
        }
        while (used1) rank1(1, used1);
    }
    while (used0) rank1(0, used0);
#pragma GCC unroll 2
    for (int r = 0; r < RB; ++r)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) S::storeu(sums + r * lds + v * W, acc[r][v]);
}

template <class T, int NV, int RB, class TA>
inline void dispatch_row_sums(int nv, T* sums, ptrdiff_t lds, const TA* a, ptrdiff_t lda, const T* b, ptrdiff_t ldb,
                              int last_lanes, std::uint64_t used0, std::uint64_t used1) {
    if constexpr (NV > 0) {
        if (nv == NV) return row_sums<T, NV, RB>(sums, lds, a, lda, b, ldb, last_lanes, used0, used1);
        dispatch_row_sums<T, NV - 1, RB>(nv, sums, lds, a, lda, b, ldb, last_lanes, used0, used1);
    }
}

// Bits [k0, k0 + n) of a bit array (n <= 64) as one word, bit 0 for k0.
inline std::uint64_t bit_window(const std::uint64_t* bits, ptrdiff_t k0, ptrdiff_t n) {
    const ptrdiff_t w = k0 / 64, s = k0 % 64;
    std::uint64_t x = bits[w] >> s;
    if (s && s + n > 64) x |= bits[w + 1] << (64 - s);
    return n == 64 ? x : x & ((std::uint64_t(1) << n) - 1);
}

// C = epilogue(op(A)·op(B)) for a row-major op(A) and op(B), rows one at a time (see above): the
// first N - dot_cols columns from row_sums, the rest from dot_edge (bt as gemm_blocked makes it),
// in gemm_blocked's K blocks of kc_max. With check_finite, op(B) (dense, ldb == N) is checked for
// infinities and NaNs inside the same parallel region, each chunk a part of it, rather than by
// one thread before: false when it holds one, and C, whose values then do not count, is to be
// written again over every k (see Zero skipping); the epilogue must then not update in place.
template <class T, class TA>
bool gemm_sparse_rows(T* C, ptrdiff_t ldc, const TA* A, ptrdiff_t lda, const T* Bm, ptrdiff_t ldb, ptrdiff_t M,
                      ptrdiff_t N, ptrdiff_t K, ptrdiff_t kc_max, int dot_cols, const T* bt, const Epilogue<T>& ep,
                      int threads, bool check_finite) {
    using S = Simd<T>;
    using SA = Simd<TA>;
    constexpr int W = S::W;
    constexpr int NV = kRowVectors<T>;
    const ptrdiff_t n_kb = ceil_div(K, kc_max), n_sum = N - dot_cols;
    const ptrdiff_t n_vec = ceil_div(n_sum, W), lds = n_vec * W;  // a row's sums
    const ptrdiff_t words = ceil_div(K, 64) + 1;  // a row's used k (a word more: bit_window reads ahead)
    // Row chunks, each reading op(B) once: one per thread, two when each still gets
    // kSparseRowsChunkRows rows (a thread a stalled core holds back can then be helped).
    // Measured, 2 threads, MNIST images, float32 x, float64 W (50 columns), medians of
    // alternating processes: 100 images, 2 chunks against 4, 39.9-42.6 us against 41.3-43.5
    // (minima 37.7-38.2 against 38.3-39.3), 20 images 14.0-16.0 against 15.0-23.3; 200 and 400
    // level; 1000 faster with 4 in two rounds of three (minima 380 and 383 us against 395-402).
    const ptrdiff_t per_thread = M >= 2 * kSparseRowsChunkRows * threads ? 2 : 1;
    const ptrdiff_t n_chunks = min_of(M, per_thread * threads);
    std::atomic<bool> finite{true};
    std::atomic<ptrdiff_t> skipped_total{0};  // noted once op(B) is known finite
    auto run_chunk = [&](ptrdiff_t c) {
        const ptrdiff_t i0 = M * c / n_chunks, m = M * (c + 1) / n_chunks - i0;
        if (check_finite) {
            const ptrdiff_t nb = K * N, b0 = nb * c / n_chunks;
            if (!all_finite(Bm + b0, nb * (c + 1) / n_chunks - b0)) finite.store(false, std::memory_order_relaxed);
        }
        static thread_local Scratch<T> sums_scratch;
        static thread_local Scratch<std::uint64_t> bits_scratch;
        T* sums = sums_scratch.get(m * lds);
        // bit k of row i's words: op(A)(i0 + i, k) is not 0 (NaN and inf count)
        std::uint64_t* bits = bits_scratch.get(m * words);
        for (ptrdiff_t i = 0; i < m; ++i) {
            const TA* ai = A + (i0 + i) * lda;
            std::uint64_t* bi = bits + i * words;
            for (ptrdiff_t w = 0; w < words; ++w) bi[w] = 0;
            for (ptrdiff_t k = 0; k < K; k += SA::W)  // (64 is a multiple of SA::W)
                bi[k / 64] |= std::uint64_t(SA::nonzero(load_first(ai + k, K - k))) << (k % 64);
        }
        // rows i and, when two, i + 1 over the k in [k0, k0 + 64) set in used0 and used1
        auto run_rows = [&](ptrdiff_t k0, ptrdiff_t i, bool two, std::uint64_t used0, std::uint64_t used1) {
            const TA* ai = A + (i0 + i) * lda + k0;
            for (ptrdiff_t v = 0; v < n_vec; v += NV) {
                const int nv = static_cast<int>(min_of(NV, n_vec - v));
                const int last_lanes = static_cast<int>(min_of(W, n_sum - (v + nv - 1) * W));
                T* si = sums + i * lds + v * W;
                const T* bk = Bm + k0 * ldb + v * W;
                if (two)
                    dispatch_row_sums<T, NV, 2>(nv, si, lds, ai, lda, bk, ldb, last_lanes, used0, used1);
                else
                    dispatch_row_sums<T, NV, 1>(nv, si, lds, ai, lda, bk, ldb, last_lanes, used0, used1);
            }
        };
        ptrdiff_t skipped = 0;
        for (ptrdiff_t kb = 0; kb < n_kb; ++kb) {
            const ptrdiff_t pc = kb * kc_max, kc = min_of(kc_max, K - pc);
            for (ptrdiff_t e = 0; e < m * lds; e += W) S::storeu(sums + e, S::zero());
            for (ptrdiff_t k0 = pc; k0 < pc + kc; k0 += 64) {
                const ptrdiff_t n = min_of(64, pc + kc - k0);
                for (ptrdiff_t i = 0; i < m; i += 2) {
                    const bool two = i + 1 < m;
                    const std::uint64_t used0 = bit_window(bits + i * words, k0, n);
                    const std::uint64_t used1 = two ? bit_window(bits + (i + 1) * words, k0, n) : 0;
                    skipped += n - __builtin_popcountll(used0) + (two ? n - __builtin_popcountll(used1) : 0);
                    run_rows(k0, i, two, used0, used1);
                }
            }
            // -0 (see Zero skipping): such a row's sums again, over every k of the K block
            for (ptrdiff_t i = 0; i < m; ++i) {
                T* si = sums + i * lds;
                unsigned found = 0;
                for (ptrdiff_t v = 0; v < n_vec; ++v) found |= S::negative_zeros(S::load(si + v * W));
                if (!found) continue;
                for (ptrdiff_t e = 0; e < lds; e += W) S::storeu(si + e, S::zero());
                for (ptrdiff_t k0 = pc; k0 < pc + kc; k0 += 64) {
                    const ptrdiff_t n = min_of(64, pc + kc - k0);
                    run_rows(k0, i, false, n == 64 ? ~std::uint64_t(0) : (std::uint64_t(1) << n) - 1, 0);
                }
            }
            const TileStore<T> st = tile_store_at(ep, ldc, kb == 0, kb == n_kb - 1, i0, 0);
            T* c0 = C + i0 * ldc;
            for (ptrdiff_t i = 0; i < m; ++i) {
                const TileStore<T> row = rows_from(st, i);
                for (ptrdiff_t v = 0; v < n_vec; ++v) {
                    const auto x = S::load(sums + i * lds + v * W);
                    if (st.last)
                        store_vector<T, true>(c0 + i * ldc + v * W, x, n_sum - v * W, 0, static_cast<int>(v), row);
                    else
                        store_vector<T, false>(c0 + i * ldc + v * W, x, n_sum - v * W, 0, static_cast<int>(v), row);
                }
            }
            if (dot_cols)  // over every k: the same bits as the tiles' (see dot_rows)
                dot_edge<T, W / 4>(dot_cols, static_cast<int>(m), c0 + n_sum, ldc, A + i0 * lda + pc, lda, bt + pc,
                                   K, kc, columns_from(st, n_sum), nullptr);
        }
        skipped_total.fetch_add(skipped, std::memory_order_relaxed);
    };
    if (threads > 1)
        run_parallel(n_chunks, run_chunk);
    else
        for (ptrdiff_t c = 0; c < n_chunks; ++c) run_chunk(c);
    if (!finite.load(std::memory_order_relaxed)) return false;
    if (const ptrdiff_t skipped = skipped_total.load(std::memory_order_relaxed)) detail::gemm_note_skipped(skipped);
    return true;
}

}  // namespace
}  // namespace bpfast
