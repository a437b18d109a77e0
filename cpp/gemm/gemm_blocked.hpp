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
// three vectors that layers three vectors wide take (see wide_layer below), 0 for none.
template <int MR, int NV, int KC, int MC, int NC, int WR = 0>
struct Blocking {
    static constexpr int mr = MR, nv = NV, kc = KC, mc = MC, nc = NC, wr = WR;
};

inline ptrdiff_t min_of(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
inline ptrdiff_t max_of(ptrdiff_t a, ptrdiff_t b) { return a > b ? a : b; }
inline ptrdiff_t ceil_div(ptrdiff_t a, ptrdiff_t b) { return (a + b - 1) / b; }
inline ptrdiff_t round_up(ptrdiff_t a, ptrdiff_t m) { return ceil_div(a, m) * m; }

// A growable 64-byte aligned scratch buffer, one per thread and type (thread_local below): no
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

// How a microkernel stores its tile: overwrite (first K block) or add to C; on the last K block
// add bias, apply the ReLU writing its mask, zero where zero is set, then update -= rate * C.
// bias, mask, zero and update point at the tile's column 0; their rows are ldm apart.
template <class T>
struct TileStore {
    bool first, last, relu;
    const T* bias;
    bool* mask;
    const bool* zero;
    T* update;
    T rate;
    ptrdiff_t ldm;
};
// Under 64 bytes: GCC gives a 64-byte local of the AVX-512 unit 64-byte alignment and clears it
// with one aligned vector store, which faults on ASan's use-after-return stack (its frames keep
// 32-byte alignment only), so a sanitized build crashed in every product.
static_assert(sizeof(TileStore<double>) < 64, "see above");

// Whether storing the tile does more than write or add its sums.
template <class T>
bool has_epilogue(const TileStore<T>& st) {
    return st.last && (st.bias || st.relu || st.zero || st.update);
}

// st for the tile's columns from j0 on.
template <class T>
TileStore<T> columns_from(TileStore<T> st, ptrdiff_t j0) {
    if (st.bias) st.bias += j0;
    if (st.mask) st.mask += j0;
    if (st.zero) st.zero += j0;
    if (st.update) st.update += j0;
    return st;
}
// ... for its rows from i0 on.
template <class T>
TileStore<T> rows_from(TileStore<T> st, ptrdiff_t i0) {
    if (st.mask) st.mask += i0 * st.ldm;
    if (st.zero) st.zero += i0 * st.ldm;
    if (st.update) st.update += i0 * st.ldm;
    return st;
}

// The store of the tile at C's row i, column j (C's rows ldc apart), in the first and/or last K
// block: ep's epilogue on the last.
template <class T>
TileStore<T> tile_store_at(const Epilogue<T>& ep, ptrdiff_t ldc, bool first, bool last, ptrdiff_t i, ptrdiff_t j) {
    TileStore<T> st{first, last, false, nullptr, nullptr, nullptr, nullptr, T(0), ldc};
    if (last) {
        st.bias = ep.bias ? ep.bias + j : nullptr;
        st.relu = ep.relu;
        st.mask = ep.mask ? ep.mask + i * ldc + j : nullptr;
        st.zero = ep.zero_mask ? ep.zero_mask + i * ldc + j : nullptr;
        st.update = ep.update ? ep.update + i * ldc + j : nullptr;
        st.rate = ep.update_rate;
    }
    return st;
}

// x as computed, in a register, never folded into the operation that uses it. The ISA
// translation units compile with -ffp-contract=fast, and the SGD step must round rate * g before
// the difference (a build without this fails the update tests); a vector loaded for several FMAs
// is loaded once instead of being each one's memory operand. The empty asm leaves x where it is.
template <class X>
inline X opaque(X x) {
#if defined(__AVX512F__)
    __asm__("" : "+v"(x));
#elif defined(__x86_64__) || defined(__i386__)
    __asm__("" : "+x"(x));
#else
    __asm__("" : "+m"(x));
#endif
    return x;
}

// The first n elements at p as a vector, zeros past them (n may be <= 0 or more than a vector).
// Always inlined: edge_columns calls it for every k, and GCC once left it out of line there (7% of
// (1024,784)^T·(1024,50) float32).
template <class T>
__attribute__((always_inline)) inline typename Simd<T>::V load_first(const T* p, ptrdiff_t n) {
    using S = Simd<T>;
    return n >= S::W ? S::loadu(p) : n > 0 ? S::load_n(p, n) : S::zero();
}
// ... from a TA array as T: TA is T, or float widened to double (exactly; packing a float A
// for a double product)
template <class T, class TA>
__attribute__((always_inline)) inline typename Simd<T>::V load_first_as(const TA* p, ptrdiff_t n) {
    using S = Simd<T>;
    if constexpr (sizeof(TA) == sizeof(T))
        return load_first(p, n);
    else
        return S::load_widened(p, n >= S::W ? S::W : n > 0 ? n : 0);
}

// The scalar ReLU of the epilogue: mask = v <= 0 (NaN: false, kept), written when mask is set.
template <class T>
inline T relu_scalar(T v, bool* mask) {
    const bool masked = v <= T(0);
    if (mask) *mask = masked;
    return masked ? T(0) : v;
}

// How the microkernel reads B: packed (b[k*NRP + j], zero-padded, aligned), or in place (b[k*bks +
// j], row-major op(B)), every vector full, or the last one cut to the panel's n columns.
enum BRead { kBPacked, kBInPlace, kBInPlaceEdge };

// Rows of op(B) prefetched kBPrefetchRows ahead of the one read:
// - packed panels always: each streams from L2 past an A micro-panel held in L1, and the
//   prefetch hides that latency. Measured, 2 threads, medians: 1024x1024x784 float32 5691 ->
//   5424 us, 784x1024x1024 with A transposed 5678 -> 5361, 4096x1024x784 22254 -> 21360, step C
//   12.60 -> 12.05 ms; 1 thread: 1024x1024x784 float64 1.02-1.04x. 16 rows ahead measured the same;
// - in-place rows only when at least kBInPlacePrefetchStrideBytes apart: rows a page apart
//   (x^T·dout as C^T = dout^T·x, see gemm_narrow_transposed) defeat the hardware prefetchers.
//   Measured on (1024,1024)^T·(1024,10) float32, 2 threads: 143 us without, 125 at 4 rows, 105
//   at 8, 109 at 16. The book's in-place rows (W1 with 50 columns: 200-400 bytes) are close
//   enough for the hardware and not prefetched.
constexpr ptrdiff_t kBPrefetchRows = 8;
constexpr ptrdiff_t kBInPlacePrefetchStrideBytes = 2048;

// One vector of a microkernel's tile stored at p as st says (the epilogue only when EPILOGUE):
// row i, vector j of the tile, nj columns left from it (lanes past nj are dropped). v comes by
// value, so the accumulators can stay in registers: passed by reference they would have to live
// in memory (and, in the sanitized build, could meet the alignment trap noted at TileStore).
template <class T, bool EPILOGUE>
__attribute__((always_inline)) inline void store_vector(T* p, typename Simd<T>::V v, ptrdiff_t nj, int i, int j,
                                                        const TileStore<T>& st) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    const bool full = nj >= W;
    if (!st.first) v = S::add(full ? S::loadu(p) : S::load_n(p, nj), v);
    if constexpr (EPILOGUE) {
        if (st.bias) v = S::add(v, full ? S::loadu(st.bias + j * W) : S::load_n(st.bias + j * W, nj));
        if (st.relu) v = S::relu(v, st.mask ? st.mask + i * st.ldm + j * W : nullptr, nj);
        if (st.zero) v = S::zero_where(v, st.zero + i * st.ldm + j * W, nj);
        if (st.update) {
            T* u = st.update + i * st.ldm + j * W;
            const V step = opaque(S::mul(S::set1(st.rate), v));  // rounded before the difference
            const V w = S::sub(full ? S::loadu(u) : S::load_n(u, nj), step);
            if (full)
                S::storeu(u, w);
            else
                S::store_n(u, w, nj);
        }
    }
    if (full)
        S::storeu(p, v);
    else
        S::store_n(p, v, nj);
}

