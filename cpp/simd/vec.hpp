// SIMD vectors for the per-ISA elementwise kernels: GCC/Clang vector extensions of
// BPFAST_VEC_BYTES bytes, plus partial loads/stores and horizontal reductions.
//
// Included only by translation units compiled for one instruction set (cpp/ops/elementwise_<isa>.cpp),
// after they define BPFAST_VEC_BYTES. Everything here has internal linkage (anonymous namespace),
// so the linker can never hand the AVX-512 copy of a helper to the generic path (the ODR trap);
// for the same reason only builtins and C library functions are called, no inline std:: templates.
#pragma once

#ifndef BPFAST_VEC_BYTES
#error "define BPFAST_VEC_BYTES before including simd/vec.hpp"
#endif

#include <cstddef>
#include <cstdint>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace bpfast::simd {
namespace {

using std::ptrdiff_t;

template <class T>
struct Vec;
template <>
struct Vec<float> {
    typedef float V __attribute__((vector_size(BPFAST_VEC_BYTES)));
    typedef std::int32_t IE;
    typedef std::int32_t I __attribute__((vector_size(BPFAST_VEC_BYTES)));   // comparison results
    typedef std::uint32_t U __attribute__((vector_size(BPFAST_VEC_BYTES)));  // bit manipulation
    typedef std::uint8_t B __attribute__((vector_size(BPFAST_VEC_BYTES / 4)));  // one byte per lane
    static constexpr int W = BPFAST_VEC_BYTES / 4;
};
template <>
struct Vec<double> {
    typedef double V __attribute__((vector_size(BPFAST_VEC_BYTES)));
    typedef std::int64_t IE;
    typedef std::int64_t I __attribute__((vector_size(BPFAST_VEC_BYTES)));
    typedef std::uint64_t U __attribute__((vector_size(BPFAST_VEC_BYTES)));
    typedef std::uint8_t B __attribute__((vector_size(BPFAST_VEC_BYTES / 8)));
    static constexpr int W = BPFAST_VEC_BYTES / 8;
};

template <class T>
using V = typename Vec<T>::V;

template <class T>
inline V<T> splat(T a) {
    return V<T>{} + a;
}

template <class T>
inline V<T> loadu(const T* p) {
    V<T> v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}

template <class T>
inline void storeu(T* p, V<T> v) {
    __builtin_memcpy(p, &v, sizeof v);
}

// Lanes [0, n) from p (0 <= n <= W), the others set to fill; never reads past p + n.
template <class T>
inline V<T> load_partial(const T* p, ptrdiff_t n, T fill) {
#if BPFAST_VEC_BYTES == 64 && defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
        return _mm512_mask_loadu_ps(_mm512_set1_ps(fill), static_cast<__mmask16>((1u << n) - 1), p);
    else
        return _mm512_mask_loadu_pd(_mm512_set1_pd(fill), static_cast<__mmask8>((1u << n) - 1), p);
#else
    V<T> v = splat(fill);
    for (ptrdiff_t j = 0; j < n; ++j) v[j] = p[j];
    return v;
#endif
}

// Lanes [0, n) of v to p (0 <= n <= W); never writes past p + n.
template <class T>
inline void store_partial(T* p, V<T> v, ptrdiff_t n) {
#if BPFAST_VEC_BYTES == 64 && defined(__AVX512F__)
    if constexpr (sizeof(T) == 4)
        _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1), v);
    else
        _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1), v);
#else
    for (ptrdiff_t j = 0; j < n; ++j) p[j] = v[j];
#endif
}

// Lanes [0, n) of v, the others 0.
template <class T>
inline V<T> keep_first(V<T> v, ptrdiff_t n) {
    using IE = typename Vec<T>::IE;
    typename Vec<T>::I lane{};
    for (int j = 0; j < Vec<T>::W; ++j) lane[j] = j;
    return lane < static_cast<IE>(n) ? v : V<T>{};
}

