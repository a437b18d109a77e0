// GEMM, AVX-512 path (-mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma), 64-byte vectors.
// Microkernels sgemm_avx512_14x32 and dgemm_avx512_14x16 (28 accumulators, broadcast A, two
// B vectors per k); masked loads/stores at the N edge, ReLU mask via compare-to-mask.
// Contract: include/bpfast/gemm.hpp.
#include <immintrin.h>

#include "gemm_blocked.hpp"

namespace bpfast {
namespace {

inline __mmask16 first_n16(ptrdiff_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

// Every lane: the transposes use the zero-masked shuffles, whose unmasked forms trip GCC 12's
// -Wmaybe-uninitialized on _mm512_undefined_*() (GCC bug 105593); with all lanes kept the
// compiler emits the plain instructions.
constexpr __mmask16 kAll16 = 0xffff;
constexpr __mmask8 kAll8 = 0xff;

template <>
struct Simd<float> {
    using V = __m512;
    static constexpr int W = 16;
    static V zero() { return _mm512_setzero_ps(); }
    static V load(const float* p) { return _mm512_load_ps(p); }
    static V loadu(const float* p) { return _mm512_loadu_ps(p); }
    static void storeu(float* p, V v) { _mm512_storeu_ps(p, v); }
    static V bcast(const float* p) { return _mm512_set1_ps(*p); }
    static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
    static V add(V a, V b) { return _mm512_add_ps(a, b); }
    static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
    static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
    static V set1(float x) { return _mm512_set1_ps(x); }
    // PREFETCHW: every AVX-512 CPU has it (Intel since Broadwell, AMD since K8); asm, since
    // __builtin_prefetch emits it only under -mprfchw.
    static void prefetch_for_write(const float* p) { __asm__ volatile("prefetchw (%0)" : : "r"(p)); }
    static V load_n(const float* p, ptrdiff_t n) { return _mm512_maskz_loadu_ps(first_n16(n), p); }
    // The lanes' bits or-ed together (zero only where both lanes are +-0), and the bits of the
    // lanes that are not +-0 (NaN included).
    static V bit_or(V a, V b) {
        return _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(a), _mm512_castps_si512(b)));
    }
    static unsigned nonzero(V v) { return _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NEQ_UQ); }
    // Bit l set when lane l is -0.0.
    static unsigned negative_zeros(V v) { return _mm512_fpclass_ps_mask(v, 0x04); }
    // Bit l set when lane l < n of p is not zero (NaN included); p is not read past n (n >= 0).
    static unsigned nonzero_first(const float* p, ptrdiff_t n) {
        if (n <= 0) return 0;
        const __mmask16 m = n >= 16 ? kAll16 : first_n16(n);
        return _mm512_mask_cmp_ps_mask(m, _mm512_maskz_loadu_ps(m, p), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    }
    static void store_n(float* p, V v, ptrdiff_t n) { _mm512_mask_storeu_ps(p, first_n16(n), v); }
    // r[i] lane j <-> r[j] lane i: 32-bit, then 64-bit interleaves, then two rounds of 128-bit
    // lane shuffles (after the interleaves, r[4q + s] holds in its lane L rows 4q..4q+3 of
    // column 4L + s).
    static void transpose(V r[W]) {
        V t[W];
        for (int i = 0; i < W; i += 2) {
            t[i] = _mm512_maskz_unpacklo_ps(kAll16, r[i], r[i + 1]);
            t[i + 1] = _mm512_maskz_unpackhi_ps(kAll16, r[i], r[i + 1]);
        }
        for (int i = 0; i < W; i += 4) {
            const __m512d t0 = _mm512_castps_pd(t[i]), t1 = _mm512_castps_pd(t[i + 1]);
            const __m512d t2 = _mm512_castps_pd(t[i + 2]), t3 = _mm512_castps_pd(t[i + 3]);
            r[i] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, t0, t2));
            r[i + 1] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, t0, t2));
            r[i + 2] = _mm512_castpd_ps(_mm512_maskz_unpacklo_pd(kAll8, t1, t3));
            r[i + 3] = _mm512_castpd_ps(_mm512_maskz_unpackhi_pd(kAll8, t1, t3));
        }
        for (int s = 0; s < 4; ++s) {
            const V a = _mm512_maskz_shuffle_f32x4(kAll16, r[s], r[4 + s], 0x88), b = _mm512_maskz_shuffle_f32x4(kAll16, r[s], r[4 + s], 0xdd);
            const V c = _mm512_maskz_shuffle_f32x4(kAll16, r[8 + s], r[12 + s], 0x88), d = _mm512_maskz_shuffle_f32x4(kAll16, r[8 + s], r[12 + s], 0xdd);
            t[s] = _mm512_maskz_shuffle_f32x4(kAll16, a, c, 0x88);
            t[8 + s] = _mm512_maskz_shuffle_f32x4(kAll16, a, c, 0xdd);
            t[4 + s] = _mm512_maskz_shuffle_f32x4(kAll16, b, d, 0x88);
            t[12 + s] = _mm512_maskz_shuffle_f32x4(kAll16, b, d, 0xdd);
        }
        for (int i = 0; i < W; ++i) r[i] = t[i];
    }
    static V relu(V v, bool* mask, ptrdiff_t n) {
        const __mmask16 le = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LE_OQ);  // NaN: false
        if (mask) {
            const __m128i bytes = _mm_maskz_set1_epi8(le, 1);
            if (n >= 16)
                _mm_storeu_si128(reinterpret_cast<__m128i*>(mask), bytes);
            else
                _mm_mask_storeu_epi8(mask, first_n16(n), bytes);
        }
        return _mm512_maskz_mov_ps(static_cast<__mmask16>(~le), v);
    }
    // v made 0 in the lanes j < n where m[j] is set; m is not read past n.
    static V zero_where(V v, const bool* m, ptrdiff_t n) {
        const __m128i bytes = n >= 16 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(m))
                                      : _mm_maskz_loadu_epi8(first_n16(n), m);
        return _mm512_maskz_mov_ps(_mm_testn_epi8_mask(bytes, bytes), v);
    }
};