// Zero skipping and the sign of zero: a skipped k adds a zero product, +0.0 or -0.0, and that
// changes a sum only when the sum is -0.0 at that moment (+0.0 makes it +0.0). A sum that skips
// is therefore the full sum's bits, except that it may be -0.0 where the full sum is +0.0
// (denormal or signed-zero inputs, whose products round to -0.0). Every kernel that skips checks
// its sums for -0.0 before it stores them, and where it finds one runs the tile again over every
// k: the rare tile pays twice, the others one test per vector. This is the test: whether any of
// the n accumulators at acc holds a -0.0; if so they are reset to zero for that second run.
// (Inlined, with n a constant: the accumulators stay in registers.)
template <class T>
__attribute__((always_inline)) inline bool reset_if_negative_zero(typename Simd<T>::V* acc, int n) {
    unsigned found = 0;
#pragma GCC unroll 32
    for (int i = 0; i < n; ++i) found |= Simd<T>::negative_zeros(acc[i]);
    if (!found) return false;
#pragma GCC unroll 32
    for (int i = 0; i < n; ++i) acc[i] = Simd<T>::zero();
    return true;
}

// The microkernel: RM rows (<= the packed stride MRP) by NVC vectors (<= NRP / W) of C from an A
// panel and a B panel (as BR says); c is (m<=RM, n) with row stride ldc (n <= NVC*W; lanes past n
// are computed and dropped). A is packed, a[k*MRP + i], or when DIRECT read in place,
// a[i*ars + k*aks]. k runs over [0, kc), or over ks[0, nk) when ks is set (the k the tile's
// rows use, ascending and padded, see used_ks: the others would add exact zeros).
template <class T, int MRP, int NRP, int RM, int NVC, bool DIRECT, int BR, class TA>
inline void microkernel(T* c, ptrdiff_t ldc, const TA* a, ptrdiff_t ars, ptrdiff_t aks, const T* b, ptrdiff_t bks,
                        ptrdiff_t kc, ptrdiff_t n, const TileStore<T>& st, const int* ks, ptrdiff_t nk) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    const ptrdiff_t last_lanes = n - (NVC - 1) * W;  // kBInPlaceEdge: lanes of the last vector
    V acc[RM][NVC];
#pragma GCC unroll 16
    for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NVC; ++j) acc[i][j] = S::zero();
    // The update's lines may sit in the other core's cache (both read W in the forward): asked
    // for while the tile runs. Without this, step B lost 10 us of 120 to those stores.
    if (st.last && st.update) {
#pragma GCC unroll 16
        for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NVC; ++j) S::prefetch_for_write(st.update + i * st.ldm + j * W);
    }
    const bool prefetch_b = BR == kBPacked || bks * ptrdiff_t(sizeof(T)) >= kBInPlacePrefetchStrideBytes;
    const ptrdiff_t b_row = BR == kBPacked ? ptrdiff_t(NRP) : bks;
    // one k: the rank-1 update of the tile, and op(B)'s row k_ahead prefetched
    auto rank1 = [&](ptrdiff_t k, ptrdiff_t k_ahead) __attribute__((always_inline)) {
        const T* bk = b + k * b_row;
        const TA* ak = DIRECT ? a + k * aks : a + k * MRP;
        V bv[NVC];
        if (prefetch_b) {
#pragma GCC unroll 8
            for (int j = 0; j < NVC; ++j) __builtin_prefetch(b + k_ahead * b_row + j * W, 0, 3);
        }
#pragma GCC unroll 8
        for (int j = 0; j < NVC; ++j) {
            if constexpr (BR == kBPacked)
                bv[j] = S::load(bk + j * W);
            else if (BR == kBInPlaceEdge && j == NVC - 1)
                bv[j] = S::load_n(bk + j * W, last_lanes);
            else
                bv[j] = S::loadu(bk + j * W);
        }
#pragma GCC unroll 16
        for (int i = 0; i < RM; ++i) {
            const auto ai = S::bcast(DIRECT ? ak + i * ars : ak + i);
#pragma GCC unroll 8
            for (int j = 0; j < NVC; ++j) acc[i][j] = S::fma(ai, bv[j], acc[i][j]);
        }
    };
    bool every_k = !ks;
    if (ks) {
        for (ptrdiff_t e = 0; e < nk; ++e) rank1(ks[e], ks[e + kBPrefetchRows]);
        every_k = reset_if_negative_zero<T>(acc[0], RM * NVC);
    }
    if (every_k) {
#pragma GCC unroll 2
        for (ptrdiff_t k = 0; k < kc; ++k) rank1(k, k + kBPrefetchRows);
    }
    // A tile with an epilogue stores through a loop of its own: the plain store then tests
    // nothing per vector (three per-vector tests cost 0.5 us of 3 on a 100x50x10 product).
    if (has_epilogue(st)) {
#pragma GCC unroll 16
        for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NVC; ++j) {
                if (n - j * W <= 0) break;
                store_vector<T, true>(c + i * ldc + j * W, acc[i][j], n - j * W, i, j, st);
            }
    } else {
#pragma GCC unroll 16
        for (int i = 0; i < RM; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NVC; ++j) {
                if (n - j * W <= 0) break;
                store_vector<T, false>(c + i * ldc + j * W, acc[i][j], n - j * W, i, j, st);
            }
    }
}