// Whether every lane of a comparison result m (-1 or 0 per lane) is set.
template <class T>
inline bool all_set(typename Vec<T>::I m) {
#if BPFAST_VEC_BYTES == 64 && defined(__AVX512DQ__)
    if constexpr (sizeof(T) == 4)
        return _mm512_movepi32_mask(reinterpret_cast<__m512i>(m)) == 0xFFFF;
    else
        return _mm512_movepi64_mask(reinterpret_cast<__m512i>(m)) == 0xFF;
#elif BPFAST_VEC_BYTES == 32 && defined(__AVX__)
    if constexpr (sizeof(T) == 4)
        return _mm256_movemask_ps(reinterpret_cast<__m256>(m)) == 0xFF;
    else
        return _mm256_movemask_pd(reinterpret_cast<__m256d>(m)) == 0xF;
#elif BPFAST_VEC_BYTES == 16 && defined(__SSE2__)
    if constexpr (sizeof(T) == 4)
        return _mm_movemask_ps(reinterpret_cast<__m128>(m)) == 0xF;
    else
        return _mm_movemask_pd(reinterpret_cast<__m128d>(m)) == 0x3;
#else
    bool all = true;
    for (int j = 0; j < Vec<T>::W; ++j) all = all && m[j] != 0;
    return all;
#endif
}

// Lanes [0, N) as a pack, for __builtin_shufflevector.
template <int... I>
struct Lanes {};
template <int N, int... I>
struct MakeLanes : MakeLanes<N - 1, N - 1, I...> {};
template <int... I>
struct MakeLanes<0, I...> {
    typedef Lanes<I...> type;
};

#if defined(__has_builtin)
#if __has_builtin(__builtin_shufflevector)
#define BPFAST_HAVE_SHUFFLEVECTOR 1
#endif
#endif

// The lower and upper halves of v as H, whose lanes are I... (0 .. half - 1), in registers:
// taken through memory instead (memcpy into each half), GCC stored the vector to the stack and
// loaded the halves back, a store-forwarding wait in every reduction (a softmax of ten classes
// spent a third of its time there). Compilers without __builtin_shufflevector keep the memcpy.
template <class H, class Vb, int... I>
inline void halves(const Vb& v, H& lo, H& hi, Lanes<I...>) {
#ifdef BPFAST_HAVE_SHUFFLEVECTOR
    lo = __builtin_shufflevector(v, v, I...);
    hi = __builtin_shufflevector(v, v, (I + int(sizeof...(I)))...);
#else
    __builtin_memcpy(&lo, &v, sizeof lo);
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof lo, sizeof hi);
#endif
}

// A horizontal reduction as a fixed tree: op(lower half, upper half) until one lane is left, so
// a path always combines the lanes in the same order.
template <class T, int Bytes>
struct Halving {
    typedef T H __attribute__((vector_size(Bytes / 2)));
    template <class Vb, class Op>
    static T run(const Vb& v, Op op) {
        H lo, hi;
        halves(v, lo, hi, typename MakeLanes<Bytes / 2 / int(sizeof(T))>::type{});
        return Halving<T, Bytes / 2>::run(op(lo, hi), op);
    }
};
template <class T>
struct Halving<T, int(sizeof(T))> {
    template <class Vb, class Op>
    static T run(const Vb& v, Op) {
        T s;
        __builtin_memcpy(&s, &v, sizeof s);
        return s;
    }
};

template <class T>
inline T hsum(V<T> v) {
    return Halving<T, BPFAST_VEC_BYTES>::run(v, [](auto lo, auto hi) { return lo + hi; });
}

// Horizontal max; NaN lanes may or may not reach the result (the callers let NaN reach theirs
// another way).
template <class T>
inline T hmax(V<T> v) {
    return Halving<T, BPFAST_VEC_BYTES>::run(v, [](auto lo, auto hi) { return hi > lo ? hi : lo; });
}

// Lane-wise max, keeping a where b is NaN.
template <class T>
inline V<T> vmax(V<T> a, V<T> b) {
    return b > a ? b : a;
}

}  // namespace
}  // namespace bpfast::simd
