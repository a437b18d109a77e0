// The elementwise and row-wise kernels on SIMD vectors: exp, ReLU, sigmoid, softmax, softmax
// with cross-entropy (forward and backward). Single-threaded over the range they are given;
// the drivers in relu.cpp, sigmoid.cpp, softmax.cpp, softmax_xent.cpp split the work.
//
// Included by exactly one translation unit per instruction set (elementwise_<isa>.cpp), each
// compiled with its own -m flags after defining BPFAST_VEC_BYTES. Everything here has internal
// linkage, so every TU keeps its own copy (no ODR mixing of code built for different ISAs);
// only builtins and C library functions are called. BPFAST_DEFINE_OPS_ISA(isa) at the end of
// the TU fills bpfast::ops_<isa>::table.
//
// Contract: dense arrays, row-major (rows,C) for the row kernels; outputs overwritten and not
// aliasing inputs (relu_backward works in place); same semantics as the _ref twins in the op files.
#pragma once

#include <cstdint>

#include "../simd/vexp.hpp"
#include "bpfast/ops_dispatch.hpp"

namespace bpfast::simd {
namespace {

template <class T>
constexpr T neg_inf() {
    return static_cast<T>(-__builtin_inf());
}

// x, out are (n,): out = exp(x)
template <class T>
void exp_kernel(T* out, const T* x, ptrdiff_t n) {
    constexpr ptrdiff_t W = Vec<T>::W;
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(out + i, vexp<T>(loadu(x + i)));
    if (i < n) store_partial(out + i, vexp<T>(load_partial(x + i, n - i, T(0))), n - i);
}

// Elements [i, n) of the ReLU forward and backward, one at a time (the tails of the vector loops).
template <class T>
inline void relu_forward_scalar(T* out, bool* mask, const T* x, ptrdiff_t i, ptrdiff_t n) {
    for (; i < n; ++i) {
        const bool m = x[i] <= T(0);
        mask[i] = m;
        out[i] = m ? T(0) : x[i];
    }
}
template <class T>
inline void relu_backward_scalar(T* dout, const bool* mask, ptrdiff_t i, ptrdiff_t n) {
    for (; i < n; ++i)
        if (mask[i]) dout[i] = T(0);
}

// x, out, mask are (n,): mask = x <= 0 (NaN: false), out = mask ? +0 : x
template <class T>
void relu_forward_kernel(T* out, bool* mask, const T* x, ptrdiff_t n) {
    typedef typename Vec<T>::I I;
    typedef typename Vec<T>::B B;
    constexpr ptrdiff_t W = Vec<T>::W;
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) {
        const V<T> v = loadu(x + i);
        const I m = v <= V<T>{};  // -1 where masked
        storeu(out + i, m ? V<T>{} : v);
        const B b = __builtin_convertvector(-m, B);  // 1 where masked
        __builtin_memcpy(mask + i, &b, sizeof b);
    }
    relu_forward_scalar(out, mask, x, i, n);
}

// dout, mask are (n,): dout = 0 where mask, in place
template <class T>
void relu_backward_kernel(T* dout, const bool* mask, ptrdiff_t n) {
    typedef typename Vec<T>::I I;
    typedef typename Vec<T>::B B;
    constexpr ptrdiff_t W = Vec<T>::W;
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) {
        B b;
        __builtin_memcpy(&b, mask + i, sizeof b);
        const I m = __builtin_convertvector(b, I);
        storeu(dout + i, m != 0 ? V<T>{} : loadu(dout + i));
    }
    relu_backward_scalar(dout, mask, i, n);
}

// Mask bytes (0/1) for the bits of a movemask: byte k of kMaskBytes[b] is bit k of b.
constexpr std::uint32_t mask_bytes(unsigned b) {
    return (b & 1u) | ((b >> 1) & 1u) << 8 | ((b >> 2) & 1u) << 16 | ((b >> 3) & 1u) << 24;
}
constexpr std::uint32_t kMaskBytes[16] = {mask_bytes(0),  mask_bytes(1),  mask_bytes(2),  mask_bytes(3),
                                          mask_bytes(4),  mask_bytes(5),  mask_bytes(6),  mask_bytes(7),
                                          mask_bytes(8),  mask_bytes(9),  mask_bytes(10), mask_bytes(11),
                                          mask_bytes(12), mask_bytes(13), mask_bytes(14), mask_bytes(15)};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && BPFAST_VEC_BYTES == 64