// microkernel<.., RM, NVC> for run-time m <= RM and NVC = ceil(n / W) <= NV.
template <class T, int MRP, int NRP, int NVC, bool DIRECT, int BR, int RM, class TA>
inline void dispatch_rows(int m, T* c, ptrdiff_t ldc, const TA* a, ptrdiff_t ars, ptrdiff_t aks, const T* b,
                          ptrdiff_t bks, ptrdiff_t kc, ptrdiff_t n, const TileStore<T>& st, const int* ks,
                          ptrdiff_t nk) {
    if constexpr (RM > 0) {
        if (m == RM)
            microkernel<T, MRP, NRP, RM, NVC, DIRECT, BR>(c, ldc, a, ars, aks, b, bks, kc, n, st, ks, nk);
        else
            dispatch_rows<T, MRP, NRP, NVC, DIRECT, BR, RM - 1>(m, c, ldc, a, ars, aks, b, bks, kc, n, st, ks, nk);
    }
}
template <class T, int MRP, int NRP, int NVC, bool DIRECT, int BR, class TA>
inline void dispatch_tile(int m, int nv, T* c, ptrdiff_t ldc, const TA* a, ptrdiff_t ars, ptrdiff_t aks,
                          const T* b, ptrdiff_t bks, ptrdiff_t kc, ptrdiff_t n, const TileStore<T>& st, const int* ks,
                          ptrdiff_t nk) {
    if constexpr (NVC > 0) {
        if (nv == NVC)
            dispatch_rows<T, MRP, NRP, NVC, DIRECT, BR, MRP>(m, c, ldc, a, ars, aks, b, bks, kc, n, st, ks, nk);
        else
            dispatch_tile<T, MRP, NRP, NVC - 1, DIRECT, BR>(m, nv, c, ldc, a, ars, aks, b, bks, kc, n, st, ks, nk);
    }
}

// Element (i, j) of a tile as the microkernel's store leaves it: the sum v stored (first K block)
// or added to C, then on the last K block the bias, the ReLU, the zero mask and the update, in
// scalar form.
template <class T>
inline void store_scalar(T* c, ptrdiff_t ldc, int i, int j, T v, const TileStore<T>& st) {
    T* p = c + i * ldc + j;
    if (!st.first) v = *p + v;
    if (st.last) {
        if (st.bias) v = v + st.bias[j];
        if (st.relu) v = relu_scalar(v, st.mask ? st.mask + i * st.ldm + j : nullptr);
        if (st.zero && st.zero[i * st.ldm + j]) v = T(0);
    }
    *p = v;
    if (st.last && st.update) {
        T& u = st.update[i * st.ldm + j];
        u = u - opaque(st.rate * v);
    }
}

