// Vectorised exp for float and double, accurate to about 1 ulp over the whole range, without
// -ffast-math: overflow gives +inf, underflow gives denormals then 0 (correctly scaled, one
// rounding), exp(-inf) = 0, exp(+inf) = inf, NaN propagates.
//
// Method (Cephes/fdlibm): n = round(x / ln2) with the 1.5*2^mantissa trick (no float->int
// conversion, so NaN is harmless), r = x - n*ln2 in two exact steps (ln2 split into a short
// high part and a low part), exp(r) by a polynomial on |r| <= ln2/2, then times 2^n applied as
// 2^n1 * 2^n2 (n1 = round(n/2)) so results in the denormal and overflow ranges round once
// (or as one 2^n when every lane of the vector is in the normal range: the same value, sooner).
// AVX-512 applies 2^n with vscalef instead, one correctly rounded scaling: the same value again,
// bit for bit, in about two thirds of the instructions. AVX-512 float goes further: 2^(j/16) from
// a table in a register and a cubic for exp(r), within 1 ulp (see vexp_each_table).
// x is first clamped into [lo, hi], just outside the range where exp is finite and nonzero,
// which keeps n small; a comparison with NaN is false, so NaN passes the clamp and poisons p.
//
// Same rules as simd/vec.hpp: internal linkage only, builtins only.
#pragma once

#include "vec.hpp"

namespace bpfast::simd {
namespace {

template <class T>
struct ExpConst;

template <>
struct ExpConst<float> {
    typedef std::uint32_t Bits;
    static constexpr float lo = -104.0f;  // exp(-104) < 2^-150: rounds to 0
    static constexpr float normal_lo = -87.0f, normal_hi = 87.5f;  // 2^n is a normal float
    static constexpr float hi = 89.0f;    // exp(89) > FLT_MAX: overflows to inf
    static constexpr float log2e = 1.44269504088896341f;
    static constexpr float ln2_hi = 0.693359375f;  // 9 significant bits: n * ln2_hi is exact
    static constexpr float ln2_lo = -2.12194440e-4f;
    static constexpr float magic = 12582912.0f;  // 1.5 * 2^23
    static constexpr Bits magic_bits = 0x4B400000u;
    static constexpr Bits bias = 127;
    static constexpr int mant = 23;
};

template <>
struct ExpConst<double> {
    typedef std::uint64_t Bits;
    static constexpr double lo = -746.0;  // exp(-746) < 2^-1075: rounds to 0
    static constexpr double normal_lo = -708.0, normal_hi = 709.0;  // 2^n is a normal double
    static constexpr double hi = 710.0;   // exp(710) > DBL_MAX
    static constexpr double log2e = 1.4426950408889634074;
    static constexpr double ln2_hi = 6.93147180369123816490e-01;  // 32 significant bits
    static constexpr double ln2_lo = 1.90821492927058770002e-10;
    static constexpr double magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr Bits magic_bits = 0x4338000000000000ull;
    static constexpr Bits bias = 1023;
    static constexpr int mant = 52;
};

// exp(r) for |r| <= ln2/2 (a little more is fine) as 1 + r + r^2 * P(r), P by Horner from its
// highest coefficient: float, Cephes expf (degree 5); double, the Taylor series to r^13
// (truncation < 5e-18 relative).
template <class T>
struct ExpPoly;

template <>
struct ExpPoly<float> {
    static constexpr int n = 6;
    static constexpr float c[n] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                   4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};
};

template <>
struct ExpPoly<double> {
    static constexpr int n = 12;
    static constexpr double c[n] = {1.0 / 6227020800.0, 1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0,
                                    1.0 / 362880.0,     1.0 / 40320.0,     1.0 / 5040.0,       1.0 / 720.0,
                                    1.0 / 120.0,        1.0 / 24.0,        1.0 / 6.0,          0.5};
};

// exp(r[i]) for NV vectors, each step across all of them before the next, so that the core
// sees NV independent operations at every step rather than one long dependent chain.
template <class T, int NV>
inline void exp_poly_each(const V<T>* r, V<T>* out) {
    using P = ExpPoly<T>;
    V<T> p[NV];
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) p[i] = splat(P::c[0]);
#pragma GCC unroll 16
    for (int k = 1; k < P::n; ++k)
#pragma GCC unroll 8
        for (int i = 0; i < NV; ++i) p[i] = p[i] * r[i] + P::c[k];
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) out[i] = (p[i] * (r[i] * r[i]) + r[i]) + T(1);
}

