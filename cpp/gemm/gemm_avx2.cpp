// GEMM, AVX2 path (-mavx2 -mfma), 32-byte vectors.
// Microkernels sgemm_avx2_6x16 and dgemm_avx2_6x8 (12 accumulators, broadcast A, two B vectors
// per k); the N edge goes through a small stack buffer. Contract: include/bpfast/gemm.hpp.
#include <immintrin.h>

#include "gemm_blocked.hpp"

namespace bpfast {
namespace {

// The first min(n, L) bytes at m in the low lanes of a vector, zeros past them.
template <int L>
inline __m128i mask_bytes(const bool* m, ptrdiff_t n) {
    alignas(16) unsigned char t[16] = {};
    if (n >= L)
        std::memcpy(t, m, L);  // one load
    else
        std::memcpy(t, m, static_cast<std::size_t>(n));
    return _mm_load_si128(reinterpret_cast<const __m128i*>(t));
}

template <>
struct Simd<float> {
    using V = __m256;
    static constexpr int W = 8;
    static V zero() { return _mm256_setzero_ps(); }
    static V load(const float* p) { return _mm256_load_ps(p); }
    static V loadu(const float* p) { return _mm256_loadu_ps(p); }
    static void storeu(float* p, V v) { _mm256_storeu_ps(p, v); }
    static V bcast(const float* p) { return _mm256_broadcast_ss(p); }
    static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm256_add_ps(a, b); }
    static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
    static V set1(float x) { return _mm256_set1_ps(x); }
    // A plain prefetch here (no -mprfchw: PREFETCHW is not assumed on every AVX2 CPU).
    static void prefetch_for_write(const float* p) { __builtin_prefetch(p, 1, 3); }
    static V load_n(const float* p, ptrdiff_t n) {
        alignas(32) float t[W] = {};
        std::memcpy(t, p, static_cast<std::size_t>(n) * sizeof(float));
        return _mm256_load_ps(t);
    }
    static void store_n(float* p, V v, ptrdiff_t n) {
        alignas(32) float t[W];
        _mm256_store_ps(t, v);
        std::memcpy(p, t, static_cast<std::size_t>(n) * sizeof(float));
    }
    // The lanes' bits or-ed together (zero only where both lanes are +-0), and the bits of the
    // lanes that are not +-0 (NaN included).
    static V bit_or(V a, V b) { return _mm256_or_ps(a, b); }
    static unsigned nonzero(V v) {
        return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    }
    // Bit l set when lane l is -0.0: the sign bits of the lanes equal to zero.
    static unsigned negative_zeros(V v) {
        return static_cast<unsigned>(_mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_EQ_OQ), v)));
    }
    // Bit l set when lane l < n of p is not zero (NaN included); p is not read past n (AVX's
    // masked load does not touch the lanes left out).
    static unsigned nonzero_first(const float* p, ptrdiff_t n) {
        if (n <= 0) return 0;
        const V v = n >= W ? _mm256_loadu_ps(p)
                           : _mm256_maskload_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)),
                                                                      _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
        return static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_NEQ_UQ)));
    }
    // r[i] lane j <-> r[j] lane i: 32-bit interleaves, 64-bit shuffles, then 128-bit halves.
    static void transpose(V r[W]) {
        V t[W], u[W];
        for (int i = 0; i < W; i += 2) {
            t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
        }
        for (int h = 0; h < W; h += 4) {  // rows h..h+3: u[h + c] holds columns c and c + 4
            u[h] = _mm256_shuffle_ps(t[h], t[h + 2], 0x44);
            u[h + 1] = _mm256_shuffle_ps(t[h], t[h + 2], 0xee);
            u[h + 2] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0x44);
            u[h + 3] = _mm256_shuffle_ps(t[h + 1], t[h + 3], 0xee);
        }
        for (int c = 0; c < 4; ++c) {
            r[c] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x20);
            r[c + 4] = _mm256_permute2f128_ps(u[c], u[4 + c], 0x31);
        }
    }
    static V relu(V v, bool* mask, ptrdiff_t n) {
        const V le = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LE_OQ);  // NaN: false
        if (mask) {
            const unsigned bits = static_cast<unsigned>(_mm256_movemask_ps(le));
            for (ptrdiff_t j = 0; j < (n < W ? n : W); ++j) mask[j] = (bits >> j) & 1u;
        }
        return _mm256_andnot_ps(le, v);
    }
    // v made 0 in the lanes j < n where m[j] is set; m is not read past n.
    static V zero_where(V v, const bool* m, ptrdiff_t n) {
        const __m256i set = _mm256_cvtepu8_epi32(mask_bytes<W>(m, n));
        return _mm256_andnot_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(set, _mm256_setzero_si256())), v);
    }
};