// A panel's last few columns, r <= W/4 of them past its full vectors (50 = 3*16 + 2 columns):
// as a tile they would cost a whole vector of FMAs per row and k for r useful lanes. From packed
// A panels (a[k*MRP + i], rows along the vector) they cost ceil(m/W) FMAs per column and k.
// Each element still sees one FMA per k in k order from zero, then the tile's store and epilogue
// in scalar form: the same bits as the microkernel. Rows [0, m) of the consecutive panels at a
// (MRP*kc apart), NP panels at a time, so that enough sums run side by side to cover the FMA's
// latency (one panel of 8 rows and 2 columns in float is 2 chains: (784x100)^T·(100x50) float32
// spent 19% of its time here). c, bias and mask point at the first such column of row 0;
// b[k*bks + j] is op(B) for those columns. With bits, only the k that one of the panels side by
// side uses (used_ks: panel p's bits at bits + p*words); without, every k. Without an epilogue
// the sums are stored as they are, not through store_scalar's tests: dW = x^T·dout of MNIST
// images on one thread, float64 from float32 x, 88.6-89.1 -> 86.5-86.8 us (medians, alternating).
template <class T, int MRP, int R>
inline void edge_columns(int m, T* c, ptrdiff_t ldc, const T* a, const T* b, ptrdiff_t bks, ptrdiff_t kc,
                         const TileStore<T>& st, const std::uint64_t* bits, ptrdiff_t words) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    constexpr int NA = (MRP + W - 1) / W;  // vectors down a packed column of A
    constexpr int NP = R * NA >= 8 ? 1 : R * NA >= 4 ? 2 : 4;  // panels at a time: 8 sums or more
    for (int i0 = 0; i0 < m; i0 += NP * MRP) {
        const T* ap = a + i0 * kc;
        V acc[R][NP][NA];
#pragma GCC unroll 8
        for (int j = 0; j < R; ++j)
#pragma GCC unroll 4
            for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
                for (int v = 0; v < NA; ++v) acc[j][q][v] = S::zero();
        auto rank1 = [&](ptrdiff_t k) __attribute__((always_inline)) {
            V av[NP][NA];
#pragma GCC unroll 4
            for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
                for (int v = 0; v < NA; ++v)  // rows past m are never read (the packing leaves them unset)
                    av[q][v] = load_first(ap + q * MRP * kc + k * MRP + v * W, m - i0 - q * MRP - v * W);
#pragma GCC unroll 8
            for (int j = 0; j < R; ++j) {
                const auto bj = S::bcast(b + k * bks + j);  // the microkernel's operand order: bcast * vector
#pragma GCC unroll 4
                for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
                    for (int v = 0; v < NA; ++v) acc[j][q][v] = S::fma(bj, av[q][v], acc[j][q][v]);
            }
        };
        bool every_k = !bits;
        if (bits) {
            const int p0 = i0 / MRP, np = static_cast<int>(min_of(NP, ceil_div(m - i0, MRP)));
            for (ptrdiff_t w = 0; w < words; ++w) {
                std::uint64_t used = 0;
                for (int q = 0; q < np; ++q) used |= bits[(p0 + q) * words + w];
                for (; used; used &= used - 1) rank1(w * 64 + __builtin_ctzll(used));
            }
            every_k = reset_if_negative_zero<T>(acc[0][0], R * NP * NA);
        }
        if (every_k)
            for (ptrdiff_t k = 0; k < kc; ++k) rank1(k);
        T sums[R][NP][NA * W];
#pragma GCC unroll 8
        for (int j = 0; j < R; ++j)
#pragma GCC unroll 4
            for (int q = 0; q < NP; ++q)
#pragma GCC unroll 4
                for (int v = 0; v < NA; ++v) S::storeu(sums[j][q] + v * W, acc[j][q][v]);
        const int rows = m - i0 < NP * MRP ? m - i0 : NP * MRP;
        if (st.first && !has_epilogue(st)) {  // a plain store
            for (int i = 0; i < rows; ++i)
                for (int j = 0; j < R; ++j) c[(i0 + i) * ldc + j] = sums[j][i / MRP][i % MRP];
        } else {
            for (int i = 0; i < rows; ++i)
                for (int j = 0; j < R; ++j) store_scalar(c, ldc, i0 + i, j, sums[j][i / MRP][i % MRP], st);
        }
    }
}

template <class T, int MRP, int R>
inline void dispatch_edge(int r, int m, T* c, ptrdiff_t ldc, const T* a, const T* b, ptrdiff_t bks, ptrdiff_t kc,
                          const TileStore<T>& st, const std::uint64_t* bits, ptrdiff_t words) {
    if constexpr (R > 0) {
        if (r == R)
            edge_columns<T, MRP, R>(m, c, ldc, a, b, bks, kc, st, bits, words);
        else
            dispatch_edge<T, MRP, R - 1>(r, m, c, ldc, a, b, bks, kc, st, bits, words);
    }
}

// The same few columns when op(A)'s rows are contiguous (x·W, whatever the thread count or
// the packing): dot products along k, one FMA per W values of k instead of a whole vector per
// row and k. Element (i, j) sums lane by lane (lane l takes the k = l mod W, in k order from
// zero), then the W lanes pairwise in a fixed order, then the tile's store and epilogue.
// a[i*lda + k] are RB rows of op(A) and bt[j*ldbt + k] the R columns of op(B), both contiguous.
// With bits (the tile's used_ks), the vectors of k that no row of the tile uses are left out: they
// would add zeros to every lane.
template <class T, int R, int RB, class TA>
inline void dot_rows(T* c, ptrdiff_t ldc, const TA* a, ptrdiff_t lda, const T* bt, ptrdiff_t ldbt, ptrdiff_t kc,
                     const TileStore<T>& st, const std::uint64_t* bits) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    V acc[RB][R];
#pragma GCC unroll 4
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) acc[i][j] = S::zero();
    constexpr std::uint64_t vector_bits = W >= 64 ? ~std::uint64_t(0) : (std::uint64_t(1) << W) - 1;
    auto run = [&](const std::uint64_t* used) __attribute__((always_inline)) {
        for (ptrdiff_t k = 0; k < kc; k += W) {
            if (used && !((used[k / 64] >> (k % 64)) & vector_bits)) continue;  // (64 is a multiple of W)
            const ptrdiff_t n = kc - k;  // lanes past kc load as zeros and add nothing
            V bv[R];
#pragma GCC unroll 4
            for (int j = 0; j < R; ++j) bv[j] = load_first(bt + j * ldbt + k, n);
#pragma GCC unroll 4
            for (int i = 0; i < RB; ++i) {
                const V av = opaque(load_first_as<T>(a + i * lda + k, n));  // one load for the R columns
#pragma GCC unroll 4
                for (int j = 0; j < R; ++j) acc[i][j] = S::fma(av, bv[j], acc[i][j]);
            }
        }
    };
    run(bits);
    if (bits && reset_if_negative_zero<T>(acc[0], RB * R)) run(nullptr);  // see the microkernel
    T lanes[RB][R][W];  // every accumulator stored first: the sums below then run side by side
#pragma GCC unroll 4
    for (int i = 0; i < RB; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < R; ++j) S::storeu(lanes[i][j], acc[i][j]);
    for (int i = 0; i < RB; ++i)
        for (int j = 0; j < R; ++j) {
            T* l = lanes[i][j];
            for (int half = W / 2; half > 0; half /= 2)
                for (int q = 0; q < half; ++q) l[q] += l[q + half];
            store_scalar(c, ldc, i, j, l[0], st);
        }
}