#define BPFAST_RELU_AVX512 1  // relu_forward_stream_kernel (after these blocks) takes this one
// AVX-512: compare into a k-mask; the mask bytes come straight from it; tails use masked loads/stores.
template <class T>
struct Avx512;
template <>
struct Avx512<float> {
    typedef __mmask16 M;
    static constexpr int W = 16;
    static __m512 load(M live, const float* x) { return _mm512_maskz_loadu_ps(live, x); }
    static M le0(M live, __m512 v) { return _mm512_mask_cmp_ps_mask(live, v, _mm512_setzero_ps(), _CMP_LE_OQ); }
    static void relu_store(float* out, M live, M m, __m512 v) {
        _mm512_mask_storeu_ps(out, live, _mm512_maskz_mov_ps(static_cast<M>(~m), v));
    }
    static void zero(float* p, M m) { _mm512_mask_storeu_ps(p, m, _mm512_setzero_ps()); }
    static void stream(float* out, M m, __m512 v) { _mm512_stream_ps(out, _mm512_maskz_mov_ps(static_cast<M>(~m), v)); }
};
template <>
struct Avx512<double> {
    typedef __mmask8 M;
    static constexpr int W = 8;
    static __m512d load(M live, const double* x) { return _mm512_maskz_loadu_pd(live, x); }
    static M le0(M live, __m512d v) { return _mm512_mask_cmp_pd_mask(live, v, _mm512_setzero_pd(), _CMP_LE_OQ); }
    static void relu_store(double* out, M live, M m, __m512d v) {
        _mm512_mask_storeu_pd(out, live, _mm512_maskz_mov_pd(static_cast<M>(~m), v));
    }
    static void zero(double* p, M m) { _mm512_mask_storeu_pd(p, m, _mm512_setzero_pd()); }
    static void stream(double* out, M m, __m512d v) {
        _mm512_stream_pd(out, _mm512_maskz_mov_pd(static_cast<M>(~m), v));
    }
};

