// The blocked GEMM (BLIS manner): pack op(B) into NR-wide panels and op(A) into MR-tall
// panels, then run a register-blocked MR x NR microkernel over them.
//
// Included by exactly one translation unit per instruction set (gemm_<isa>.cpp), each compiled
// with its own -m flags after defining BPFAST_VEC_BYTES (the SIMD width in bytes). Everything
// here sits in an anonymous namespace, so every TU gets its own copy: the linker can never
// hand the AVX-512 instantiation to the generic path (the ODR trap). For the same reason this
// file calls no inline std:: templates, only C library functions.
//
// Contract: as bpfast::gemm (include/bpfast/gemm.hpp): row-major, C overwritten, no aliasing.
#pragma once

#ifndef BPFAST_VEC_BYTES
#error "define BPFAST_VEC_BYTES before including gemm_blocked.hpp"
#endif

#include <cstddef>
#include <cstring>
#include <new>

namespace bpfast {
namespace {

using std::ptrdiff_t;

template <class T>
struct Vec;
template <>
struct Vec<float> {
    typedef float type __attribute__((vector_size(BPFAST_VEC_BYTES)));
};
template <>
struct Vec<double> {
    typedef double type __attribute__((vector_size(BPFAST_VEC_BYTES)));
};

// Register block MR x (NV vectors) and cache blocks KC, MC (a multiple of MR), NC.
template <int MR, int NV, int KC, int MC, int NC>
struct Blocking {
    static constexpr int mr = MR, nv = NV, kc = KC, mc = MC, nc = NC;
};

inline ptrdiff_t min_of(ptrdiff_t a, ptrdiff_t b) { return a < b ? a : b; }
inline ptrdiff_t round_up(ptrdiff_t a, ptrdiff_t m) { return (a + m - 1) / m * m; }

// a is a packed (MR,kc) panel stored k-major, b a packed (kc,NR) panel; c is (m,n) with
// row stride ldc, m <= MR, n <= NR. first: c = bias + a·b (or a·b); else c += a·b.
template <class T, int MR, int NV>
void microkernel(T* c, const T* a, const T* b, const T* bias, ptrdiff_t ldc, ptrdiff_t kc, ptrdiff_t m,
                 ptrdiff_t n, bool first) {
    using V = typename Vec<T>::type;
    constexpr int W = int(sizeof(V) / sizeof(T));
    constexpr int NR = NV * W;
    V acc[MR][NV];
#pragma GCC unroll 32
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) acc[i][j] = V{};
    for (ptrdiff_t k = 0; k < kc; ++k) {
        const V* bk = reinterpret_cast<const V*>(b + k * NR);
        const T* ak = a + k * MR;
        V bv[NV];
#pragma GCC unroll 8
        for (int j = 0; j < NV; ++j) bv[j] = bk[j];
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i) {
            const T ai = ak[i];  // scalar * vector broadcasts (V{} + ai would cost an add)
#pragma GCC unroll 8
            for (int j = 0; j < NV; ++j) acc[i][j] += ai * bv[j];
        }
    }
    if (m == MR && n == NR) {
#pragma GCC unroll 32
        for (int i = 0; i < MR; ++i)
#pragma GCC unroll 8
            for (int j = 0; j < NV; ++j) {
                T* p = c + i * ldc + j * W;
                V cv = V{};
                if (!first)
                    std::memcpy(&cv, p, sizeof cv);
                else if (bias)
                    std::memcpy(&cv, bias + j * W, sizeof cv);
                cv += acc[i][j];
                std::memcpy(p, &cv, sizeof cv);
            }
        return;
    }
    alignas(64) T tile[MR * NR];
    std::memcpy(tile, acc, sizeof tile);
    for (ptrdiff_t i = 0; i < m; ++i)
        for (ptrdiff_t j = 0; j < n; ++j) {
            T* p = c + i * ldc + j;
            const T base = first ? (bias ? bias[j] : T(0)) : *p;
            *p = base + tile[i * NR + j];
        }
}

// Pack rows [0, rows) x [0, kc) of a strided matrix into R-wide panels, k-major inside a panel
// (panel p holds dst[k*R + r] = element (p*R + r, k)), zero-padding the last panel. Element (r,k)
// is src[r*rs + k*ks]: op(A) packs with R = MR, op(B) (read as its transpose) with R = NR, and
// a transposed operand just swaps the strides.
template <class T, int R>
void pack_panels(T* dst, const T* src, ptrdiff_t rs, ptrdiff_t ks, ptrdiff_t rows, ptrdiff_t kc) {
    for (ptrdiff_t r0 = 0; r0 < rows; r0 += R, dst += R * kc) {
        const ptrdiff_t n = min_of(R, rows - r0);
        for (ptrdiff_t k = 0; k < kc; ++k)
            for (ptrdiff_t r = 0; r < R; ++r) dst[k * R + r] = r < n ? src[(r0 + r) * rs + k * ks] : T(0);
    }
}