template <class T>
inline V<T> exp_poly(V<T> r) {
    V<T> out;
    exp_poly_each<T, 1>(&r, &out);
    return out;
}

// exp(x) for any x (see the top of the file).
template <class T>
inline V<T> vexp_any(V<T> x) {
    using C = ExpConst<T>;
    typedef typename Vec<T>::U U;
    const V<T> lo = splat(C::lo), hi = splat(C::hi), magic = splat(C::magic);
    x = x < lo ? lo : x;  // -inf -> lo; NaN stays
    x = x > hi ? hi : x;  // +inf -> hi
    const V<T> t = x * C::log2e + magic;  // n in the low mantissa bits
    const V<T> n = t - magic;
    V<T> r = x - n * C::ln2_hi;  // exact
    r = r - n * C::ln2_lo;
    const V<T> p = exp_poly<T>(r);
    const V<T> t1 = n * T(0.5) + magic;  // n1 = round(n / 2), n2 = n - n1: both within the exponent range
    const U n_bits = (U)t - C::magic_bits;
    const U n1_bits = (U)t1 - C::magic_bits;
    const U n2_bits = n_bits - n1_bits;
    const U s1 = (n1_bits + C::bias) << C::mant;
    const U s2 = (n2_bits + C::bias) << C::mant;
    return p * (V<T>)s1 * (V<T>)s2;
}

// exp(x) when every lane lies in [normal_lo, normal_hi]: 2^n is normal, one scaling suffices.
template <class T>
inline V<T> vexp_normal(V<T> x) {
    using C = ExpConst<T>;
    typedef typename Vec<T>::U U;
    const V<T> magic = splat(C::magic);
    const V<T> t = x * C::log2e + magic;
    const V<T> n = t - magic;
    V<T> r = x - n * C::ln2_hi;
    r = r - n * C::ln2_lo;
    const U s = ((U)t + (C::bias - C::magic_bits)) << C::mant;
    return exp_poly<T>(r) * (V<T>)s;
}

#if BPFAST_VEC_BYTES == 64 && defined(__AVX512F__)
// exp(x) with AVX-512: vscalef multiplies p by 2^n with one rounding over the whole range (normal,
// denormal, overflow), the value vexp_any computes with two multiplies, so no range check and no
// exponent arithmetic. min/max return their second operand for NaN: NaN passes the clamp.
// (Zero-masked forms with every lane kept, which the compiler emits as the plain instructions:
// the unmasked intrinsics trip GCC 12's -Wmaybe-uninitialized on _mm512_undefined_*(), GCC bug
// 105593, once several vectors are in flight.)
inline __m512 scale_by_pow2(__m512 p, __m512 n) { return _mm512_maskz_scalef_ps(0xffff, p, n); }
inline __m512d scale_by_pow2(__m512d p, __m512d n) { return _mm512_maskz_scalef_pd(0xff, p, n); }
inline __m512 vmax_keep_nan(__m512 x, float lo) { return _mm512_maskz_max_ps(0xffff, _mm512_set1_ps(lo), x); }
inline __m512d vmax_keep_nan(__m512d x, double lo) { return _mm512_maskz_max_pd(0xff, _mm512_set1_pd(lo), x); }
inline __m512 clamp_keep_nan(__m512 x, float lo, float hi) {
    return _mm512_maskz_min_ps(0xffff, _mm512_set1_ps(hi), vmax_keep_nan(x, lo));
}
inline __m512d clamp_keep_nan(__m512d x, double lo, double hi) {
    return _mm512_maskz_min_pd(0xff, _mm512_set1_pd(hi), vmax_keep_nan(x, lo));
}
// exp's argument clamped into [lo, hi]; an argument known to be <= 0 or NaN (x - rowmax in a
// softmax) needs only the lower bound.
template <bool kNonPositive, class T>
inline V<T> clamp_exp_arg(V<T> x) {
    using C = ExpConst<T>;
    if constexpr (kNonPositive)
        return vmax_keep_nan(x, C::lo);
    else
        return clamp_keep_nan(x, C::lo, C::hi);
}