template <class T>
void relu_forward_avx512(T* out, bool* mask, const T* x, ptrdiff_t n) {
    using A = Avx512<T>;
    using M = typename A::M;
    const __m128i one = _mm_set1_epi8(1);
    for (ptrdiff_t i = 0; i < n; i += A::W) {
        const M live = n - i >= A::W ? M(~M(0)) : static_cast<M>((1u << (n - i)) - 1);
        const auto v = A::load(live, x + i);
        const M m = A::le0(live, v);
        A::relu_store(out + i, live, m, v);
        _mm_mask_storeu_epi8(mask + i, live, _mm_maskz_mov_epi8(m, one));
    }
}
// As relu_forward_avx512, out written with non-temporal stores (no read for ownership, no cache
// pollution: for outputs far larger than the caches). out is first brought to 64-byte alignment.
template <class T>
void relu_forward_stream_avx512(T* out, bool* mask, const T* x, ptrdiff_t n) {
    using A = Avx512<T>;
    using M = typename A::M;
    const ptrdiff_t misaligned = static_cast<ptrdiff_t>(reinterpret_cast<std::uintptr_t>(out) % 64);
    if (misaligned % sizeof(T) != 0) return relu_forward_avx512(out, mask, x, n);
    const ptrdiff_t head = misaligned ? (64 - misaligned) / ptrdiff_t(sizeof(T)) : 0;
    if (head >= n) return relu_forward_avx512(out, mask, x, n);
    relu_forward_avx512(out, mask, x, head);
    const __m128i one = _mm_set1_epi8(1);
    ptrdiff_t i = head;
    for (; i + A::W <= n; i += A::W) {
        const auto v = A::load(M(~M(0)), x + i);
        const M m = A::le0(M(~M(0)), v);
        A::stream(out + i, m, v);
        _mm_mask_storeu_epi8(mask + i, M(~M(0)), _mm_maskz_mov_epi8(m, one));
    }
    _mm_sfence();
    relu_forward_avx512(out + i, mask + i, x + i, n - i);
}
template <class T>
void relu_backward_avx512(T* dout, const bool* mask, ptrdiff_t n) {
    using A = Avx512<T>;
    using M = typename A::M;
    for (ptrdiff_t i = 0; i < n; i += A::W) {
        const __mmask16 live = n - i >= A::W ? __mmask16((1u << A::W) - 1) : static_cast<__mmask16>((1u << (n - i)) - 1);
        const __m128i b = _mm_maskz_loadu_epi8(live, mask + i);
        A::zero(dout + i, static_cast<M>(_mm_test_epi8_mask(b, b)));
    }
}
template <>
void relu_forward_kernel<float>(float* out, bool* mask, const float* x, ptrdiff_t n) {
    relu_forward_avx512(out, mask, x, n);
}
template <>
void relu_forward_kernel<double>(double* out, bool* mask, const double* x, ptrdiff_t n) {
    relu_forward_avx512(out, mask, x, n);
}
template <>
void relu_backward_kernel<float>(float* dout, const bool* mask, ptrdiff_t n) {
    relu_backward_avx512(dout, mask, n);
}
template <>
void relu_backward_kernel<double>(double* dout, const bool* mask, ptrdiff_t n) {
    relu_backward_avx512(dout, mask, n);
}
#elif defined(__AVX2__) && BPFAST_VEC_BYTES == 32
// AVX2: four compare results packed to 32 mask bytes (packs work per 128-bit lane, then a
// permute restores the order); the backward widens 8 mask bytes to 8 lanes.
template <>
void relu_forward_kernel<double>(double* out, bool* mask, const double* x, ptrdiff_t n) {
    const __m256d zero = _mm256_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d v = _mm256_loadu_pd(x + i);
        const __m256d le = _mm256_cmp_pd(v, zero, _CMP_LE_OQ);
        _mm256_storeu_pd(out + i, _mm256_andnot_pd(le, v));
        __builtin_memcpy(mask + i, &kMaskBytes[_mm256_movemask_pd(le)], 4);
    }
    relu_forward_scalar(out, mask, x, i, n);
}
template <>
void relu_forward_kernel<float>(float* out, bool* mask, const float* x, ptrdiff_t n) {
    const __m256 zero = _mm256_setzero_ps();
    const __m256i one = _mm256_set1_epi8(1), order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    ptrdiff_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i m[4];
        for (int k = 0; k < 4; ++k) {
            const __m256 v = _mm256_loadu_ps(x + i + 8 * k);
            const __m256 le = _mm256_cmp_ps(v, zero, _CMP_LE_OQ);
            _mm256_storeu_ps(out + i + 8 * k, _mm256_andnot_ps(le, v));
            m[k] = _mm256_castps_si256(le);
        }
        const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(m[0], m[1]), _mm256_packs_epi32(m[2], m[3]));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(mask + i),
                            _mm256_and_si256(_mm256_permutevar8x32_epi32(b, order), one));
    }
    relu_forward_scalar(out, mask, x, i, n);
}
template <>
void relu_backward_kernel<float>(float* dout, const bool* mask, ptrdiff_t n) {
    const __m256i zero = _mm256_setzero_si256();
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i m = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(mask + i)));
        const __m256 keep = _mm256_castsi256_ps(_mm256_cmpeq_epi32(m, zero));
        _mm256_storeu_ps(dout + i, _mm256_and_ps(keep, _mm256_loadu_ps(dout + i)));
    }
    relu_backward_scalar(dout, mask, i, n);
}
template <>
void relu_backward_kernel<double>(double* dout, const bool* mask, ptrdiff_t n) {
    const __m256i zero = _mm256_setzero_si256();
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) {
        int bytes;
        __builtin_memcpy(&bytes, mask + i, 4);
        const __m256i m = _mm256_cvtepu8_epi64(_mm_cvtsi32_si128(bytes));
        const __m256d keep = _mm256_castsi256_pd(_mm256_cmpeq_epi64(m, zero));
        _mm256_storeu_pd(dout + i, _mm256_and_pd(keep, _mm256_loadu_pd(dout + i)));
    }
    relu_backward_scalar(dout, mask, i, n);
}
#elif defined(__SSE2__) && BPFAST_VEC_BYTES == 16
// SSE2 (the generic path on x86-64): four compare results packed to 16 mask bytes; the backward
// widens 4 mask bytes to 4 lanes.
template <>
void relu_forward_kernel<double>(double* out, bool* mask, const double* x, ptrdiff_t n) {
    const __m128d zero = _mm_setzero_pd();
    ptrdiff_t i = 0;
    for (; i + 2 <= n; i += 2) {
        const __m128d v = _mm_loadu_pd(x + i);
        const __m128d le = _mm_cmple_pd(v, zero);
        _mm_storeu_pd(out + i, _mm_andnot_pd(le, v));
        __builtin_memcpy(mask + i, &kMaskBytes[_mm_movemask_pd(le)], 2);
    }
    relu_forward_scalar(out, mask, x, i, n);
}
template <>
void relu_backward_kernel<double>(double* dout, const bool* mask, ptrdiff_t n) {
    const __m128i zero = _mm_setzero_si128();
    ptrdiff_t i = 0;
    for (; i + 2 <= n; i += 2) {
        std::uint16_t bytes;
        __builtin_memcpy(&bytes, mask + i, 2);
        const __m128i b = _mm_cvtsi32_si128(bytes);
        const __m128i m = _mm_unpacklo_epi16(_mm_unpacklo_epi8(b, zero), zero);  // dwords b0 b1 0 0
        const __m128i m64 = _mm_shuffle_epi32(m, _MM_SHUFFLE(1, 1, 0, 0));        // b0 b0 b1 b1
        const __m128d keep = _mm_castsi128_pd(_mm_cmpeq_epi32(m64, zero));
        _mm_storeu_pd(dout + i, _mm_and_pd(keep, _mm_loadu_pd(dout + i)));
    }
    relu_backward_scalar(dout, mask, i, n);
}
template <>
void relu_forward_kernel<float>(float* out, bool* mask, const float* x, ptrdiff_t n) {
    const __m128 zero = _mm_setzero_ps();
    const __m128i one = _mm_set1_epi8(1);
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m128i m[4];
        for (int k = 0; k < 4; ++k) {
            const __m128 v = _mm_loadu_ps(x + i + 4 * k);
            const __m128 le = _mm_cmple_ps(v, zero);  // false for NaN
            _mm_storeu_ps(out + i + 4 * k, _mm_andnot_ps(le, v));
            m[k] = _mm_castps_si128(le);
        }
        const __m128i b = _mm_packs_epi16(_mm_packs_epi32(m[0], m[1]), _mm_packs_epi32(m[2], m[3]));
        _mm_storeu_si128(reinterpret_cast<__m128i*>(mask + i), _mm_and_si128(b, one));
    }
    relu_forward_scalar(out, mask, x, i, n);
}
template <>
void relu_backward_kernel<float>(float* dout, const bool* mask, ptrdiff_t n) {
    const __m128i zero = _mm_setzero_si128();
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) {
        int bytes;
        __builtin_memcpy(&bytes, mask + i, 4);
        const __m128i b = _mm_cvtsi32_si128(bytes);
        const __m128i m = _mm_unpacklo_epi16(_mm_unpacklo_epi8(b, zero), zero);
        const __m128 keep = _mm_castsi128_ps(_mm_cmpeq_epi32(m, zero));
        _mm_storeu_ps(dout + i, _mm_and_ps(keep, _mm_loadu_ps(dout + i)));
    }
    relu_backward_scalar(dout, mask, i, n);
}
#endif