// dot_rows over m rows, four at a time; r columns (R is the largest r it is compiled for).
template <class T, int R, class TA>
inline void dot_edge(int r, int m, T* c, ptrdiff_t ldc, const TA* a, ptrdiff_t lda, const T* bt, ptrdiff_t ldbt,
                     ptrdiff_t kc, const TileStore<T>& st, const std::uint64_t* bits) {
    if constexpr (R > 0) {
        if (r != R) return dot_edge<T, R - 1>(r, m, c, ldc, a, lda, bt, ldbt, kc, st, bits);
        for (int i = 0; i < m;) {
            const TileStore<T> rows = rows_from(st, i);
            T* ci = c + i * ldc;
            const TA* ai = a + i * lda;
            const int left = m - i;
            if (left >= 4) {
                dot_rows<T, R, 4>(ci, ldc, ai, lda, bt, ldbt, kc, rows, bits);
                i += 4;
            } else if (left == 3) {
                dot_rows<T, R, 3>(ci, ldc, ai, lda, bt, ldbt, kc, rows, bits);
                i += 3;
            } else if (left == 2) {
                dot_rows<T, R, 2>(ci, ldc, ai, lda, bt, ldbt, kc, rows, bits);
                i += 2;
            } else {
                dot_rows<T, R, 1>(ci, ldc, ai, lda, bt, ldbt, kc, rows, bits);
                i += 1;
            }
        }
    }
}

// One panel with stride ld (P for a packed panel) from mi <= P contiguous source rows
// (A[i*rs + k]), dst[k*ld + i]: blocks of W values of k from up to W rows at a time are
// transposed in registers and stored as W columns of the panel; the last kc % W values of k one
// by one. Rows past mi are never read; their lanes are zeros with PAD (a B panel), else left
// unset. TA is T, or float with T double (widened as it is loaded).
template <class T, int P, bool PAD, class TA>
void transpose_rows(T* dst, ptrdiff_t ld, const TA* A, ptrdiff_t rs, int mi, ptrdiff_t kc) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    const int lanes_end = PAD ? P : mi;
    ptrdiff_t k = 0;
    for (; k + W <= kc; k += W)
        for (int g = 0; g < lanes_end; g += W) {
            const int rows = mi - g < W ? (mi > g ? mi - g : 0) : W;
            const int lanes = lanes_end - g < W ? lanes_end - g : W;
            V r[W];
#pragma GCC unroll 16
            for (int i = 0; i < W; ++i) r[i] = i < rows ? load_first_as<T>(A + (g + i) * rs + k, W) : S::zero();
            S::transpose(r);
#pragma GCC unroll 16
            for (int j = 0; j < W; ++j) {
                if (lanes == W)
                    S::storeu(dst + (k + j) * ld + g, r[j]);
                else
                    S::store_n(dst + (k + j) * ld + g, r[j], lanes);
            }
        }
    for (; k < kc; ++k) {
        for (int i = 0; i < mi; ++i) dst[k * ld + i] = static_cast<T>(A[i * rs + k]);
        for (int i = mi; i < lanes_end; ++i) dst[k * ld + i] = T(0);
    }
}

// A tile of m rows run in two parts (zero skipping, below): rows [0, row_part(m)) and the rest.
inline int row_part(int m) { return (m + 1) / 2; }

// One k of a packed panel: n <= 32 values at src to d; with bits, the rows that are not 0 (bit i
// for row i; see used_ks), else 0.
template <class T, class TA>
__attribute__((always_inline)) inline unsigned pack_column(T* d, const TA* src, int n, bool bits) {
    using S = Simd<T>;
    constexpr int W = S::W;
    unsigned rows = 0;
#pragma GCC unroll 4
    for (int v = 0; v < n; v += W) {
        const auto x = load_first_as<T>(src + v, n - v);
        if (n - v >= W)
            S::storeu(d + v, x);
        else
            S::store_n(d + v, x, n - v);
        if (bits) rows |= S::nonzero(x) << v;
    }
    return rows;
}

// Pack rows [0, m) x columns [0, kc) of op(A) into MR-tall panels, k-major inside a panel:
// panel p holds dst[k*MR + i] = op(A)(p*MR + i, k) (rows past m are left unset: the
// microkernel for a short panel never reads them). op(A)(i, k) is A[i*rs + k*ks]; TA may be
// float with T double (widened exactly here). With bits, when op(A)'s columns are contiguous
// (ks != 1), the used k of panel p's `parts` row parts (1, or 2: see row_part) go to
// bits + (p*parts + g)*words as used_ks gives them (found as each k is packed, where the rows of
// one k are at hand); rows contiguous leave bits alone.
template <class T, int MR, class TA>
void pack_a(T* dst, const TA* A, ptrdiff_t rs, ptrdiff_t ks, ptrdiff_t m, ptrdiff_t kc, std::uint64_t* bits = nullptr,
            ptrdiff_t words = 0, int parts = 1) {
    static_assert(MR <= 32, "a panel's rows fit the row mask below");
    for (ptrdiff_t i0 = 0; i0 < m; i0 += MR, dst += MR * kc) {
        const int mi = static_cast<int>(min_of(MR, m - i0));
        if (ks == 1) {  // rows contiguous: transposed in registers
            transpose_rows<T, MR, false>(dst, MR, A + i0 * rs, rs, mi, kc);
        } else {  // columns contiguous (rs == 1): read along i, a vector at a time
            std::uint64_t* panel_bits = bits ? bits + i0 / MR * parts * words : nullptr;
            const unsigned first_part = parts == 2 ? (1u << row_part(mi)) - 1 : ~0u;  // rows of part 0
            std::uint64_t used0 = 0, used1 = 0;
            for (ptrdiff_t k = 0; k < kc; ++k) {
                const TA* src = A + i0 + k * ks;
                T* d = dst + k * MR;
                // bit i: row i is not 0 at k (when asked for)
                const unsigned rows = mi == MR ? pack_column<T>(d, src, MR, panel_bits != nullptr)
                                               : pack_column<T>(d, src, mi, panel_bits != nullptr);
                if (panel_bits) {
                    used0 |= std::uint64_t((rows & first_part) != 0) << (k % 64);
                    used1 |= std::uint64_t((rows & ~first_part) != 0) << (k % 64);
                    if (k % 64 == 63 || k == kc - 1) {
                        panel_bits[k / 64] = used0;
                        if (parts == 2) panel_bits[words + k / 64] = used1;
                        used0 = used1 = 0;
                    }
                }
            }
        }
    }
}