template <class T>
struct AlignedBuffer {
    T* p;
    explicit AlignedBuffer(ptrdiff_t n)
        : p(static_cast<T*>(::operator new(static_cast<std::size_t>(n) * sizeof(T), std::align_val_t(64)))) {}
    ~AlignedBuffer() { ::operator delete(p, std::align_val_t(64)); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
};

template <class T, class B>
void gemm_blocked(T* C, const T* A, const T* Bm, const T* bias, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                  bool trans_a, bool trans_b) {
    constexpr int MR = B::mr;
    constexpr int NR = B::nv * int(sizeof(typename Vec<T>::type) / sizeof(T));
    static_assert(B::mc % B::mr == 0 && B::nc % NR == 0, "cache blocks must be multiples of the register block");
    if (M <= 0 || N <= 0) return;
    const ptrdiff_t ldc = N, lda = trans_a ? M : K, ldb = trans_b ? K : N;
    if (K <= 0) {
        for (ptrdiff_t i = 0; i < M; ++i)
            for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] = bias ? bias[j] : T(0);
        return;
    }
    const ptrdiff_t kc_max = min_of(K, B::kc);
    AlignedBuffer<T> ap(round_up(min_of(M, B::mc), MR) * kc_max);
    AlignedBuffer<T> bp(round_up(min_of(N, B::nc), NR) * kc_max);
    for (ptrdiff_t jc = 0; jc < N; jc += B::nc) {
        const ptrdiff_t nc = min_of(B::nc, N - jc);
        for (ptrdiff_t pc = 0; pc < K; pc += B::kc) {
            const ptrdiff_t kc = min_of(B::kc, K - pc);
            // op(B)(k, j) is Bm[k*ldb + j], or Bm[j*ldb + k] when trans_b
            const ptrdiff_t bj = trans_b ? ldb : 1, bk = trans_b ? 1 : ldb;
            pack_panels<T, NR>(bp.p, Bm + jc * bj + pc * bk, bj, bk, nc, kc);
            for (ptrdiff_t ic = 0; ic < M; ic += B::mc) {
                const ptrdiff_t mc = min_of(B::mc, M - ic);
                // op(A)(i, k) is A[i*lda + k], or A[k*lda + i] when trans_a
                const ptrdiff_t ai = trans_a ? 1 : lda, ak = trans_a ? lda : 1;
                pack_panels<T, MR>(ap.p, A + ic * ai + pc * ak, ai, ak, mc, kc);
                for (ptrdiff_t jr = 0; jr < nc; jr += NR)
                    for (ptrdiff_t ir = 0; ir < mc; ir += MR)
                        microkernel<T, MR, B::nv>(C + (ic + ir) * ldc + jc + jr, ap.p + ir * kc, bp.p + jr * kc,
                                                 bias ? bias + jc + jr : nullptr, ldc, kc, min_of(MR, mc - ir),
                                                 min_of(NR, nc - jr), pc == 0);
            }
        }
    }
}

}  // namespace
}  // namespace bpfast

// Defines bpfast::gemm_<isa>::{sgemm, dgemm, blocking} from the Blocking types SBlock and DBlock
// that the including TU declares in namespace bpfast::gemm_<isa>.
#define BPFAST_DEFINE_GEMM_ISA(isa, DESCRIPTION)                                                       \
    namespace bpfast::gemm_##isa {                                                                   \
    void sgemm(float* C, const float* A, const float* B, const float* bias, std::ptrdiff_t M,        \
               std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a, bool trans_b) {                     \
        gemm_blocked<float, SBlock>(C, A, B, bias, M, N, K, trans_a, trans_b);                       \
    }                                                                                                \
    void dgemm(double* C, const double* A, const double* B, const double* bias, std::ptrdiff_t M,    \
               std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a, bool trans_b) {                     \
        gemm_blocked<double, DBlock>(C, A, B, bias, M, N, K, trans_a, trans_b);                      \
    }                                                                                                \
    const char* const blocking = DESCRIPTION;                                                        \
    }