// As relu_forward_kernel, for outputs far larger than the caches: non-temporal stores where the
// path has them (AVX-512), the plain kernel elsewhere.
template <class T>
void relu_forward_stream_kernel(T* out, bool* mask, const T* x, ptrdiff_t n) {
#ifdef BPFAST_RELU_AVX512
    relu_forward_stream_avx512(out, mask, x, n);
#else
    relu_forward_kernel(out, mask, x, n);
#endif
}

// x, out are (n,): out = 1 / (1 + exp(-x)), four vectors' exps side by side
template <class T>
void sigmoid_forward_kernel(T* out, const T* x, ptrdiff_t n) {
    constexpr ptrdiff_t W = Vec<T>::W;
    constexpr int NV = 4;
    const V<T> one = splat(T(1));
    ptrdiff_t i = 0;
    for (; i + NV * W <= n; i += NV * W) {
        V<T> e[NV];
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) e[v] = -loadu(x + i + v * W);
        vexp_each<T, NV>(e);
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) storeu(out + i + v * W, one / (one + e[v]));
    }
    for (; i + W <= n; i += W) storeu(out + i, one / (one + vexp<T>(-loadu(x + i))));
    if (i < n) store_partial(out + i, one / (one + vexp<T>(-load_partial(x + i, n - i, T(0)))), n - i);
}