template <>
struct Simd<double> {
    using V = __m256d;
    static constexpr int W = 4;
    static V zero() { return _mm256_setzero_pd(); }
    static V load(const double* p) { return _mm256_load_pd(p); }
    static V loadu(const double* p) { return _mm256_loadu_pd(p); }
    static void storeu(double* p, V v) { _mm256_storeu_pd(p, v); }
    static V bcast(const double* p) { return _mm256_broadcast_sd(p); }
    static V bcast(const float* p) { return _mm256_set1_pd(static_cast<double>(*p)); }
    // the floats p[0, n) widened (0 <= n <= W), zeros past them
    static V load_widened(const float* p, ptrdiff_t n) {
        if (n >= W) return _mm256_cvtps_pd(_mm_loadu_ps(p));
        alignas(16) float t[W] = {};
        std::memcpy(t, p, static_cast<std::size_t>(n) * sizeof(float));
        return _mm256_cvtps_pd(_mm_load_ps(t));
    }
    static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
    static V add(V a, V b) { return _mm256_add_pd(a, b); }
    static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
    static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
    static V set1(double x) { return _mm256_set1_pd(x); }
    static void prefetch_for_write(const double* p) { __builtin_prefetch(p, 1, 3); }
    static V load_n(const double* p, ptrdiff_t n) {
        alignas(32) double t[W] = {};
        std::memcpy(t, p, static_cast<std::size_t>(n) * sizeof(double));
        return _mm256_load_pd(t);
    }
    static void store_n(double* p, V v, ptrdiff_t n) {
        alignas(32) double t[W];
        _mm256_store_pd(t, v);
        std::memcpy(p, t, static_cast<std::size_t>(n) * sizeof(double));
    }
    static V bit_or(V a, V b) { return _mm256_or_pd(a, b); }
    static unsigned nonzero(V v) {
        return static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_NEQ_UQ)));
    }
    static unsigned negative_zeros(V v) {
        return static_cast<unsigned>(_mm256_movemask_pd(_mm256_and_pd(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_EQ_OQ), v)));
    }
    static unsigned nonzero_first(const double* p, ptrdiff_t n) {
        if (n <= 0) return 0;
        const V v = n >= W ? _mm256_loadu_pd(p)
                           : _mm256_maskload_pd(p, _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3)));
        return static_cast<unsigned>(_mm256_movemask_pd(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_NEQ_UQ)));
    }
    // r[i] lane j <-> r[j] lane i: 64-bit interleaves, then 128-bit halves.
    static void transpose(V r[W]) {
        const V t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
        const V t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
        r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
        r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
        r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
        r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
    }
    static V relu(V v, bool* mask, ptrdiff_t n) {
        const V le = _mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_LE_OQ);  // NaN: false
        if (mask) {
            const unsigned bits = static_cast<unsigned>(_mm256_movemask_pd(le));
            for (ptrdiff_t j = 0; j < (n < W ? n : W); ++j) mask[j] = (bits >> j) & 1u;
        }
        return _mm256_andnot_pd(le, v);
    }
    static V zero_where(V v, const bool* m, ptrdiff_t n) {
        const __m256i set = _mm256_cvtepu8_epi64(mask_bytes<W>(m, n));
        return _mm256_andnot_pd(_mm256_castsi256_pd(_mm256_cmpgt_epi64(set, _mm256_setzero_si256())), v);
    }
};

}  // namespace

namespace gemm_avx2 {
using SBlock = Blocking<6, 2, 256, 120, 4096>;
using DBlock = Blocking<6, 2, 256, 120, 2048>;
}  // namespace gemm_avx2
}  // namespace bpfast

BPFAST_DEFINE_GEMM_ISA(avx2, "sgemm_avx2_6x16 dgemm_avx2_6x8, KC=256 MC=120")