template <>
struct Simd<double> {
    using V = __m512d;
    static constexpr int W = 8;
    static V zero() { return _mm512_setzero_pd(); }
    static V load(const double* p) { return _mm512_load_pd(p); }
    static V loadu(const double* p) { return _mm512_loadu_pd(p); }
    static void storeu(double* p, V v) { _mm512_storeu_pd(p, v); }
    static V bcast(const double* p) { return _mm512_set1_pd(*p); }
    static V bcast(const float* p) { return _mm512_set1_pd(static_cast<double>(*p)); }
    // the floats p[0, n) widened (0 <= n <= W), zeros past them
    static V load_widened(const float* p, ptrdiff_t n) {
        const __m256 f = n >= W ? _mm256_loadu_ps(p) : _mm256_maskz_loadu_ps(static_cast<__mmask8>(first_n16(n)), p);
        return _mm512_maskz_cvtps_pd(kAll8, f);
    }
    static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
    static V add(V a, V b) { return _mm512_add_pd(a, b); }
    static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
    static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
    static V set1(double x) { return _mm512_set1_pd(x); }
    static void prefetch_for_write(const double* p) { __asm__ volatile("prefetchw (%0)" : : "r"(p)); }
    static V load_n(const double* p, ptrdiff_t n) {
        return _mm512_maskz_loadu_pd(static_cast<__mmask8>(first_n16(n)), p);
    }
    static V bit_or(V a, V b) {
        return _mm512_castsi512_pd(_mm512_or_si512(_mm512_castpd_si512(a), _mm512_castpd_si512(b)));
    }
    static unsigned nonzero(V v) { return _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_NEQ_UQ); }
    static unsigned negative_zeros(V v) { return _mm512_fpclass_pd_mask(v, 0x04); }
    static unsigned nonzero_first(const double* p, ptrdiff_t n) {
        if (n <= 0) return 0;
        const __mmask8 m = n >= 8 ? kAll8 : static_cast<__mmask8>(first_n16(n));
        return _mm512_mask_cmp_pd_mask(m, _mm512_maskz_loadu_pd(m, p), _mm512_setzero_pd(), _CMP_NEQ_UQ);
    }
    static void store_n(double* p, V v, ptrdiff_t n) {
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>(first_n16(n)), v);
    }
    // r[i] lane j <-> r[j] lane i: 64-bit interleaves, then two rounds of 128-bit lane shuffles.
    static void transpose(V r[W]) {
        V t[W], u[W];
        for (int i = 0; i < W; i += 2) {
            t[i] = _mm512_maskz_unpacklo_pd(kAll8, r[i], r[i + 1]);
            t[i + 1] = _mm512_maskz_unpackhi_pd(kAll8, r[i], r[i + 1]);
        }
        for (int h = 0; h < W; h += 4)  // rows h..h+3: u[h + c] holds columns c and c + 4
            for (int c = 0; c < 2; ++c) {
                u[h + c] = _mm512_maskz_shuffle_f64x2(kAll8, t[h + c], t[h + 2 + c], 0x88);
                u[h + 2 + c] = _mm512_maskz_shuffle_f64x2(kAll8, t[h + c], t[h + 2 + c], 0xdd);
            }
        for (int c = 0; c < 4; ++c) {
            r[c] = _mm512_maskz_shuffle_f64x2(kAll8, u[c], u[4 + c], 0x88);
            r[c + 4] = _mm512_maskz_shuffle_f64x2(kAll8, u[c], u[4 + c], 0xdd);
        }
    }
    static V relu(V v, bool* mask, ptrdiff_t n) {
        const __mmask8 le = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_LE_OQ);  // NaN: false
        if (mask) {
            const __m128i bytes = _mm_maskz_set1_epi8(le, 1);
            if (n >= 8)
                _mm_storel_epi64(reinterpret_cast<__m128i*>(mask), bytes);
            else
                _mm_mask_storeu_epi8(mask, first_n16(n), bytes);
        }
        return _mm512_maskz_mov_pd(static_cast<__mmask8>(~le), v);
    }
    static V zero_where(V v, const bool* m, ptrdiff_t n) {
        const __m128i bytes = n >= 8 ? _mm_loadl_epi64(reinterpret_cast<const __m128i*>(m))
                                     : _mm_maskz_loadu_epi8(first_n16(n), m);
        return _mm512_maskz_mov_pd(static_cast<__mmask8>(_mm_testn_epi8_mask(bytes, bytes)), v);
    }
};

}  // namespace

