// GEMM, AVX-512 path (-mavx512f -mavx512vl -mavx512bw -mavx512dq -mfma), 64-byte vectors.
// Microkernels sgemm_avx512_14x32 and dgemm_avx512_14x16 (28 accumulators, broadcast A, two
// B vectors per k); masked loads/stores at the N edge, ReLU mask via compare-to-mask.
// Contract: include/bpfast/gemm.hpp.
#include <immintrin.h>

#include "gemm_blocked.hpp"

namespace bpfast {
namespace {

inline __mmask16 first_n16(ptrdiff_t n) { return static_cast<__mmask16>((1u << n) - 1u); }

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
    static V load_n(const float* p, ptrdiff_t n) { return _mm512_maskz_loadu_ps(first_n16(n), p); }
    static void store_n(float* p, V v, ptrdiff_t n) { _mm512_mask_storeu_ps(p, first_n16(n), v); }
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
    static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
    static V add(V a, V b) { return _mm512_add_pd(a, b); }
    static V load_n(const double* p, ptrdiff_t n) {
        return _mm512_maskz_loadu_pd(static_cast<__mmask8>(first_n16(n)), p);
    }
    static void store_n(double* p, V v, ptrdiff_t n) {
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>(first_n16(n)), v);
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
};

}  // namespace

namespace gemm_avx512 {
using SBlock = Blocking<14, 2, 384, 112, 4096>;
using DBlock = Blocking<14, 2, 256, 112, 2048>;
}  // namespace gemm_avx512
}  // namespace bpfast

BPFAST_DEFINE_GEMM_ISA(avx512, "sgemm_avx512_14x32 dgemm_avx512_14x16, KC=384/256 MC=112")
