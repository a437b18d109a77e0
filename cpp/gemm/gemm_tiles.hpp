// The register tiles: how a tile stores (TileStore: overwrite or add, then the epilogue), the
// MR x NR microkernel, the few columns past a panel's full vectors (edge_columns, dot_rows,
// dot_edge), and C = epilogue(0) for K = 0.
// Part of the blocked GEMM (gemm_blocked.hpp, which includes it): in the same anonymous
// namespace, for the same reason (each per-ISA translation unit gets its own copy).
#pragma once

#include "gemm_common.hpp"

namespace bpfast {
namespace {

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

}  // namespace
}  // namespace bpfast