namespace gemm_avx512 {
// K blocks of up to 8 KB of a row (2048 floats, 1024 doubles): fewer passes over C, whose tiles
// each K block loads, adds to and stores again. An A micro-panel then outgrows L1 and streams
// from L2 beside the B panels, which costs less than those passes. Measured against KC 512/256,
// two builds in alternating processes, medians as a share of an FMA probe run in the same
// process, 2 threads: float32 2048^3 85.6 -> 87.3%, 1024^3 82.6 -> 84.4, (2048,2048)·(2048,1000)
// 84.4 -> 86.7, (100,784)·(784,50) 65.9 -> 68.6; float64 2048^3 79.5 -> 84.3 (KC 1024),
// (1024,784)·(784,1024) 82.8 -> 85.6; one thread, float32 2048^3 89.0 -> 90.6%; training steps
// A-D within the noise or up to 2.5% faster. (KC 1024 and 1536 floats in between; an L2 group
// of B panels of 256 KB or 1 MB instead of 512 KB: within the noise.)
using SBlock = Blocking<14, 2, 2048, 112, 4096, 8>;
using DBlock = Blocking<14, 2, 1024, 112, 2048, 8>;
}  // namespace gemm_avx512
}  // namespace bpfast

BPFAST_DEFINE_GEMM_ISA(avx512, "sgemm_avx512_14x32 dgemm_avx512_14x16 (8x3 vectors for layers 3 vectors wide), KC=2048/1024 MC=112")