// Widen rows [0, m) x columns [0, kc) of a row-major float A (row stride rs) into dst, row-major
// with row stride ld: contiguous on both sides, so the compiler vectorises the conversion.
template <class T, class TA>
void widen_rows(T* dst, ptrdiff_t ld, const TA* A, ptrdiff_t rs, ptrdiff_t m, ptrdiff_t kc) {
    for (ptrdiff_t i = 0; i < m; ++i, dst += ld) {
        const TA* src = A + i * rs;
        for (ptrdiff_t k = 0; k < kc; ++k) dst[k] = static_cast<T>(src[k]);
    }
}

// Pack columns [0, n) x rows [0, kc) of op(B) into NR-wide panels, dst[k*NR + j] =
// op(B)(k, p*NR + j), zero-padding the last panel (its padding lanes are computed, then dropped).
// op(B)(k, j) is B[k*ks + j*js].
template <class T, int NR>
void pack_b(T* dst, const T* B, ptrdiff_t ks, ptrdiff_t js, ptrdiff_t n, ptrdiff_t kc) {
    for (ptrdiff_t j0 = 0; j0 < n; j0 += NR, dst += NR * kc) {
        const ptrdiff_t nj = min_of(NR, n - j0);
        if (js == 1) {  // rows contiguous: vector copies, the edge panel by masked loads
            using S = Simd<T>;
            constexpr int W = S::W;
            for (ptrdiff_t k = 0; k < kc; ++k) {
                const T* src = B + k * ks + j0;
                T* d = dst + k * NR;
#pragma GCC unroll 8
                for (int v = 0; v < NR / W; ++v) S::storeu(d + v * W, load_first(src + v * W, nj - v * W));
            }
        } else {  // columns contiguous (op(B) = B^T, ks == 1): transposed in registers
            transpose_rows<T, NR, true>(dst, NR, B + j0 * js, js, static_cast<int>(nj), kc);
        }
    }
}

// Zero skipping. A k that none of a tile's rows uses (op(A)(i, k) == 0 in every row) adds
// 0·op(B)(k, j) to each of the tile's sums. When op(B) is finite that product is an exact zero,
// and adding an exact zero leaves a sum as it was: sums start at +0, and +0 + (±0) is +0. So a
// tile may run over the k its rows use and nothing else, and give the same bits as over every k,
// in any chunking. (One exception, in the sign of a zero: a sum that a product too small to
// represent has rounded to -0 stays -0 where the zero terms would have made it +0.) When op(B)
// holds an infinity or a NaN (0·inf is NaN), every k runs. The book's MNIST batches are 81% zero
// pixels: a tile of 14 images leaves about 48% of the 784 pixels unused, a panel of 14 pixels
// (x^T·dout) about 40% of 100 images, and its two halves (TileKs) 63%.
//
// A call tries it when it has kSkipMinFma multiply-adds or more and its first tile leaves at
// least 1/kSkipShare of its k unused; a tile then runs over its used k when it leaves that share
// unused, else over all of them. A tile that leaves less than that share of its first
// kSkipProbeK values of k unused stops looking there (the cost of looking, on dense data).
constexpr ptrdiff_t kSkipShare = 8;
constexpr ptrdiff_t kSkipMinFma = 256 * 1024;
constexpr ptrdiff_t kSkipProbeK = 128;

// A dense tile: its bits all set for k < kc; -1.
inline ptrdiff_t dense_ks(std::uint64_t* bits, ptrdiff_t kc) {
    const ptrdiff_t words = ceil_div(kc, 64);
    for (ptrdiff_t w = 0; w < words; ++w)
        bits[w] = w < words - 1 || kc % 64 == 0 ? ~std::uint64_t(0) : (std::uint64_t(1) << (kc % 64)) - 1;
    return -1;
}

// The rest of used_ks, from a tile's bits: the list and its length, or dense_ks.
inline ptrdiff_t list_used_ks(std::uint64_t* bits, int* list, ptrdiff_t kc) {
    const ptrdiff_t words = ceil_div(kc, 64);
    ptrdiff_t n = 0;
    for (ptrdiff_t w = 0; w < words; ++w) n += __builtin_popcountll(bits[w]);
    if ((kc - n) * kSkipShare < kc) return dense_ks(bits, kc);
    n = 0;
    for (ptrdiff_t w = 0; w < words; ++w)
        for (std::uint64_t used = bits[w]; used; used &= used - 1) list[n++] = static_cast<int>(w * 64 + __builtin_ctzll(used));
    for (ptrdiff_t e = 0; e < kBPrefetchRows; ++e) list[n + e] = n ? list[n - 1] : 0;
    return n;
}

// The k in [0, kc) that rows [0, m) of a tile use: bit k of bits[k / 64] set when
// op(A)(i, k) = a[i*rs + k*ks] is not 0 (NaN and inf count) for some row; rs or ks is 1. The set
// bits listed ascending in list[0, n), followed by kBPrefetchRows copies of the last (the
// microkernel prefetches that far ahead). Returns n, or -1 for a dense tile (less than 1/kSkipShare
// unused), whose bits are then all set for k < kc and whose list is not written.
template <class T>
ptrdiff_t used_ks(std::uint64_t* bits, int* list, const T* a, ptrdiff_t rs, ptrdiff_t ks, int m, ptrdiff_t kc) {
    using S = Simd<T>;
    constexpr int W = S::W;
    const ptrdiff_t words = ceil_div(kc, 64);
    ptrdiff_t n = 0;
    for (ptrdiff_t w = 0; w < words; ++w) {
        const ptrdiff_t k0 = w * 64, k1 = min_of(k0 + 64, kc);
        std::uint64_t used = 0;
        // The rows' bits are or-ed together first: the result is +-0 only where every row is.
        if (ks == 1) {  // rows contiguous: W values of k per load (64 is a multiple of W)
            for (ptrdiff_t k = k0; k < k1; k += W) {
                typename S::V any = S::zero();
                for (int i = 0; i < m; ++i) any = S::bit_or(any, load_first(a + i * rs + k, k1 - k));
                used |= std::uint64_t(S::nonzero(any)) << (k - k0);
            }
        } else if (m <= W) {  // columns contiguous, one load per k
            for (ptrdiff_t k = k0; k < k1; ++k) used |= std::uint64_t(S::nonzero_first(a + k * ks, m) != 0) << (k - k0);
        } else {  // columns contiguous: W rows per load
            for (ptrdiff_t k = k0; k < k1; ++k) {
                const T* ak = a + k * ks;
                typename S::V any = S::zero();
                int i = 0;
                for (; i + W <= m; i += W) any = S::bit_or(any, S::loadu(ak + i));
                const unsigned lanes = (i ? S::nonzero(any) : 0u) | S::nonzero_first(ak + i, m - i);
                used |= std::uint64_t(lanes != 0) << (k - k0);
            }
        }
        bits[w] = used;
        n += __builtin_popcountll(used);
        if (k1 >= kSkipProbeK && k1 < kc && (k1 - n) * kSkipShare < k1) return dense_ks(bits, kc);
    }
    return list_used_ks(bits, list, kc);
}

