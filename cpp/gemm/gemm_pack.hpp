// Packing: op(A) into MR-tall panels (pack_a, finding the k each panel uses as it goes),
// float rows widened for a double product (widen_rows), op(B) into NR-wide panels (pack_b);
// transposes in registers (transpose_rows).
// Part of the blocked GEMM (gemm_blocked.hpp, which includes it): in the same anonymous
// namespace, for the same reason (each per-ISA translation unit gets its own copy).
#pragma once

#include "gemm_tiles.hpp"

namespace bpfast {
namespace {

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

// A tile of m rows run in two parts (zero skipping: TileKs in gemm_zero_skip.hpp): rows
// [0, row_part(m)) and the rest.
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

}  // namespace
}  // namespace bpfast
