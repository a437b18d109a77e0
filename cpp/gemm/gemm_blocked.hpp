// The blocked GEMM driver (BLIS manner): pack op(B) into NR-wide panels and op(A) into
// MR-tall panels, then run a register-blocked MR x NR microkernel over them; the last K block
// applies the epilogue (bias, ReLU + mask, zero mask, SGD update) as it stores, so C is written
// once per K block.
//
// Included by exactly one translation unit per instruction set (gemm_<isa>.cpp), each compiled
// with its own -m flags. The TU specialises Simd<float> and Simd<double> (its vector type and
// a handful of operations) in this same anonymous namespace before it instantiates the driver.
// Everything here sits in an anonymous namespace, so every TU gets its own copy: the linker can
// never hand the AVX-512 instantiation to the generic path (the ODR trap). For the same reason
// this file calls no inline std:: templates, only C library functions.
//
// Blocking: K is cut into ceil(K/KC) equal blocks (a function of K alone); threads take chunks
// of rows (and, for few rows, column groups) of C. Every element of C sees the same sequence of
// FMAs whatever the chunking, so results do not depend on the thread count.
//
// Contract: as bpfast::gemm (include/bpfast/gemm.hpp): row-major, C overwritten, no aliasing.
//
// The parts, each in a header of its own that this one includes: gemm_common.hpp (Simd,
// Blocking, scratch buffers, the parallel loop), gemm_tiles.hpp (the microkernel, the columns
// past its vectors, the stores and the epilogue), gemm_pack.hpp, gemm_zero_skip.hpp,
// gemm_sparse_rows.hpp and gemm_narrow.hpp. Here: the driver, gemm_blocked, with the thresholds
// it chooses by, and the FMA probe.
#pragma once

#include "gemm_common.hpp"
#include "gemm_narrow.hpp"
#include "gemm_pack.hpp"
#include "gemm_sparse_rows.hpp"
#include "gemm_tiles.hpp"
#include "gemm_zero_skip.hpp"

