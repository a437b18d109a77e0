// Zero skipping: the k a tile's rows use (used_ks, TileKs) and the finiteness test on op(B)
// that makes leaving the others out exact (all_finite).
// Part of the blocked GEMM (gemm_blocked.hpp, which includes it): in the same anonymous
// namespace, for the same reason (each per-ISA translation unit gets its own copy).
#pragma once

#include "gemm_common.hpp"

namespace bpfast {
namespace {

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

}  // namespace
}  // namespace bpfast
