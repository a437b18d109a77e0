// Shared helpers of the bindings: dtype and shape checks with clear messages, and "get an
// aligned, C-contiguous array of dtype T" (copying only when the input is not one already).
// Only cpp/bindings/ includes pybind11.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "bpfast/threads.hpp"

namespace bpfast::bindings {

namespace py = pybind11;

// NumPy's NPY_ARRAY_ALIGNED: the data pointer and strides suit the element size.
constexpr int npy_aligned = 0x0100;

// An argument and its name, for messages.
struct Arg {
    const char* name;
    const py::array& array;
};

inline std::string shape_of(const py::array& a) {
    std::string s = "(";
    for (py::ssize_t d = 0; d < a.ndim(); ++d) s += (d ? ", " : "") + std::to_string(a.shape(d));
    return s + (a.ndim() == 1 ? ",)" : ")");
}

inline std::string dtype_of(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

[[noreturn]] inline void shape_error(const char* fn, const Arg& a, const Arg& b) {
    throw py::value_error(std::string(fn) + ": " + a.name + " has shape " + shape_of(a.array) + " but " + b.name +
                          " has shape " + shape_of(b.array));
}

inline void expect_ndim(const char* fn, const Arg& a, py::ssize_t ndim) {
    if (a.array.ndim() != ndim)
        throw py::value_error(std::string(fn) + ": " + a.name + " must be " + std::to_string(ndim) +
                              "-D, got shape " + shape_of(a.array));
}

inline void expect_same_shape(const char* fn, const Arg& a, const Arg& b) {
    const py::ssize_t nd = a.array.ndim();
    bool same = nd == b.array.ndim();
    for (py::ssize_t d = 0; same && d < nd; ++d) same = a.array.shape(d) == b.array.shape(d);
    if (!same) shape_error(fn, a, b);
}

inline void expect_bool(const char* fn, const Arg& a) {
    if (a.array.dtype().num() != py::detail::npy_api::NPY_BOOL_)
        throw py::type_error(std::string(fn) + ": " + a.name + " has dtype " + dtype_of(a.array) + "; expected bool");
}

inline bool is_c_aligned(const py::array& a) {
    return (a.flags() & py::array::c_style) && (a.flags() & npy_aligned);
}

inline std::vector<py::ssize_t> shape_vector(const py::array& a) {
    return std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim());
}

// a itself when it is a C-contiguous, aligned array of dtype T; else a fresh copy that is
// (NumPy allocates aligned memory; pybind11's c_style cast alone does not promise alignment).
template <class T>
py::array_t<T> contiguous(const py::array& a) {
    if (py::isinstance<py::array_t<T>>(a) && is_c_aligned(a)) return py::reinterpret_borrow<py::array_t<T>>(a);
    return py::module_::import("numpy").attr("array")(a, py::arg("dtype") = py::dtype::of<T>(),
                                                      py::arg("order") = "C", py::arg("copy") = true);
}

// A fresh (rows, cols) C-contiguous matrix for a product's output. From kLineAlignedBytes on its
// data starts on a 64-byte line (NumPy's own allocation starts 16 bytes past one, or 48): the
// threads that split a product's columns then meet at a line boundary instead of both writing one
// line of every row. It is then a view of a buffer 64 bytes longer (its base), which it keeps
// alive; its values are as fresh as any. Measured, two threads, the two builds alternating in one
// process, time ratios of medians: dout·W1^T (100,50)·(784,50)^T float32 0.93-0.94, float64
// 0.93-0.98; affine_backward of the book's first layer (MNIST x, float64 W1) 0.97-1.00; one
// thread level.
constexpr py::ssize_t kLineAlignedBytes = 16 * 1024;

template <class T>
py::array_t<T> fresh_matrix(py::ssize_t rows, py::ssize_t cols) {
    constexpr py::ssize_t line = 64, size = sizeof(T);
    py::ssize_t row_bytes = 0, bytes = 0;  // (a size past py::ssize_t goes to NumPy, which refuses it)
    if (__builtin_mul_overflow(cols, size, &row_bytes) || __builtin_mul_overflow(rows, row_bytes, &bytes) ||
        bytes < kLineAlignedBytes || bytes > PY_SSIZE_T_MAX / 2)
        return py::array_t<T>({rows, cols});
    py::array_t<T> buffer(rows * cols + line / size);
    const auto address = reinterpret_cast<std::uintptr_t>(buffer.data());
    const py::ssize_t skip = py::ssize_t((line - address % line) % line) / size;
    return py::array_t<T>({rows, cols}, {row_bytes, size}, buffer.mutable_data() + skip, buffer);
}

// An array updated in place: dtype T, aligned, C-contiguous and writable.
template <class T>
T* writable_param(const char* fn, const char* name, py::array& p) {
    if (!py::isinstance<py::array_t<T>>(p) || !is_c_aligned(p) || !p.writeable())
        throw py::value_error(std::string(fn) + ": " + name + " must be a writable, aligned, C-contiguous " +
                              py::str(py::dtype::of<T>()).cast<std::string>() + " array to be updated in place");
    return static_cast<T*>(p.mutable_data());
}

// Whether the bytes of two arrays' extents (first to last element) overlap.
inline bool overlaps(const py::array& a, const py::array& b) {
    if (a.size() == 0 || b.size() == 0) return false;
    const auto extent = [](const py::array& x) {
        auto lo = reinterpret_cast<std::uintptr_t>(x.data()), hi = lo + std::uintptr_t(x.itemsize());
        for (py::ssize_t d = 0; d < x.ndim(); ++d) {
            const py::ssize_t step = x.strides(d) * (x.shape(d) - 1);
            (step < 0 ? lo : hi) += std::uintptr_t(step);  // unsigned: a negative step moves lo down
        }
        return std::pair<std::uintptr_t, std::uintptr_t>(lo, hi);
    };
    const auto [a_lo, a_hi] = extent(a);
    const auto [b_lo, b_hi] = extent(b);
    return a_lo < b_hi && b_lo < a_hi;
}

// What prefetch_for_write is told about a parameter the caller may update in place next: its
// bytes when the kernel used the caller's own writable array (`used` is contiguous(param)) on
// more than one thread, else 0 (a copy, or a read-only array, is not what the caller writes; on
// one thread no other core holds its lines, and the hint measured 3 us of 270 for nothing).
template <class T>
py::ssize_t bytes_updatable_in_place(const py::array& param, const py::array_t<T>& used) {
    const bool shared = num_threads() > 1;
    return shared && used.ptr() == param.ptr() && param.writeable() ? param.nbytes() : 0;
}

// Labels t (N,) of any integer dtype as int64, each checked to lie in [0, C) (ValueError naming
// the first that does not), before any kernel indexes with them.
inline py::array_t<std::int64_t> checked_labels(const char* fn, const py::array& t, py::ssize_t C) {
    const char kind = t.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(fn) + ": labels t have dtype " + dtype_of(t) + "; expected an integer dtype");
    auto labels = contiguous<std::int64_t>(t);
    const std::int64_t* p = labels.data();
    for (py::ssize_t i = 0; i < labels.size(); ++i)
        if (p[i] < 0 || p[i] >= C) {
            // a uint64 label of 2^63 or more wrapped to a negative int64 above: said as given
            const std::string label =
                kind == 'u' ? std::to_string(static_cast<std::uint64_t>(p[i])) : std::to_string(p[i]);
            throw py::value_error(std::string(fn) + ": label " + label + " at index " + std::to_string(i) +
                                  " is outside [0, " + std::to_string(C) + ")");
        }
    return labels;
}

// Check that every argument is float32 or float64 (TypeError naming the dtype) and that all share
// one dtype (TypeError naming both), then call f(T{}) with T = float or double.
template <class F>
auto with_float_dtype(const char* fn, const std::vector<Arg>& args, F&& f) {
    const Arg& first = args.front();
    const bool first_f32 = py::isinstance<py::array_t<float>>(first.array);
    for (const Arg& a : args) {
        const bool f32 = py::isinstance<py::array_t<float>>(a.array);
        if (!f32 && !py::isinstance<py::array_t<double>>(a.array))
            throw py::type_error(std::string(fn) + ": " + a.name + " has dtype " + dtype_of(a.array) +
                                 "; expected float32 or float64");
        if (f32 != first_f32)
            throw py::type_error(std::string(fn) + ": " + first.name + " has dtype " + dtype_of(first.array) +
                                 " but " + a.name + " has dtype " + dtype_of(a.array) + "; they must match");
    }
    if (first_f32) return f(float{});
    return f(double{});
}

// Run a kernel with the GIL released; f must touch no Python object.
template <class F>
void without_gil(F&& f) {
    py::gil_scoped_release release;
    f();
}

}  // namespace bpfast::bindings