namespace bpfast {
namespace {

// A layer three vectors wide (wide_layer in gemm_blocked) with op(A) transposed: op(B) read in place
// up to this size (x^T·dout of (100,784)·(100,50) float32, 20 KB: 52.2 -> 47.5 us); a larger one
// is packed for the usual tiles ((1024,784)·(1024,50), 200 KB: 449 us against 497 in place).
constexpr ptrdiff_t kWideBInPlaceBytes = 32 * 1024;

// Column panels per chunk up to which A is read in place instead of packed (measured).
constexpr ptrdiff_t kDirectMaxPanels = 4;

// A row-major op(B) beside an A read in place is read in place too up to this size (bytes), or up
// to this many row tiles of C per thread (measured: x·W1 with 50 columns, 1 and 2 threads).
constexpr ptrdiff_t kInPlaceBBytes = 16 * 1024;
constexpr ptrdiff_t kInPlaceBTilesPerThread = 4;

// A transposed op(B) that each of the threads sharing a product's rows transposes for itself, up
// to this size (bytes; see row_shares in gemm_blocked).
constexpr ptrdiff_t kRowSharesMaxBBytes = 512 * 1024;

// Packed B panels streamed past one A micro-panel (bytes): about half of L2.
constexpr ptrdiff_t kL2PanelBytes = 512 * 1024;

// Packed op(B) held at once (elements): sets the column block width for a given K.
constexpr ptrdiff_t kPackedB = ptrdiff_t(2) << 20;

// Problems below this many multiply-adds run on the calling thread (a parallel region costs
// ~1-2 us; measured crossover, see bench/gemm_bench.py).
constexpr ptrdiff_t kParallelMinFma = 96 * 1024;

template <class T, class B, class TA>
void gemm_blocked(T* C, const TA* A, const T* Bm, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, bool trans_a,
                  bool trans_b, const Epilogue<T>& ep) {
    constexpr int MR = B::mr;
    constexpr int W = Simd<T>::W;
    constexpr int NR = B::nv * W;
    constexpr int kEdgeMax = W / 4;  // columns past a panel's full vectors that edge_columns takes
    static_assert(B::mc % (2 * B::mr) == 0 && B::nc % NR == 0,
                  "MC must be an even multiple of MR (half-height chunks), NC a multiple of NR");
    if (M <= 0 || N <= 0) return;
    if (K <= 0) return fill_epilogue(C, M, N, ep);
    if constexpr (sizeof(TA) == sizeof(T)) {
        if (trans_a && narrow_transposed<T>(M, N, NR, W))
            return gemm_narrow_transposed<T, B>(C, A, Bm, M, N, K, trans_b, ep);
    }
    const ptrdiff_t ldc = row_stride(ep, N), lda = trans_a ? M : K, ldb = trans_b ? K : N;
    // op(A)(i, k) = A[i*a_i + k*a_k]; op(B)(k, j) = Bm[k*b_k + j*b_j]
    const ptrdiff_t a_i = trans_a ? 1 : lda, a_k = trans_a ? lda : 1;
    const ptrdiff_t b_k = trans_b ? 1 : ldb, b_j = trans_b ? ldb : 1;

    // K blocks: equal sizes from K alone.
    const ptrdiff_t n_kb = ceil_div(K, B::kc);
    const ptrdiff_t kc_max = ceil_div(K, n_kb);

    const int threads = (M * N >= 64 && M * N * K >= kParallelMinFma) ? detail::gemm_threads() : 1;
    // Row chunks of C (multiples of MR), and column groups of B panels when rows are few.
    const ptrdiff_t target = threads > 1 ? 4 * threads : 1;
    // Few rows and many columns (dout·W^T in backprop): the threads split the columns, and each
    // chunk packs its own panels of op(B), so that no packed block crosses from core to core.
    const bool col_split = threads > 1 && round_up(M, MR) <= B::mc && ceil_div(N, NR) >= 2 * target;
    // ... and with op(B) transposed, each chunk transposes its panels as it packs them: then one
    // chunk per thread, all rows, so that no panel is transposed twice. Measured, 2 threads,
    // medians (two builds, alternating processes), us: (100,50)·(784,50)^T float32 50.2 -> 41.3,
    // float64 82.7 -> 69.2, float64 from float32 81.1 -> 59.9, (100,100)·(1024,100)^T 91.1 ->
    // 76.5, (100,1024)·(2048,1024)^T 2358 -> 1891. (Row-major op(B), copied as it is packed,
    // keeps the smaller chunks: (100,50)·(50,784) 37.2 -> 39.5, (32,512)·(512,4096) 691 -> 766.)
    // But with op(B) small and enough rows, each thread takes an equal share of the rows and
    // transposes all of op(B) for itself: then each writes rows of C of its own. Split by columns,
    // the two threads' halves alternate along memory every half row, and each chunk ran 20% slower
    // beside the other than alone (the same chunks one after the other on one thread took the
    // one-thread time). Measured, 2 threads, medians (alternating processes), us: (100,50)·
    // (784,50)^T float32 52.8-53.1 -> 43.7-44.1, float64 103 -> 90.5, (100,100)·(1024,100)^T
    // float32 124 -> 110; slower, and so left to the columns: 20 rows (22.9 -> 24.7), op(B) of
    // 2 MB or more ((100,1024)·(2048,1024)^T 2667 -> 3341, (32,512)·(4096,512)^T 971 -> 1953).
    const bool b_transposed_split = col_split && b_j != 1;
    const bool row_shares = b_transposed_split && K * N * ptrdiff_t(sizeof(T)) <= kRowSharesMaxBBytes &&
                            M >= 2 * MR * ptrdiff_t(threads);
    const bool col_split_whole = b_transposed_split && !row_shares;
    // Half-height chunks when threads share the rows: a core stalled by the machine then holds
    // back at most a shorter chunk (measured: 2-8% on the median of 1024-2048-row products).
    // A layer three vectors wide and a few columns more (the book's hidden layer: 50 = 3*16 + 2
    // floats), op(B) row-major: tiles of WR rows by three vectors over its first 3W columns, B
    // read in place; op(A) row-major is read in place too, and dot_edge takes the few columns;
    // op(A) transposed (x^T·dout) is packed into WR-row panels, and edge_columns takes them, when
    // op(B) is small (kWideBInPlaceBytes). As two-vector panels, 32 + 18 columns, the second tile
    // would run 32 lanes for 18 columns. Measured, 2 threads, medians (two builds, alternating
    // processes), affine_forward float32: (100,784)·(784,50) 41.4 -> 36.5 us, (1024,784)·(784,50)
    // 347 -> 307 (B was packed there), 48 columns 31.5 -> 24.7; float64 (300,200)·(200,26) 38.7
    // -> 26.6; step B 121.4 -> 114.9, and with x^T·dout as well 123.2 -> 114.1. Row chunks are
    // then multiples of WR.
    const bool wide_layer = B::wr > 0 && b_j == 1 && N / W == 3 && N % W <= kEdgeMax && K >= 4 * W &&
                            (a_k == 1 || K * N * ptrdiff_t(sizeof(T)) <= kWideBInPlaceBytes);
    const ptrdiff_t chunk_rows = wide_layer ? B::wr : MR;
    // Zero skipping (used_ks): tried when the call is big enough, its first tile leaves enough k
    // unused, and op(B) is finite (checked below).
    bool skip = false;
    // (and the k a tile in the middle of op(A) uses, against its rows one at a time: gemm_sparse_rows)
    ptrdiff_t tile_used = -1, row_used = 0;  // (-1: not probed)
    if (detail::gemm_skip_zeros() && M * N * K >= kSkipMinFma) {
        const TileKs first(1, kc_max, 1, nullptr);  // (its buffers: the chunks' own, thread_local, used later)
        const int tile_rows = static_cast<int>(min_of(chunk_rows, M));
        if (used_ks<TA>(first.bits, first.list, A, a_i, a_k, tile_rows, kc_max) >= 0) {
            if (a_k == 1 && b_j == 1 && K * N * ptrdiff_t(sizeof(T)) <= kSparseRowsMaxBBytes) {
                // a tile in the middle of op(A), and kSparseRowsProbe of its rows one at a time
                const TA* mid = A + (M - tile_rows) / 2 * a_i;
                const ptrdiff_t n = used_ks<TA>(first.bits, first.list, mid, a_i, a_k, tile_rows, kc_max);
                tile_used = (n >= 0 ? n : kc_max) * kSparseRowsProbe;
                for (ptrdiff_t p = 0; p < kSparseRowsProbe; ++p) {
                    const TA* row = mid + p * tile_rows / kSparseRowsProbe * a_i;
                    const ptrdiff_t r = used_ks<TA>(first.bits, first.list, row, a_i, a_k, 1, kc_max);
                    row_used += r >= 0 ? r : kc_max;
                }
            }
            skip = true;  // (until op(B) is found not finite)
        }
    }
    ptrdiff_t mc = min_of(threads > 1 && !col_split_whole ? B::mc / 2 : B::mc, round_up(M, chunk_rows));
    // Rows too few for `target` full chunks: `target` chunks of equal height (at least MR / 2), a
    // tile each or a few, so that the threads get the same rows. Rounded up to whole tiles, 100
    // rows were 7 x 14 + 2, and one thread ran 56 of them: affine_forward (100,784)·(784,50)
    // float32 x, float64 W 75.3 -> 69.7 us, (300,784)·(784,100) float32 224 -> 210, float64
    // 200^3 154 -> 145. The three-vector tiles keep chunks of whole tiles.
    if (!col_split && ceil_div(M, mc) < target)
        mc = wide_layer ? max_of(chunk_rows, round_up(ceil_div(M, target), chunk_rows))
                        : max_of(MR / 2, ceil_div(M, target));
    if (row_shares) mc = ceil_div(M, ptrdiff_t(threads));
    const ptrdiff_t n_ic = ceil_div(M, mc);

    // Column blocks of C: all K blocks of op(B) for one are packed first (at most kPackedB
    // elements), then one parallel region runs every chunk through every K block, so a call
    // costs at most two regions per column block (and a late thread stalls few of them).
    // Blocks of equal width, and up to an eighth wider than that limit rather than one more
    // block: a narrow last block costs every row chunk another pass over op(A) (packing it, when
    // transposed) for a few columns. (2048,2048)^T·(2048,1000) float32 was 992 + 8 columns, 5%
    // slower than 992 alone; measured, 2 threads, medians (alternating processes), ms:
    // (2048,2048)^T·(2048,1000) 26.8 -> 26.0, (2048,2048)^T·(2048,1024) 27.6 -> 27.2,
    // (2048,784)^T·(2048,2048) 21.7 -> 21.2, (4096,1024)^T·(4096,1000) 28.9 -> 28.4, float64
    // (2048,1024)^T·(2048,1000) 28.9 -> 28.7, 2048^3 level.
    const ptrdiff_t nc_max = min_of(B::nc, max_of(NR, kPackedB / (n_kb * kc_max) / NR * NR));
    const ptrdiff_t n_col_blocks = ceil_div(N, nc_max + nc_max / 8);
    // (wide_layer reads op(B) in place, all N columns in one block, however long K is)
    const ptrdiff_t nc_cap = wide_layer ? N : round_up(ceil_div(N, n_col_blocks), NR);

    // A last panel of only a few columns (50 = 3*16 + 2 in double): with op(A)'s rows contiguous,
    // dot products along k (dot_edge), their columns of op(B) copied here first, bt[j*K + k]. The
    // choice depends on the layout alone, so the sums do not change with the thread count.
    // (A panel with a full vector before its few columns keeps them in its tile, when other
    // panels come before it: a one-vector tile plus dot_edge measured slower than the two-vector
    // tile, 18 = 16 + 2 floats. When it is the only panel, N < NR, dot_edge takes them: the
    // book's second layer, x·W2 with 10 = 8 + 2 doubles, its tile running 16 lanes for 10
    // columns; measured (medians, alternating processes, one thread) affine_forward (100,50)·
    // (50,10) float64 4.28 -> 3.90 us, 9 columns 4.27 -> 3.40, (1000,50)·(50,10) 21.9 -> 20.5,
    // (100,784)·(784,10) float32 x 29.4 -> 25-27; float32 (100,50)·(50,18) and 17 level. A K
    // under four vectors keeps them in its tile too: each dot product's sum across its lanes
    // outweighs its few FMAs, dx = dout·W^T of affine_backward (100,50,10) float64, 8.3 -> 7.2
    // us without.)
    const int edge = static_cast<int>(N % W);
    const bool dot_edge_on =
        a_k == 1 && edge >= 1 && edge <= kEdgeMax && (N % NR == edge || wide_layer || N < NR) && K >= 4 * W;
    static thread_local Scratch<T> bt_scratch;
    T* bt = dot_edge_on ? bt_scratch.get(edge * K) : nullptr;
    for (int j = 0; dot_edge_on && j < edge; ++j)
        for (ptrdiff_t k = 0; k < K; ++k) bt[j * K + k] = Bm[k * b_k + (N - edge + j) * b_j];

    // Zero skipping one row at a time, when its rows leave enough more k unused than its tiles:
    // op(B) checked inside its parallel region (the book's W1, 313 KB, took one thread 4 us) unless
    // the epilogue updates in place (a second pass, for a B not finite, would update twice).
    const int dot_cols = dot_edge_on ? edge : 0;
    const bool by_rows =
        skip && tile_used >= 0 && row_used * kSparseRowsGain <= tile_used && N - dot_cols > (kRowMinVectors - 1) * W;
    if (by_rows && !ep.update) {
        if (gemm_sparse_rows<T, TA>(C, ldc, A, lda, Bm, ldb, M, N, K, kc_max, dot_cols, bt, ep, threads, true)) return;
        skip = false;  // op(B) not finite: every k, in tiles
    } else if (skip) {  // op(B) checked here, in parts across the threads when it is large
        constexpr ptrdiff_t kParts = 8;
        const ptrdiff_t nb = K * N;
        bool finite[kParts];
        auto check = [&](ptrdiff_t c) {
            finite[c] = all_finite(Bm + nb * c / kParts, nb * (c + 1) / kParts - nb * c / kParts);
        };
        if (threads > 1 && nb >= (ptrdiff_t(1) << 20))
            run_parallel(kParts, check);
        else
            for (ptrdiff_t c = 0; c < kParts; ++c) check(c);
        for (ptrdiff_t c = 0; c < kParts; ++c) skip = skip && finite[c];
        if (skip && by_rows)
            return void(gemm_sparse_rows<T, TA>(C, ldc, A, lda, Bm, ldb, M, N, K, kc_max, dot_cols, bt, ep, threads, false));
    }

    static thread_local Scratch<T> b_scratch;
    T* bp = b_scratch.get(round_up(min_of(N, nc_cap), NR) * kc_max * n_kb);

    for (ptrdiff_t jc = 0; jc < N; jc += nc_cap) {
        const ptrdiff_t nc = min_of(nc_cap, N - jc);
        const ptrdiff_t n_panels = ceil_div(nc, NR);
        const ptrdiff_t kb_stride = n_panels * NR * kc_max;  // elements per packed K block
        const ptrdiff_t n_jg = (n_ic >= target || wide_layer || row_shares) ? 1
                               : col_split_whole          ? min_of(n_panels, ptrdiff_t(threads))
                                                          : min_of(n_panels, ceil_div(target, n_ic));
        const ptrdiff_t panels_per_jg = ceil_div(n_panels, n_jg);
        // Few column panels: packing A would cost more than reading it in place. A float A for a
        // double product is never widened as it is broadcast (that puts a convert and a shuffle on
        // the FMA ports for every element of every tile): row-major, its rows are widened into
        // the scratch as they are (a vectorised pass) and read there in place; transposed, packed.
        // A transposed A read in place steps a whole row of A per k: past kDirectMaxStrideBytes
        // every k of a tile lands on another page and line (x^T·dout with 784 features), so it
        // is packed; with short rows (the second layer's x^T) it is read in place.
        constexpr bool widen = sizeof(TA) != sizeof(T);
        const bool a_in_place_ok = a_k == 1 || (!widen && a_k * ptrdiff_t(sizeof(TA)) <= kDirectMaxStrideBytes);
        const bool direct = panels_per_jg <= kDirectMaxPanels && a_in_place_ok && !(wide_layer && a_k != 1);
        // A read in place and a row-major op(B): B is read in place too when it is small, or when
        // each thread has few row tiles to run past it (packing is one thread's pass, whose block
        // the other core then fetches). Otherwise B is packed: its in-place rows are read with
        // unaligned loads, strided, by every row tile; from 400 rows on (x·W1 with 50 columns) the
        // packed panels measured 9-22% faster, at 200 rows even.
        const bool b_small = K * nc * ptrdiff_t(sizeof(T)) <= kInPlaceBBytes;
        const bool few_tiles = ceil_div(M, MR) <= kInPlaceBTilesPerThread * threads;
        const bool b_in_place = wide_layer || (direct && b_j == 1 && (b_small || few_tiles));
        // Pack op(B) for every K block (in parallel, by panel groups, when it is big).
        const ptrdiff_t pack_chunk = 8;  // panels per packing chunk
        auto pack_chunk_b = [&](ptrdiff_t c) {
            const ptrdiff_t j0 = c * pack_chunk * NR, nj = min_of(pack_chunk * NR, nc - j0);
            for (ptrdiff_t kb = 0; kb < n_kb; ++kb) {
                const ptrdiff_t pc = kb * kc_max, kc = min_of(kc_max, K - pc);
                pack_b<T, NR>(bp + kb * kb_stride + j0 * kc, Bm + pc * b_k + (jc + j0) * b_j, b_k, b_j, nj, kc);
            }
        };
        const ptrdiff_t n_pack = (b_in_place || col_split) ? 0 : ceil_div(n_panels, pack_chunk);
        if (threads > 1 && n_pack > 1 && K * nc >= 64 * 1024)
            run_parallel(n_pack, pack_chunk_b);
        else
            for (ptrdiff_t c = 0; c < n_pack; ++c) pack_chunk_b(c);

        auto run_chunk = [&](ptrdiff_t c) {
            const ptrdiff_t ic = (c / n_jg) * mc, jg = c % n_jg;
            const ptrdiff_t m = min_of(mc, M - ic);
            const ptrdiff_t p0 = jg * panels_per_jg, p1 = min_of(n_panels, p0 + panels_per_jg);
            if (p0 >= p1) return;
            ptrdiff_t skipped = 0;  // zero skipping's (part, k) pairs left out, noted once at the end
            // op(B)'s panels [p0, p1) of K block kb start at b_first(kb) (kc * NR apart).
            T* own = nullptr;  // col_split: this chunk's own packed panels
            const ptrdiff_t own_stride = (p1 - p0) * NR * kc_max;
            if (col_split && !b_in_place) {
                static thread_local Scratch<T> own_scratch;
                own = own_scratch.get(own_stride * n_kb);
                for (ptrdiff_t kb = 0; kb < n_kb; ++kb) {
                    const ptrdiff_t pc = kb * kc_max, kc = min_of(kc_max, K - pc);
                    pack_b<T, NR>(own + kb * own_stride, Bm + pc * b_k + (jc + p0 * NR) * b_j, b_k, b_j,
                                  min_of(nc, p1 * NR) - p0 * NR, kc);
                }
            }
            for (ptrdiff_t kb = 0; kb < n_kb; ++kb) {
                const ptrdiff_t pc = kb * kc_max, kc = min_of(kc_max, K - pc);
                const T* b_first = own ? own + kb * own_stride : bp + kb * kb_stride + p0 * NR * kc;
                const TA* a0 = A + ic * a_i + pc * a_k;
                static thread_local Scratch<T> a_scratch;
                // widened rows are padded by a cache line, so that rows do not share cache sets
                const ptrdiff_t wide_ld = round_up(kc_max, 64 / ptrdiff_t(sizeof(T))) + 64 / ptrdiff_t(sizeof(T));
                T* ap = (!direct || widen) ? a_scratch.get(round_up(mc, MR) * wide_ld) : nullptr;
                // The tiles' used k (zero skipping): a transposed A's from its packing, in two parts
                // of rows; the others' from op(A)'s rows as each tile first runs (find_ks below), one
                // part. (Images in two parts, x·W1: 56% of the (part, pixel) pairs unused rather
                // than 50%, but each part streams op(B) from L2 again: (1024,784)·(784,1024) float32
                // 1.52x -> 1.35x with skipping, (2048,784)·(784,2048) 1.68x -> 1.51x.)
                const bool packed_bits = skip && !direct && a_k != 1;
                TileKs tks = skip ? TileKs(ceil_div(m, chunk_rows), kc, packed_bits ? 2 : 1, &skipped) : TileKs();
                std::uint64_t* pack_bits = packed_bits ? tks.bits : nullptr;
                if (!direct) {
                    if (wide_layer)
                        pack_a<T, (B::wr > 0 ? B::wr : MR)>(ap, a0, a_i, a_k, m, kc, pack_bits, tks.words, tks.parts);
                    else
                        pack_a<T, MR>(ap, a0, a_i, a_k, m, kc, pack_bits, tks.words, tks.parts);
                }
                // dot_edge reads op(A)'s rows as T: in place, or widened (by the direct path, or here)
                const T* arows = nullptr;
                ptrdiff_t arows_ld = a_i;
                if constexpr (widen) {
                    if (dot_edge_on && !direct) {
                        static thread_local Scratch<T> rows_scratch;
                        T* wide = rows_scratch.get(round_up(mc, MR) * wide_ld);
                        widen_rows(wide, wide_ld, a0, a_i, m, kc);
                        arows = wide, arows_ld = wide_ld;
                    }
                } else {
                    arows = a0;
                }
                // BLIS order: a group of B panels sized for L2 streams past each A micro-panel,
                // which stays in L1 across the group.
                const ptrdiff_t group = max_of(1, kL2PanelBytes / (NR * kc * ptrdiff_t(sizeof(T))));
                // direct: op(A)(ic + i, pc + k) = ad[i*ad_i + k*ad_k]. Widened, each tile's rows
                // are widened just before its panels run when they all run in one pass (into L1,
                // where they stay for the pass), else the chunk's rows at once.
                const bool widen_per_tile = widen && direct && (wide_layer || p1 - p0 <= group);
                const T* ad = nullptr;
                ptrdiff_t ad_i = a_i, ad_k = a_k;
                if constexpr (widen) {
                    if (direct) {
                        if (!widen_per_tile) widen_rows(ap, wide_ld, a0, a_i, m, kc);
                        ad = ap, ad_i = wide_ld, ad_k = 1;
                        arows = ap, arows_ld = wide_ld;
                    }
                } else {
                    ad = a0;
                }
                // the rows of the tile at row ir: op(A) read in place (direct), and as T (dot_edge)
                auto tile_rows = [&](ptrdiff_t ir, int mi) {
                    if (widen_per_tile) {
                        widen_rows(ap, wide_ld, a0 + ir * a_i, a_i, mi, kc);
                        return std::pair<const T*, const T*>{ap, ap};
                    }
                    return std::pair<const T*, const T*>{direct ? ad + ir * ad_i : nullptr,
                                                         arows ? arows + ir * arows_ld : nullptr};
                };
                const bool last = kb == n_kb - 1;
                // A packed tile t of mi rows through run(rows, r, st, ks, nk): whole, or its two parts
                // (rows [r, r + rows)) when it is split.
                auto in_parts = [&](ptrdiff_t t, int mi, const TileStore<T>& st, auto&& run) {
                    if (!tks.split(t)) return run(mi, 0, st, tks.ks(t), tks.n(t));
                    const int h = row_part(mi);
                    run(h, 0, st, tks.ks(t, 0), tks.n(t, 0));
                    if (mi > h) run(mi - h, h, rows_from(st, h), tks.ks(t, 1), tks.n(t, 1));
                };
                // tile t at row ir (mi rows, op(A) at `at` when direct)
                auto find_ks = [&](ptrdiff_t t, ptrdiff_t ir, int mi, const T* at) {
                    if (direct)
                        tks.find(t, at, ad_i, ad_k, mi, kc);
                    else if (pack_bits)
                        tks.from_bits(t, kc);
                    else
                        tks.find(t, a0 + ir * a_i, a_i, ptrdiff_t(1), mi, kc);
                };
                // The epilogue of the tile at C's row ic + r, column jc + j.
                auto tile_store = [&](ptrdiff_t r, ptrdiff_t j) {
                    return tile_store_at(ep, ldc, kb == 0, last, ic + r, jc + j);
                };
                if constexpr (B::wr > 0) {
                    if (wide_layer) {  // one column block (nc = N), read in place
                        for (ptrdiff_t ir = 0; ir < m; ir += B::wr) {
                            const int mi = static_cast<int>(min_of(B::wr, m - ir));
                            const auto [at, ar] = tile_rows(ir, mi);
                            const ptrdiff_t t = ir / B::wr;
                            if (skip) find_ks(t, ir, mi, at);
                            const TileStore<T> st = tile_store(ir, 0);
                            T* cp = C + (ic + ir) * ldc;
                            const T* bb = Bm + pc * b_k;
                            if (direct)
                                dispatch_rows<T, MR, NR, 3, true, kBInPlace, B::wr>(mi, cp, ldc, at, ad_i, ad_k, bb,
                                                                                    b_k, kc, 3 * W, st, tks.ks(t),
                                                                                    tks.n(t));
                            else
                                in_parts(t, mi, st, [&](int rows, int r, const TileStore<T>& s, const int* ks, ptrdiff_t nk) {
                                    dispatch_rows<T, B::wr, NR, 3, false, kBInPlace, B::wr>(
                                        rows, cp + r * ldc, ldc, ap + ir * kc + r, ptrdiff_t(0), ptrdiff_t(0), bb, b_k,
                                        kc, 3 * W, s, ks, nk);
                                });
                            if (dot_edge_on)
                                dot_edge<T, kEdgeMax>(edge, mi, cp + 3 * W, ldc, ar, arows_ld, bt + pc, K, kc,
                                                      columns_from(st, 3 * W), tks.skipping_bits(t));
                        }
                        if (!dot_edge_on && edge)  // from the packed panels, all rows at once
                            dispatch_edge<T, B::wr, kEdgeMax>(edge, static_cast<int>(m), C + ic * ldc + 3 * W, ldc, ap,
                                                              Bm + pc * b_k + 3 * W, b_k, kc,
                                                              columns_from(tile_store(0, 0), 3 * W), tks.all_bits(),
                                                              tks.words);
                        continue;
                    }
                }
                for (ptrdiff_t g0 = p0; g0 < p1; g0 += group) {
                    const ptrdiff_t g1 = min_of(p1, g0 + group);
                    for (ptrdiff_t ir = 0; ir < m; ir += MR) {
                        const int mi = static_cast<int>(min_of(MR, m - ir));
                        const auto [at, ar] = tile_rows(ir, mi);
                        const ptrdiff_t t = ir / MR;
                        if (skip && g0 == p0) find_ks(t, ir, mi, at);
                        const int* ks = tks.ks(t);
                        const ptrdiff_t nk = tks.n(t);
                        for (ptrdiff_t p = g0; p < g1; ++p) {
                            const ptrdiff_t jr = p * NR, n = min_of(NR, nc - jr);
                            const TileStore<T> st = tile_store(ir, jr);
                            T* cp = C + (ic + ir) * ldc + jc + jr;
                            // The few columns past the last panel's full vectors go to dot_edge, or
                            // from a packed A to edge_columns (below, all rows at once); the tile
                            // then takes the full vectors.
                            const int full = static_cast<int>(n / W), tail = static_cast<int>(n % W);
                            const bool split = tail >= 1 && tail <= kEdgeMax && (dot_edge_on || !direct);
                            const ptrdiff_t n_tile = split ? ptrdiff_t(full) * W : n;
                            const int nv = static_cast<int>(ceil_div(n_tile, W));
                            const T* bpanel = b_first + (p - p0) * NR * kc;
                            if (nv == 0) {
                                // only the few columns
                            } else if (b_in_place) {
                                const T* bb = Bm + pc * b_k + jc + jr;  // op(B)(pc + k, jc + jr + j) = bb[k*b_k + j]
                                if (n_tile == nv * W)
                                    dispatch_tile<T, MR, NR, B::nv, true, kBInPlace>(
                                        mi, nv, cp, ldc, at, ad_i, ad_k, bb, b_k, kc, n_tile, st, ks, nk);
                                else
                                    dispatch_tile<T, MR, NR, B::nv, true, kBInPlaceEdge>(
                                        mi, nv, cp, ldc, at, ad_i, ad_k, bb, b_k, kc, n_tile, st, ks, nk);
                            } else if (direct) {
                                dispatch_tile<T, MR, NR, B::nv, true, kBPacked>(
                                    mi, nv, cp, ldc, at, ad_i, ad_k, bpanel, ptrdiff_t(NR), kc, n_tile, st, ks, nk);
                            } else {
                                in_parts(t, mi, st, [&](int rows, int r, const TileStore<T>& s, const int* pks, ptrdiff_t pnk) {
                                    dispatch_tile<T, MR, NR, B::nv, false, kBPacked>(
                                        rows, nv, cp + r * ldc, ldc, ap + ir * kc + r, ptrdiff_t(0), ptrdiff_t(0), bpanel,
                                        ptrdiff_t(NR), kc, n_tile, s, pks, pnk);
                                });
                            }
                            if (split && dot_edge_on) {
                                const ptrdiff_t j0 = ptrdiff_t(full) * W;
                                dot_edge<T, kEdgeMax>(tail, mi, cp + j0, ldc, ar, arows_ld, bt + pc, K, kc,
                                                      columns_from(st, j0), tks.skipping_bits(t));
                            }
                        }
                    }
                    if (!direct && !dot_edge_on) {  // the group's last panel: its few columns, if any
                        const ptrdiff_t jr = (g1 - 1) * NR, n = min_of(NR, nc - jr);
                        const int tail = static_cast<int>(n % W);
                        if (tail >= 1 && tail <= kEdgeMax) {
                            const ptrdiff_t j0 = n - tail;
                            dispatch_edge<T, MR, kEdgeMax>(tail, static_cast<int>(m), C + ic * ldc + jc + jr + j0, ldc,
                                                           ap, b_first + (g1 - 1 - p0) * NR * kc + j0, ptrdiff_t(NR),
                                                           kc, columns_from(tile_store(0, jr), j0), tks.all_bits(),
                                                           tks.words);
                        }
                    }
                }
            }
            if (skipped) detail::gemm_note_skipped(skipped);
        };
        if (threads > 1)
            run_parallel(n_ic * n_jg, run_chunk);
        else
            for (ptrdiff_t c = 0; c < n_ic * n_jg; ++c) run_chunk(c);
    }
}

// The FMA rate this path could reach, for benchmarks: steps x kProbeChains independent
// accumulations acc = acc * b + c, each through the microkernel's S::fma: enough chains in flight
// to cover the latency of two FMA ports, few enough for the 16 vector registers of SSE2 and AVX2
// (16 chains and their two operands spilled: 73 GFLOP/s float32 on one core with AVX2, 90 with
// 12). Returns the floating-point operations done; the lanes' sum goes to *sink, so the loop
// cannot be dropped.
constexpr int kProbeChains = 12;

template <class T>
std::int64_t fma_probe(std::int64_t steps, double* sink) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    V acc[kProbeChains];
#pragma GCC unroll 12
    for (int i = 0; i < kProbeChains; ++i) acc[i] = S::set1(T(1) + T(i) * T(1e-3));
    const V b = S::set1(T(0.999)), c = S::set1(T(1e-3));  // acc tends to 1: no overflow, no denormals
    for (std::int64_t s = 0; s < steps; ++s) {
#pragma GCC unroll 12
        for (int i = 0; i < kProbeChains; ++i) acc[i] = S::fma(acc[i], b, c);
    }
    // acc indexed by constants only (unrolled), so it stays in registers: an array of vectors
    // in memory would be 64-byte aligned, the sanitized build's trap noted at TileStore
#pragma GCC unroll 12
    for (int i = 1; i < kProbeChains; ++i) acc[0] = S::add(acc[0], acc[i]);
    T lanes[W];
    S::storeu(lanes, acc[0]);
    double sum = 0;
    for (int l = 0; l < W; ++l) sum += double(lanes[l]);
    *sink = sum;
    return steps * kProbeChains * W * 2;
}

}  // namespace
}  // namespace bpfast

