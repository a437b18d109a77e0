// GEMM, generic path: baseline flags only (SSE2 on x86-64, NEON/none elsewhere), 16-byte GCC
// vectors, no FMA contraction (multiply, then add). Microkernels sgemm_generic_4x8 and
// dgemm_generic_4x4. Contract: include/bpfast/gemm.hpp.
#include <type_traits>

#include "gemm_blocked.hpp"

namespace bpfast {
namespace {

template <class T>
struct GenericSimd {
    typedef T V __attribute__((vector_size(16)));
    static constexpr int W = int(16 / sizeof(T));
    static V zero() { return V{}; }
    static V load(const T* p) { return *reinterpret_cast<const V*>(p); }
    static V loadu(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof v);
        return v;
    }
    static void storeu(T* p, V v) { std::memcpy(p, &v, sizeof v); }
    template <class TA>  // TA is T, or float with T double (widened)
    static T bcast(const TA* p) {
        return static_cast<T>(*p);  // scalar * vector broadcasts
    }
    // the floats p[0, n) widened (0 <= n <= W), zeros past them (T double)
    static V load_widened(const float* p, ptrdiff_t n) {
        V v = V{};
        for (ptrdiff_t j = 0; j < n && j < W; ++j) v[j] = static_cast<T>(p[j]);
        return v;
    }
    template <class A>  // A is T (a broadcast) or V
    static V fma(A a, V b, V c) {
        return c + a * b;
    }
    static V add(V a, V b) { return a + b; }
    static V sub(V a, V b) { return a - b; }
    static V mul(V a, V b) { return a * b; }
    static V set1(T x) { return V{} + x; }
    static void prefetch_for_write(const T* p) { __builtin_prefetch(p, 1, 3); }
    static V load_n(const T* p, ptrdiff_t n) {
        V v = V{};
        std::memcpy(&v, p, static_cast<std::size_t>(n) * sizeof(T));
        return v;
    }
    static void store_n(T* p, V v, ptrdiff_t n) { std::memcpy(p, &v, static_cast<std::size_t>(n) * sizeof(T)); }
    // The lanes' bits or-ed together (zero only where both lanes are +-0), and the bits of the
    // lanes that are not +-0 (NaN included).
    static V bit_or(V a, V b) {
        typedef std::conditional_t<sizeof(T) == 4, std::uint32_t, std::uint64_t> U __attribute__((vector_size(16)));
        U x, y;
        std::memcpy(&x, &a, sizeof a);
        std::memcpy(&y, &b, sizeof b);
        x |= y;
        std::memcpy(&a, &x, sizeof a);
        return a;
    }
    static unsigned nonzero(V v) {
        unsigned bits = 0;
        for (int j = 0; j < W; ++j)
            if (v[j] != T(0)) bits |= 1u << j;
        return bits;
    }
    // Bit l set when lane l is -0.0.
    static unsigned negative_zeros(V v) {
        unsigned bits = 0;
        for (int j = 0; j < W; ++j)
            if (v[j] == T(0) && __builtin_signbit(v[j])) bits |= 1u << j;
        return bits;
    }
    // Bit l set when lane l < n of p is not zero (NaN included); p is not read past n.
    static unsigned nonzero_first(const T* p, ptrdiff_t n) {
        unsigned bits = 0;
        for (int j = 0; j < W && j < n; ++j)
            if (p[j] != T(0)) bits |= 1u << j;
        return bits;
    }
    static void transpose(V r[W]) {  // r[i] lane j <-> r[j] lane i
        T t[W][W];
        std::memcpy(t, r, sizeof t);
        for (int i = 0; i < W; ++i)
            for (int j = 0; j < W; ++j) r[j][i] = t[i][j];
    }
    static V relu(V v, bool* mask, ptrdiff_t n) {
        T t[W];
        std::memcpy(t, &v, sizeof v);
        for (int j = 0; j < W; ++j) {
            const bool m = t[j] <= T(0);  // NaN: false
            if (mask && j < n) mask[j] = m;
            if (m) t[j] = T(0);
        }
        std::memcpy(&v, t, sizeof v);
        return v;
    }
    // v made 0 in the lanes j < n where m[j] is set; m is not read past n.
    static V zero_where(V v, const bool* m, ptrdiff_t n) {
        T t[W];
        std::memcpy(t, &v, sizeof v);
        for (int j = 0; j < W && j < n; ++j)
            if (m[j]) t[j] = T(0);
        std::memcpy(&v, t, sizeof v);
        return v;
    }
};

template <>
struct Simd<float> : GenericSimd<float> {};
template <>
struct Simd<double> : GenericSimd<double> {};

}  // namespace

namespace gemm_generic {
using SBlock = Blocking<4, 2, 256, 128, 4096>;
using DBlock = Blocking<4, 2, 256, 128, 2048>;
}  // namespace gemm_generic
}  // namespace bpfast

BPFAST_DEFINE_GEMM_ISA(generic, "sgemm_generic_4x8 dgemm_generic_4x4, KC=256 MC=128")