// float: k = round(16 x / ln2), r = x - k ln2/16 (|r| <= ln2/32), and
// exp(x) = 2^floor(k/16) * 2^((k mod 16)/16) * exp(r). The middle factor comes from a table of 16
// floats held in one register: vpermps picks by the low 4 bits of k, which the magic-number
// rounding leaves in t's bits. The magic number 1.5 * 2^19 rounds x / ln2 to a multiple of 1/16,
// so t - magic is k/16 itself (the same bits as rounding 16 x / ln2 to an integer, then scaling).
// exp(r) - 1 is r + r^2 (1/2 + r/6) (truncation < 1e-8), and vscalef applies 2^floor(k/16), since
// it floors its second operand. Within 1 ulp, 98% correctly rounded (every 7th float of the
// range, against exp in double); 12 instructions where the polynomial path takes 15 (11 when the
// argument is known to be <= 0), in a dependent chain a third shorter.
struct ExpTable {
    static constexpr float magic_16 = 786432.0f;  // 1.5 * 2^19: rounds x / ln2 to a multiple of 1/16
};

template <int NV, bool kNonPositive = false>
inline void vexp_each_table(V<float>* x) {
    using C = ExpConst<float>;
    using E = ExpTable;
    const __m512 pow2_j16 = _mm512_setr_ps(0x1p+0f, 0x1.0b5586p+0f, 0x1.172b84p+0f, 0x1.2387a6p+0f, 0x1.306fe0p+0f,
                                           0x1.3dea64p+0f, 0x1.4bfdaep+0f, 0x1.5ab07ep+0f, 0x1.6a09e6p+0f,
                                           0x1.7a1148p+0f, 0x1.8ace54p+0f, 0x1.9c4918p+0f, 0x1.ae89fap+0f,
                                           0x1.c199bep+0f, 0x1.d5818ep+0f, 0x1.ea4afap+0f);
    const V<float> magic = splat(E::magic_16);
    V<float> t[NV], k16[NV], r[NV], p[NV];
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) x[i] = clamp_exp_arg<kNonPositive, float>(x[i]);
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) t[i] = x[i] * C::log2e + magic;  // k mod 16 in the low mantissa bits
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) k16[i] = t[i] - magic;  // k / 16
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) r[i] = x[i] - k16[i] * C::ln2_hi;  // exact
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) r[i] = r[i] - k16[i] * C::ln2_lo;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) p[i] = (r[i] * r[i]) * (r[i] * (1.0f / 6) + 0.5f) + r[i];
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
        const V<float> tj = _mm512_maskz_permutexvar_ps(0xffff, _mm512_castps_si512(t[i]), pow2_j16);
        x[i] = scale_by_pow2(tj * p[i] + tj, k16[i]);
    }
}

// double: the polynomial path, 2^n applied by vscalef.
template <class T, int NV, bool kNonPositive>
inline void vexp_each_poly(V<T>* x) {
    using C = ExpConst<T>;
    const V<T> magic = splat(C::magic);
    V<T> n[NV], r[NV], p[NV];
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) x[i] = clamp_exp_arg<kNonPositive, T>(x[i]);
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) n[i] = (x[i] * C::log2e + magic) - magic;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) r[i] = x[i] - n[i] * C::ln2_hi;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) r[i] = r[i] - n[i] * C::ln2_lo;
    exp_poly_each<T, NV>(r, p);
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) x[i] = scale_by_pow2(p[i], n[i]);
}

// x[i] = exp(x[i]) for NV vectors, each step across all of them (see exp_poly_each).
// kNonPositive: the caller knows every lane is <= 0 or NaN (a shorter clamp).
template <class T, int NV, bool kNonPositive = false>
inline void vexp_each(V<T>* x) {
    if constexpr (sizeof(T) == sizeof(float))
        vexp_each_table<NV, kNonPositive>(x);
    else
        vexp_each_poly<T, NV, kNonPositive>(x);
}

template <class T>
inline V<T> vexp(V<T> x) {
    vexp_each<T, 1>(&x);
    return x;
}
#else
// exp(x): the short path when the whole vector is in the normal range (the usual case), else
// the general one. Both give the same value where both apply.
template <class T>
inline V<T> vexp(V<T> x) {
    using C = ExpConst<T>;
    if (all_set<T>((x >= C::normal_lo) & (x <= C::normal_hi))) return vexp_normal<T>(x);
    return vexp_any<T>(x);
}

template <class T, int NV, bool kNonPositive = false>
inline void vexp_each(V<T>* x) {
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) x[i] = vexp<T>(x[i]);
}
#endif

}  // namespace
}  // namespace bpfast::simd
