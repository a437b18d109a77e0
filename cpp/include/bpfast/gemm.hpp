// GEMM for bpfast: C = op(A)·op(B), then an epilogue (bias add, ReLU with its mask), row-major,
// float and double, plus float A with double B and C (the book's float32 data times float64
// weights: converted while packing, never by a separate copy).
//
// Contract:
// - Row-major, dense: op(A) is (M,K) and stored as A (M,K), or as A (K,M) when trans_a;
//   op(B) is (K,N) and stored as B (K,N), or as B (N,K) when trans_b; C is (M,N).
//   Transposes are read in place by the packing routines, never materialised.
// - C is overwritten (beta = 0): C = op(A)·op(B); then, in the same pass over C, the epilogue:
//   C += bias (a row (N,) added to every row) when ep.bias is set; when ep.relu, mask = C <= 0
//   (NaN is not masked) is written to ep.mask (M,N) if that is not null, and C = mask ? 0 : C;
//   then C = 0 where ep.zero_mask (M,N) is set, when that is not null (the ReLU backward);
//   then, when ep.update (M,N) is not null, update -= update_rate * C (an SGD step).
//   K = 0 gives C = epilogue(0). C and update must not alias A, B, bias, mask,
//   zero_mask or each other. C's rows (and those of the (M,N) epilogue arrays) are ep.ldc
//   apart, N when that is 0.
// - Results do not depend on the thread count (K is blocked by the shape only; threads split
//   M and N). Small problems run on the calling thread.
// - Thread safety: reentrant; may be called from any thread (a call made while another thread's
//   call is running in the pool runs on its calling thread alone).
#pragma once

#include <cstddef>
#include <cstdint>

namespace bpfast {

// What happens to the product before it is stored (the "fused epilogue").
template <class T>
struct Epilogue {
    const T* bias = nullptr;  // (N,), added to every row; null: none
    bool relu = false;        // C = max-like ReLU: C = (C <= 0) ? 0 : C, NaN kept
    bool* mask = nullptr;     // (M,N) row-major, written when relu (mask = C <= 0); may be null
    // (M,N) row-major, read: C = 0 where set, last (dx of an Affine whose input came out of a
    // ReLU: that ReLU's backward, dout[mask] = 0, in the same pass); null: none
    const bool* zero_mask = nullptr;
    // (M,N) row-major, updated after C is final: update -= update_rate * C (an SGD step on the
    // weights C is the gradient of; the product rounded to T, then the difference, as a
    // separate pass would); null: none
    T* update = nullptr;
    T update_rate = 0;
    // Where the product goes: the row stride of C and of mask, zero_mask and update, in
    // elements (>= N); 0: N, dense. A larger stride writes a block of columns of a wider array
    // (affine.cpp hands out dx in column blocks).
    std::ptrdiff_t ldc = 0;
};

// The old call form (bias only): C = op(A)·op(B) + bias.
template <class T>
using GemmFn = void (*)(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N,
                        std::ptrdiff_t K, bool trans_a, bool trans_b);

// The fast GEMM on the path chosen at import (see runtime/cpu.hpp), or SciPy's BLAS when
// selected (set_blas_gemm below).
template <class T>
void gemm(T* C, const T* A, const T* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a,
          bool trans_b, const Epilogue<T>& ep);
// Mixed precision: float A, double B and C; A is widened to double exactly while packed.
void gemm(double* C, const float* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
          bool trans_a, bool trans_b, const Epilogue<double>& ep);
// The old form: gemm(C, A, B, bias, ...) == gemm(C, A, B, ..., Epilogue{bias}).
template <class T>
void gemm(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
          bool trans_a, bool trans_b);

// The plain triple loops (double accumulation order: k ascending): the oracle in tests.
template <class T>
void gemm_ref(T* C, const T* A, const T* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K, bool trans_a,
              bool trans_b, const Epilogue<T>& ep);
void gemm_ref(double* C, const float* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
              bool trans_a, bool trans_b, const Epilogue<double>& ep);
template <class T>
void gemm_ref(T* C, const T* A, const T* B, const T* bias, std::ptrdiff_t M, std::ptrdiff_t N, std::ptrdiff_t K,
              bool trans_a, bool trans_b);

// The escape hatch: Fortran BLAS sgemm_/dgemm_ (e.g. SciPy's, from scipy.linalg.cython_blas).
// Set both pointers to route every gemm (same-dtype and mixed: A is widened first) through them,
// both null to go back to bpfast's own kernels. Epilogues are applied in a second pass.
using BlasSgemm = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                           const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
                           const float* beta, float* c, const int* ldc);
using BlasDgemm = void (*)(const char* transa, const char* transb, const int* m, const int* n, const int* k,
                           const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
                           const double* beta, double* c, const int* ldc);
void set_blas_gemm(BlasSgemm sgemm, BlasDgemm dgemm);
// "bpfast" or "blas" (the hatch).
const char* gemm_backend();

// Zero skipping (on by default; BPFAST_SKIP_ZEROS=0 turns it off at start-up): a tile of op(A)
// rows runs over the k its rows use, when op(B) is finite: the same bits, less work on sparse
// input such as MNIST's pixels (gemm_zero_skip.hpp, used_ks). Off: every k of every tile. Returns
// the previous setting.
bool set_gemm_skip_zeros(bool on);
bool gemm_skip_zeros_enabled();
// The (tile, k) pairs left out by zero skipping since the last reset (a diagnostic for tests and
// benchmarks: a tile of rows that leaves n of its kc values of k out adds kc - n).
std::int64_t gemm_skipped_ks(bool reset);

namespace detail {
// For the per-ISA translation units, compiled in a baseline one (gemm.cpp): parallel_for and
// num_threads without instantiating std::function under -mavx512f.
void gemm_parallel_for(std::ptrdiff_t n_chunks, void (*fn)(void* ctx, std::ptrdiff_t c), void* ctx);
int gemm_threads();
bool gemm_skip_zeros();
void gemm_note_skipped(std::ptrdiff_t n);
}  // namespace detail

// One translation unit per instruction set defines these (gemm/gemm_<isa>.cpp); runtime/cpu.cpp
// puts them in that path's KernelTable.
#define BPFAST_DECLARE_GEMM_ISA(isa)                                                                  \
    namespace gemm_##isa {                                                                          \
    void sgemm(float* C, const float* A, const float* B, std::ptrdiff_t M, std::ptrdiff_t N,         \
               std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<float>& ep);             \
    void dgemm(double* C, const double* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N,      \
               std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<double>& ep);            \
    void mgemm(double* C, const float* A, const double* B, std::ptrdiff_t M, std::ptrdiff_t N,       \
               std::ptrdiff_t K, bool trans_a, bool trans_b, const Epilogue<double>& ep);            \
    std::int64_t fma_probe_f32(std::int64_t steps, double* sink);                                   \
    std::int64_t fma_probe_f64(std::int64_t steps, double* sink);                                   \
    extern const char* const blocking;                                                              \
    }
BPFAST_DECLARE_GEMM_ISA(generic)
BPFAST_DECLARE_GEMM_ISA(avx2)
BPFAST_DECLARE_GEMM_ISA(avx512)
#undef BPFAST_DECLARE_GEMM_ISA

}  // namespace bpfast