// Defines bpfast::gemm_<isa>::{sgemm, dgemm, mgemm, fma_probe_f32, fma_probe_f64, blocking} from
// the Blocking types SBlock and DBlock that the including TU declares in namespace
// bpfast::gemm_<isa>.
#define BPFAST_DEFINE_GEMM_ISA(isa, DESCRIPTION)                                                       \
    namespace bpfast::gemm_##isa {                                                                   \
    void sgemm(float* C, const float* A, const float* B, std::ptrdiff_t M, std::ptrdiff_t N,          \
               std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<float>& ep) {             \
        gemm_blocked<float, SBlock>(C, A, B, M, N, K, trans_a, trans_b, ep);                         \
    }                                                                                                \
    void dgemm(double* C, const double* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N,       \
               std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<double>& ep) {            \
        gemm_blocked<double, DBlock>(C, A, B, M, N, K, trans_a, trans_b, ep);                        \
    }                                                                                                \
    void mgemm(double* C, const float* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N,        \
               std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<double>& ep) {            \
        gemm_blocked<double, DBlock>(C, A, B, M, N, K, trans_a, trans_b, ep);                        \
    }                                                                                                \
    std::int64_t fma_probe_f32(std::int64_t steps, double* sink) { return fma_probe<float>(steps, sink); }   \
    std::int64_t fma_probe_f64(std::int64_t steps, double* sink) { return fma_probe<double>(steps, sink); } \
    const char* const blocking = DESCRIPTION;                                                        \
    }