// dout, out, dx are (n,): dx = dout * (1 - out) * out, in NumPy's order of operations
template <class T>
void sigmoid_backward_kernel(T* dx, const T* dout, const T* out, ptrdiff_t n) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const V<T> one = splat(T(1));
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) {
        const V<T> o = loadu(out + i);
        storeu(dx + i, loadu(dout + i) * (one - o) * o);
    }
    for (; i < n; ++i) dx[i] = dout[i] * (T(1) - out[i]) * out[i];
}

// A row of at most two vectors (the book's ten classes) in registers from its load to its store:
// softmax_row_kernel's passes (below) store y after the exp and load it again to be scaled (a
// masked store, then a load of it, waits for the store to retire) and run the two exps one after
// the other. Measured (alternating processes, with the reductions' halves in registers, vec.hpp),
// (100,10) float64: softmax 5.9 -> 2.5 us a call, softmax_xent_forward one-hot 8.0 -> 3.8;
// float32 3.7 -> 1.8 and 6.3 -> 3.4. The same operations on the same values, so the same bits:
// the maximum; the exps (vexp_each told its arguments are <= 0 leaves out a clamp that changes
// no such value); the sum of the first vector and the second's lanes in the row, in that order
// (softmax_row_kernel adds the even vectors into one sum and the odd ones and the last partial one
// into another, then the two; with two vectors at most, each sum holds one vector or nothing);
// one division, then one multiplication per element.
template <class T>
inline void softmax_short_row(T* y, const T* x, ptrdiff_t C) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const ptrdiff_t n1 = C > W ? C - W : 0, n0 = C - n1;  // the two vectors' lanes in the row
    V<T> e[2] = {load_partial(x, n0, neg_inf<T>()), n1 ? load_partial(x + W, n1, neg_inf<T>()) : splat(neg_inf<T>())};
    const V<T> mx = splat(hmax<T>(vmax<T>(e[0], e[1])));
    e[0] = e[0] - mx;
    e[1] = e[1] - mx;
    vexp_each<T, 2, true>(e);  // x - max <= 0
    const V<T> sum = keep_first<T>(e[0], n0) + keep_first<T>(e[1], n1);
    const V<T> inv = splat(T(1) / static_cast<T>(static_cast<double>(hsum<T>(sum))));
    store_partial(y, e[0] * inv, n0);
    if (n1) store_partial(y + W, e[1] * inv, n1);
}