// The used k of the tiles of one chunk and K block, found on the first pass over the tiles. A
// tile is one part, or two (rows [0, row_part(m)) and the rest), each with its own k: the halves of
// a panel of a transposed A (x^T: 7 pixels, not 14) leave many more k unused (for MNIST, 63% of
// the (part, image) pairs rather than 39%), and each part still runs 7 rows by two vectors, enough
// FMAs per k. Part g of tile t: its bits at bits + (t*parts + g)*words, its list at
// list + (t*parts + g)*list_ld, its count (-1: dense). Inactive (no tiles): every k.
struct TileKs {
    int parts = 1;
    ptrdiff_t words = 0, list_ld = 0;
    std::uint64_t* bits = nullptr;
    std::uint64_t* union_bits = nullptr;  // tile t's parts or-ed, at + t*words (bits itself with one part)
    int* list = nullptr;
    ptrdiff_t* count = nullptr;
    ptrdiff_t* tally = nullptr;  // += the (part, k) pairs left out (for gemm_skipped_ks)

    // (Trivially destructible: an object with a destructor here would give these ISA units
    // exception landing pads, and with them the C++ personality routine, a symbol of vague
    // linkage that .ci/check_isa.py refuses.)
    TileKs() = default;
    TileKs(ptrdiff_t n_tiles, ptrdiff_t kc, int n_parts, ptrdiff_t* skipped)
        : parts(n_parts), words(ceil_div(kc, 64)), list_ld(kc + kBPrefetchRows), tally(skipped) {
        static thread_local Scratch<std::uint64_t> bits_scratch;
        static thread_local Scratch<int> list_scratch;
        static thread_local Scratch<ptrdiff_t> count_scratch;
        bits = bits_scratch.get(n_tiles * (parts + 1) * words);
        union_bits = parts == 1 ? bits : bits + n_tiles * parts * words;
        list = list_scratch.get(n_tiles * parts * list_ld);
        count = count_scratch.get(n_tiles * parts);
    }
    TileKs(const TileKs&) = delete;
    TileKs& operator=(const TileKs&) = delete;
    // tile t (one part) from its m rows, op(A)(i, k) = a[i*rs + k*ks] (rs or ks is 1)
    template <class T>
    void find(ptrdiff_t t, const T* a, ptrdiff_t rs, ptrdiff_t ks, int m, ptrdiff_t kc) {
        noted(t, kc, used_ks(bits + t * words, list + t * list_ld, a, rs, ks, m, kc));
    }
    // tile t from its parts' bits, set by pack_a
    void from_bits(ptrdiff_t t, ptrdiff_t kc) {
        for (ptrdiff_t g = t * parts; g < (t + 1) * parts; ++g)
            noted(g, kc, list_used_ks(bits + g * words, list + g * list_ld, kc));
        if (parts == 2)
            for (ptrdiff_t w = 0; w < words; ++w)
                union_bits[t * words + w] = bits[2 * t * words + w] | bits[(2 * t + 1) * words + w];
    }
    // whether tile t runs in its two parts (one of them skips), or whole
    bool split(ptrdiff_t t) const { return count && parts == 2 && (count[2 * t] >= 0 || count[2 * t + 1] >= 0); }
    // for the microkernel: the list of part g of tile t (g = 0: the whole tile when it is not
    // split), or null (every k)
    const int* ks(ptrdiff_t t, int g = 0) const {
        const ptrdiff_t p = t * parts + g;
        return count && count[p] >= 0 ? list + p * list_ld : nullptr;
    }
    ptrdiff_t n(ptrdiff_t t, int g = 0) const { return count ? count[t * parts + g] : 0; }
    // for dot_edge: the bits of a tile that skips, or null
    const std::uint64_t* skipping_bits(ptrdiff_t t) const { return ks(t) ? union_bits + t * words : nullptr; }
    // for edge_columns: every tile's bits, or null
    const std::uint64_t* all_bits() const { return count ? union_bits : nullptr; }

  private:
    void noted(ptrdiff_t p, ptrdiff_t kc, ptrdiff_t n) {
        count[p] = n;
        if (n >= 0 && tally) *tally += kc - n;
    }
};

// Whether the n values at p are all finite (x - x is 0 for those, NaN for an infinity or a NaN).
template <class T>
bool all_finite(const T* p, ptrdiff_t n) {
    using S = Simd<T>;
    using V = typename S::V;
    constexpr int W = S::W;
    V s0 = S::zero(), s1 = S::zero(), s2 = S::zero(), s3 = S::zero();  // four chains cover the add's latency
    ptrdiff_t i = 0;
    for (; i + 4 * W <= n; i += 4 * W) {
        const V v0 = S::loadu(p + i), v1 = S::loadu(p + i + W), v2 = S::loadu(p + i + 2 * W),
                v3 = S::loadu(p + i + 3 * W);
        s0 = S::add(s0, S::sub(v0, v0));
        s1 = S::add(s1, S::sub(v1, v1));
        s2 = S::add(s2, S::sub(v2, v2));
        s3 = S::add(s3, S::sub(v3, v3));
    }
    for (; i < n; i += W) {
        const V v = load_first(p + i, n - i);
        s0 = S::add(s0, S::sub(v, v));
    }
    T lanes[W];
    S::storeu(lanes, S::add(S::add(s0, s1), S::add(s2, s3)));
    for (int l = 0; l < W; ++l)
        if (!(lanes[l] == T(0))) return false;
    return true;
}

