// GEMM entry points: bpfast::gemm (dispatched to the path chosen at import, or to the BLAS
// escape hatch), bpfast::gemm_ref (the plain triple loop, the oracle), and the baseline-compiled
// helpers the per-ISA translation units call. Contract: include/bpfast/gemm.hpp.
#include "bpfast/gemm.hpp"

#include <atomic>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "bpfast/cpu.hpp"
#include "bpfast/threads.hpp"

namespace bpfast {
namespace {

std::atomic<BlasSgemm> blas_s{nullptr};
std::atomic<BlasDgemm> blas_d{nullptr};
// BPFAST_SKIP_ZEROS=0 (or off, no, false) at start-up: off; anything else or unset: on.
bool skip_zeros_from_environment() {
    const char* v = std::getenv("BPFAST_SKIP_ZEROS");
    if (!v) return true;
    for (const char* off : {"0", "off", "no", "false", "OFF", "NO", "FALSE"})
        if (std::strcmp(v, off) == 0) return false;
    return true;
}
std::atomic<bool> skip_zeros{skip_zeros_from_environment()};
std::atomic<std::int64_t> skipped_ks{0};

// C's row stride: ep.ldc, or N when that is 0 (dense).
template <class T>
std::ptrdiff_t row_stride(const Epilogue<T>& ep, std::ptrdiff_t N) {
    return ep.ldc ? ep.ldc : N;
}

template <class T>
void apply_epilogue(T* C, std::ptrdiff_t M, std::ptrdiff_t N, const Epilogue<T>& ep) {
    if (!ep.bias && !ep.relu && !ep.zero_mask && !ep.update) return;
    const std::ptrdiff_t ldc = row_stride(ep, N);
    for (std::ptrdiff_t i = 0; i < M; ++i)
        for (std::ptrdiff_t j = 0; j < N; ++j) {
            T v = C[i * ldc + j];
            if (ep.bias) v += ep.bias[j];
            if (ep.relu) {
                const bool m = v <= T(0);  // NaN: false
                if (ep.mask) ep.mask[i * ldc + j] = m;
                if (m) v = T(0);
            }
            if (ep.zero_mask && ep.zero_mask[i * ldc + j]) v = T(0);
            C[i * ldc + j] = v;
            if (ep.update) {
                const T step = ep.update_rate * v;  // baseline flags: never fused into the difference
                ep.update[i * ldc + j] = ep.update[i * ldc + j] - step;
            }
        }
}

// BLAS takes int sizes: C's rows ldc (>= N) apart.
bool fits_int(std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, std::ptrdiff_t ldc) {
    return M <= INT_MAX && ldc <= INT_MAX && K <= INT_MAX && M * K <= INT_MAX && K * N <= INT_MAX && M * ldc <= INT_MAX;
}

// Row-major C = op(A)·op(B) through column-major BLAS: C^T = op(B)^T·op(A)^T, where a row-major
// (r,c) array read column-major is its transpose. C's rows are ldc apart.
template <class T, class Fn>
void blas_gemm(Fn fn, T* C, const T* A, const T* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
               bool trans_a, bool trans_b, std::ptrdiff_t ldc_rows) {
    const int m = static_cast<int>(N), n = static_cast<int>(M), k = static_cast<int>(K);
    const int lda = static_cast<int>(trans_b ? K : N), ldb = static_cast<int>(trans_a ? M : K);
    const int ldc = static_cast<int>(ldc_rows);
    const char ta = trans_b ? 'T' : 'N', tb = trans_a ? 'T' : 'N';
    const T one = 1, zero = 0;
    const int lda1 = lda > 0 ? lda : 1, ldb1 = ldb > 0 ? ldb : 1;
    fn(&ta, &tb, &m, &n, &k, &one, B, &lda1, A, &ldb1, &zero, C, &ldc);
}

template <class T>
void fill_epilogue(T* C, std::ptrdiff_t M, std::ptrdiff_t N, const Epilogue<T>& ep) {
    const std::ptrdiff_t ldc = row_stride(ep, N);
    for (std::ptrdiff_t i = 0; i < M; ++i)
        for (std::ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] = T(0);
    apply_epilogue(C, M, N, ep);
}

}  // namespace

namespace detail {
void gemm_parallel_for(std::ptrdiff_t n_chunks, void (*fn)(void* ctx, std::ptrdiff_t c), void* ctx) {
    parallel_for(n_chunks, [fn, ctx](std::ptrdiff_t c) { fn(ctx, c); });
}
int gemm_threads() { return region_threads(); }
bool gemm_skip_zeros() { return skip_zeros.load(std::memory_order_relaxed); }
void gemm_note_skipped(std::ptrdiff_t n) { skipped_ks.fetch_add(n, std::memory_order_relaxed); }
}  // namespace detail

bool set_gemm_skip_zeros(bool on) { return skip_zeros.exchange(on); }
bool gemm_skip_zeros_enabled() { return skip_zeros.load(); }
std::int64_t gemm_skipped_ks(bool reset) { return reset ? skipped_ks.exchange(0) : skipped_ks.load(); }

void set_blas_gemm(BlasSgemm sgemm, BlasDgemm dgemm) {
    const bool on = sgemm && dgemm;
    blas_s.store(on ? sgemm : nullptr);
    blas_d.store(on ? dgemm : nullptr);
}

const char* gemm_backend() { return blas_d.load() ? "blas" : "bpfast"; }

template <>
void gemm<float>(float* C, const float* A, const float* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
                 bool trans_a, bool trans_b, const Epilogue<float>& ep) {
    if (BlasSgemm fn = blas_s.load(); fn && M > 0 && N > 0 && fits_int(M, N, K, row_stride(ep, N))) {
        if (K <= 0) return fill_epilogue(C, M, N, ep);
        blas_gemm(fn, C, A, B, M, N, K, trans_a, trans_b, row_stride(ep, N));
        return apply_epilogue(C, M, N, ep);
    }
    active_kernels().sgemm(C, A, B, M, N, K, trans_a, trans_b, ep);
}

template <>
void gemm<double>(double* C, const double* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N,
                  std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<double>& ep) {
    if (BlasDgemm fn = blas_d.load(); fn && M > 0 && N > 0 && fits_int(M, N, K, row_stride(ep, N))) {
        if (K <= 0) return fill_epilogue(C, M, N, ep);
        blas_gemm(fn, C, A, B, M, N, K, trans_a, trans_b, row_stride(ep, N));
        return apply_epilogue(C, M, N, ep);
    }
    active_kernels().dgemm(C, A, B, M, N, K, trans_a, trans_b, ep);
}

void gemm(double* C, const float* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
          bool trans_a, bool trans_b, const Epilogue<double>& ep) {
    if (BlasDgemm fn = blas_d.load(); fn && M > 0 && N > 0 && fits_int(M, N, K, row_stride(ep, N))) {
        if (K <= 0) return fill_epilogue(C, M, N, ep);
        std::vector<double> wide(A, A + M * K);  // the hatch widens A by a copy
        blas_gemm(fn, C, wide.data(), B, M, N, K, trans_a, trans_b, row_stride(ep, N));
        return apply_epilogue(C, M, N, ep);
    }
    active_kernels().mgemm(C, A, B, M, N, K, trans_a, trans_b, ep);
}

template <class T>
void gemm(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
          bool trans_a, bool trans_b) {
    Epilogue<T> ep;
    ep.bias = bias;
    gemm<T>(C, A, B, M, N, K, trans_a, trans_b, ep);
}

namespace {
// A is (M,K) or (K,M) when trans_a, B is (K,N) or (N,K) when trans_b, C is (M,N); sum over k
// ascending in T, then the epilogue.
template <class T, class TA>
void triple_loop(T* C, const TA* A, const T* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a,
                 bool trans_b, const Epilogue<T>& ep) {
    for (std::ptrdiff_t i = 0; i < M; ++i)
        for (std::ptrdiff_t j = 0; j < N; ++j) {
            T sum = 0;
            for (std::ptrdiff_t k = 0; k < K; ++k)
                sum += static_cast<T>(trans_a ? A[k * M + i] : A[i * K + k]) * (trans_b ? B[j * K + k] : B[k * N + j]);
            C[i * row_stride(ep, N) + j] = sum;
        }
    apply_epilogue(C, M, N, ep);
}
}  // namespace

template <class T>
void gemm_ref(T* C, const T* A, const T* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a,
              bool trans_b, const Epilogue<T>& ep) {
    triple_loop(C, A, B, M, N, K, trans_a, trans_b, ep);
}
void gemm_ref(double* C, const float* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
              bool trans_a, bool trans_b, const Epilogue<double>& ep) {
    triple_loop(C, A, B, M, N, K, trans_a, trans_b, ep);
}
template <class T>
void gemm_ref(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
              bool trans_a, bool trans_b) {
    Epilogue<T> ep;
    ep.bias = bias;
    triple_loop(C, A, B, M, N, K, trans_a, trans_b, ep);
}

#define BPFAST_INSTANTIATE(T)                                                                                     \
    template void gemm<T>(T*, const T*, const T*, const T*, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, bool, \
                          bool);                                                                                  \
    template void gemm_ref<T>(T*, const T*, const T*, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t, bool, bool, \
                              const Epilogue<T>&);                                                                \
    template void gemm_ref<T>(T*, const T*, const T*, const T*, std::ptrdiff_t, std::ptrdiff_t, std::ptrdiff_t,   \
                              bool, bool);
BPFAST_INSTANTIATE(float)
BPFAST_INSTANTIATE(double)
#undef BPFAST_INSTANTIATE

}  // namespace bpfast