// x, y are (C,): y = exp(x - max) * (1 / sum). NaN anywhere in the row reaches the sum (exp(NaN) is NaN),
// so the max may ignore it; +inf or all -inf make x - max NaN: the whole row is NaN, like NumPy.
// prefetch_next: the rows after these in x and y (x + C, y + C) are prefetched during the exp pass,
// x's to read and y's to write, so the next row's max pass does not wait on L3 or memory, nor its
// exp pass's stores on fetching y's lines.
template <class T>
inline void softmax_row_kernel(T* y, const T* x, ptrdiff_t C, bool prefetch_next = false) {
    constexpr ptrdiff_t W = Vec<T>::W;
    if (C <= 2 * W) return softmax_short_row(y, x, C);
    constexpr int NV = 4;  // vectors per step: independent maxima, and exps side by side
    V<T> m[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) m[v] = splat(neg_inf<T>());
    ptrdiff_t j = 0;
    for (; j + NV * W <= C; j += NV * W)
#pragma GCC unroll 8
        for (int v = 0; v < NV; ++v) m[v] = vmax<T>(m[v], loadu(x + j + v * W));
    for (; j + W <= C; j += W) m[0] = vmax<T>(m[0], loadu(x + j));
    if (j < C) m[1] = vmax<T>(m[1], load_partial(x + j, C - j, neg_inf<T>()));
    for (int v = 1; v < NV; ++v) m[0] = vmax<T>(m[0], m[v]);
    const V<T> mx = splat(hmax<T>(m[0]));

    // exp and sum: vector sums over blocks of kBlock elements, the block sums added in double
    // (a long float row summed in one vector would lose digits that NumPy's pairwise sum keeps)
    constexpr ptrdiff_t kBlock = 128 * 2 * W;
    double total = 0;
    j = 0;
    while (j < C) {
        const ptrdiff_t end = C - j > kBlock ? j + kBlock : C;
        V<T> s0{}, s1{};
        for (; j + NV * W <= end; j += NV * W) {
            V<T> e[NV];
#pragma GCC unroll 8
            for (int v = 0; v < NV; ++v) {
                if (prefetch_next) {  // the same vectors of the next rows
                    __builtin_prefetch(x + C + j + v * W);
                    __builtin_prefetch(y + C + j + v * W, 1);
                }
                e[v] = loadu(x + j + v * W) - mx;
            }
            vexp_each<T, NV, true>(e);  // x - max <= 0
#pragma GCC unroll 8
            for (int v = 0; v < NV; v += 2) {  // even vectors to s0, odd to s1, in order
                storeu(y + j + v * W, e[v]);
                storeu(y + j + (v + 1) * W, e[v + 1]);
                s0 += e[v];
                s1 += e[v + 1];
            }
        }
        for (int parity = 0; j + W <= end; j += W, parity ^= 1) {  // the last few vectors, alternating
            const V<T> e = vexp<T>(loadu(x + j) - mx);
            storeu(y + j, e);
            (parity ? s1 : s0) += e;
        }
        if (j < end) {
            const V<T> e = vexp<T>(load_partial(x + j, end - j, T(0)) - mx);
            store_partial(y + j, e, end - j);
            s1 += keep_first<T>(e, end - j);
            j = end;
        }
        total += static_cast<double>(hsum<T>(s0 + s1));
    }
    // normalise: times 1/sum (one division per row; within an ulp of dividing each element)
    const V<T> inv = splat(T(1) / static_cast<T>(total));
    for (j = 0; j + W <= C; j += W) storeu(y + j, loadu(y + j) * inv);
    if (j < C) store_partial(y + j, load_partial(y + j, C - j, T(1)) * inv, C - j);
}

// x, y are (rows,C)
template <class T>
void softmax_rows_kernel(T* y, const T* x, ptrdiff_t rows, ptrdiff_t C) {
    for (ptrdiff_t i = 0; i < rows; ++i) softmax_row_kernel(y + i * C, x + i * C, C, i + 1 < rows);
}

// x, y are (rows,C), labels (rows,): softmax, and sum_i log(y[i, t_i] + 1e-7)
template <class T>
double softmax_xent_rows_kernel(T* y, const T* x, const std::int64_t* labels, ptrdiff_t rows, ptrdiff_t C) {
    softmax_rows_kernel(y, x, rows, C);
    double sum = 0;
    for (ptrdiff_t i = 0; i < rows; ++i) sum += __builtin_log(static_cast<double>(y[i * C + labels[i]]) + 1e-7);
    return sum;
}

// The first index of the row's max, a NaN counting as the max (np.argmax): the first NaN
// ends the search, so one comparison per element covers both.
template <class T>
ptrdiff_t argmax_row(const T* t, ptrdiff_t C) {
    if (__builtin_isnan(t[0])) return 0;
    ptrdiff_t best = 0;
    for (ptrdiff_t j = 1; j < C; ++j)
        if (!(t[j] <= t[best])) {  // greater, or NaN
            if (__builtin_isnan(t[j])) return j;
            best = j;
        }
    return best;
}

template <class T>
double softmax_xent_rows_onehot_kernel(T* y, const T* x, const T* t_onehot, ptrdiff_t rows, ptrdiff_t C) {
    softmax_rows_kernel(y, x, rows, C);
    double sum = 0;
    for (ptrdiff_t i = 0; i < rows; ++i)
        sum += __builtin_log(static_cast<double>(y[i * C + argmax_row(t_onehot + i * C, C)]) + 1e-7);
    return sum;
}