// C's row stride: ep.ldc, or N when that is 0 (dense).
template <class T>
ptrdiff_t row_stride(const Epilogue<T>& ep, ptrdiff_t N) {
    return ep.ldc ? ep.ldc : N;
}

// C = epilogue(0): the K = 0 product.
template <class T>
void fill_epilogue(T* C, ptrdiff_t M, ptrdiff_t N, const Epilogue<T>& ep) {
    const ptrdiff_t ldc = row_stride(ep, N);
    for (ptrdiff_t i = 0; i < M; ++i)
        for (ptrdiff_t j = 0; j < N; ++j) {
            const T v = ep.bias ? ep.bias[j] : T(0);
            const T r = ep.relu ? relu_scalar(v, ep.mask ? ep.mask + i * ldc + j : nullptr) : v;
            const T c = ep.zero_mask && ep.zero_mask[i * ldc + j] ? T(0) : r;
            C[i * ldc + j] = c;
            if (ep.update) ep.update[i * ldc + j] = ep.update[i * ldc + j] - opaque(ep.update_rate * c);
        }
}

// parallel_for through a baseline-compiled trampoline (gemm.cpp): building the std::function
// here would compile std::function's inline members with this TU's -m flags (the ODR trap).
template <class F>
void run_parallel(ptrdiff_t n_chunks, F& f) {
    detail::gemm_parallel_for(
        n_chunks, [](void* ctx, ptrdiff_t c) { (*static_cast<F*>(ctx))(c); }, &f);
}

// A layer three vectors wide (wide_layer in gemm_blocked) with op(A) transposed: op(B) read in place
// up to this size (x^T·dout of (100,784)·(100,50) float32, 20 KB: 52.2 -> 47.5 us); a larger one
// is packed for the usual tiles ((1024,784)·(1024,50), 200 KB: 449 us against 497 in place).
constexpr ptrdiff_t kWideBInPlaceBytes = 32 * 1024;

// Column panels per chunk up to which A is read in place instead of packed (measured).
constexpr ptrdiff_t kDirectMaxPanels = 4;

// The longest step between consecutive k of a transposed A read in place (bytes; measured:
// x^T for 784 features, 3-6 KB, is faster packed; 50 or 100 features, faster in place).
constexpr ptrdiff_t kDirectMaxStrideBytes = 2048;

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
                  bool trans_b, const Epilogue<T>& ep);

// op(A) transposed with its stored rows too far apart to be read in place (past
// kDirectMaxStrideBytes), and C's rows shorter than a panel and not whole vectors (dW = x^T·dout
// of a layer with 10 outputs after 784 or 1024 inputs): each row of C would be a partly filled
// vector, and all of op(A) would be packed for that one panel. C^T = op(B)^T·A has instead a few
// rows, and wide rows read where they lie: A is the row-major (K,M) operand. C^T goes to a
// scratch buffer, then to C transposed, through the epilogue. Every element sums the same
// products in the same K blocks and k order, so the result still does not depend on threads.
// Measured (two builds, alternating processes), 2 threads, float32 (float64), us:
// (1024,1024)^T·(1024,10) 318 -> 146 (548 -> 486), (256,1024)^T·(256,10) 60 -> 33,
// (100,784)^T·(100,10) 21.0 -> 17.1 (34.4 -> 35.2, level), 24 columns 400 -> 285. Slower, and so
// left to the direct path: 32 columns (a whole panel), 8 or 16 in float64 (whole vectors), and
// rows close enough to be read in place ((50,300)^T·(50,24): 6.8 -> 13.1).
// Up to kNarrowMaxElements elements of C (the scratch is kept, as the packing buffers are).
constexpr ptrdiff_t kNarrowMaxElements = ptrdiff_t(1) << 22;

template <class T>
bool narrow_transposed(ptrdiff_t M, ptrdiff_t N, int NR, int W) {
    // N < M: C^T is never narrow itself
    return M * ptrdiff_t(sizeof(T)) > kDirectMaxStrideBytes && N < NR && N % W != 0 && N < M &&
           M * N <= kNarrowMaxElements;
}

template <class T, class B>
void gemm_narrow_transposed(T* C, const T* A, const T* Bm, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, bool trans_b,
                            const Epilogue<T>& ep) {
    const ptrdiff_t ldc = row_stride(ep, N);
    static thread_local Scratch<T> ct_scratch;
    T* ct = ct_scratch.get(N * M);
    // op(B)^T (N,K) is B as stored when trans_b, else B read transposed
    gemm_blocked<T, B, T>(ct, Bm, A, N, M, K, !trans_b, false, Epilogue<T>{});
    if (!ep.bias && !ep.relu && !ep.mask && !ep.zero_mask && !ep.update)  // C = ct^T, in registers
        return transpose_rows<T, B::nv * Simd<T>::W, false>(C, ldc, ct, M, static_cast<int>(N), M);
    for (ptrdiff_t i = 0; i < M; ++i) {
        const TileStore<T> st{true,
                              true,
                              ep.relu,
                              ep.bias,
                              ep.mask ? ep.mask + i * ldc : nullptr,
                              ep.zero_mask ? ep.zero_mask + i * ldc : nullptr,
                              ep.update ? ep.update + i * ldc : nullptr,
                              ep.update_rate,
                              ldc};
        for (ptrdiff_t j = 0; j < N; ++j) store_scalar(C + i * ldc, ldc, 0, static_cast<int>(j), ct[j * M + i], st);
    }
}

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
// already leave 63% of the (part, image) pairs out.
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