// y, dx are (rows,C), labels (rows,): dx = y; dx[i, t_i] -= 1; dx /= batch
template <class T>
void xent_backward_rows_kernel(T* dx, const T* y, const std::int64_t* labels, ptrdiff_t rows, ptrdiff_t C,
                               T batch) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const ptrdiff_t n = rows * C;
    const V<T> b = splat(batch);
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(dx + i, loadu(y + i) / b);
    if (i < n) store_partial(dx + i, load_partial(y + i, n - i, T(1)) / b, n - i);
    for (ptrdiff_t r = 0; r < rows; ++r) {
        const ptrdiff_t k = r * C + labels[r];
        dx[k] = (y[k] - T(1)) / batch;
    }
}

// y, t_onehot, dx are (n,): dx = (y - t) / batch
template <class T>
void xent_backward_onehot_kernel(T* dx, const T* y, const T* t_onehot, ptrdiff_t n, T batch) {
    constexpr ptrdiff_t W = Vec<T>::W;
    const V<T> b = splat(batch);
    ptrdiff_t i = 0;
    for (; i + W <= n; i += W) storeu(dx + i, (loadu(y + i) - loadu(t_onehot + i)) / b);
    for (; i < n; ++i) dx[i] = (y[i] - t_onehot[i]) / batch;
}

// x is (rows, cols): sums[j] = x[0, j] + x[1, j] + ... + x[rows - 1, j], added in row order from
// zero (as the scalar loop of the _ref twins). Up to kColumnSumVectors vectors of columns are
// summed in registers over all rows; wider rows are added row by row into sums, which stays in L1.
constexpr int kColumnSumVectors = 4;
template <class T>
void column_sums_kernel(T* sums, const T* x, ptrdiff_t rows, ptrdiff_t cols) {
    constexpr ptrdiff_t W = Vec<T>::W;
    if (cols <= 0) return;  // nothing to sum, however many rows (an (N, 0) dout)
    if (cols <= kColumnSumVectors * W) {
        V<T> acc[kColumnSumVectors] = {};
        for (ptrdiff_t i = 0; i < rows; ++i)
#pragma GCC unroll 4
            for (int v = 0; v < kColumnSumVectors; ++v) {
                const ptrdiff_t n = cols - v * W;
                if (n >= W)
                    acc[v] += loadu(x + i * cols + v * W);
                else if (n > 0)
                    acc[v] += load_partial(x + i * cols + v * W, n, T(0));
            }
        for (int v = 0; v < kColumnSumVectors && v * W < cols; ++v) {
            const ptrdiff_t n = cols - v * W;
            store_partial(sums + v * W, acc[v], n < W ? n : W);
        }
        return;
    }
    for (ptrdiff_t j = 0; j < cols; ++j) sums[j] = T(0);
    for (ptrdiff_t i = 0; i < rows; ++i) {
        const T* r = x + i * cols;
        ptrdiff_t j = 0;
        for (; j + W <= cols; j += W) storeu(sums + j, loadu(sums + j) + loadu(r + j));
        for (; j < cols; ++j) sums[j] += r[j];
    }
}

template <class T>
constexpr ElementwiseKernels<T> kernels_of() {
    return {exp_kernel<T>,
            relu_forward_kernel<T>,
            relu_forward_stream_kernel<T>,
            relu_backward_kernel<T>,
            sigmoid_forward_kernel<T>,
            sigmoid_backward_kernel<T>,
            softmax_rows_kernel<T>,
            softmax_xent_rows_kernel<T>,
            softmax_xent_rows_onehot_kernel<T>,
            xent_backward_rows_kernel<T>,
            xent_backward_onehot_kernel<T>,
            column_sums_kernel<T>};
}

}  // namespace
}  // namespace bpfast::simd

// The table of this TU's instruction set, bpfast::ops_<isa>::table.
#define BPFAST_DEFINE_OPS_ISA(isa)                                                                  \
    namespace bpfast::ops_##isa {                                                                   \
    const OpsTable table = {#isa, simd::kernels_of<float>(), simd::kernels_of<double>()};           \
    }
