// Bindings of the whole-network kernels: TwoLayerNet's one-call gradient and training step.
//
// Take the arrays; check dtypes (TypeError), shapes (ValueError naming both) and labels;
// copy inputs that are not aligned C-contiguous arrays; allocate fresh outputs (the
// gradients handed out are never reused); release the GIL; call the kernel.
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "arrays.hpp"
#include "bpfast/cache_hint.hpp"
#include "bpfast/nets.hpp"
#include "register.hpp"

namespace bpfast::bindings {
namespace {

using ssize = py::ssize_t;

// The parameters as (D,H), (H,), (H,C), (C,), checked against x (N,D) and t.
struct Shapes {
    ssize N, D, H, C;
};

Shapes check_shapes(const char* fn, const py::array& x, const py::array& t, const py::array& W1, const py::array& b1,
                    const py::array& W2, const py::array& b2) {
    expect_ndim(fn, {"x", x}, 2);
    expect_ndim(fn, {"W1", W1}, 2);
    expect_ndim(fn, {"W2", W2}, 2);
    expect_ndim(fn, {"b1", b1}, 1);
    expect_ndim(fn, {"b2", b2}, 1);
    const Shapes s{x.shape(0), x.shape(1), W1.shape(1), W2.shape(1)};
    if (W1.shape(0) != s.D) shape_error(fn, {"x", x}, {"W1", W1});
    if (b1.shape(0) != s.H) shape_error(fn, {"W1", W1}, {"b1", b1});
    if (W2.shape(0) != s.H) shape_error(fn, {"W1", W1}, {"W2", W2});
    if (b2.shape(0) != s.C) shape_error(fn, {"W2", W2}, {"b2", b2});
    if (s.N == 0) throw py::value_error(std::string(fn) + ": the loss of an empty batch is undefined (x has shape " + shape_of(x) + ")");
    if (s.C == 0) throw py::value_error(std::string(fn) + ": the loss needs at least one class (W2 has shape " + shape_of(W2) + ")");
    if (t.ndim() == 2) {
        if (t.shape(0) != s.N || t.shape(1) != s.C)
            throw py::value_error(std::string(fn) + ": one-hot t has shape " + shape_of(t) + " but the net gives (" +
                                  std::to_string(s.N) + ", " + std::to_string(s.C) + ")");
    } else if (t.ndim() != 1 || t.shape(0) != s.N) {
        shape_error(fn, {"x", x}, {"t", t});
    }
    return s;
}

// The step for parameters of type T and data of type TX (T, or float with T = double).
template <class T, class TX>
py::tuple run_step(const char* fn, const Shapes& s, const py::array& x, const py::array& t, py::array& W1,
                   py::array& b1, py::array& W2, py::array& b2, const double* lr) {
    // Outputs first: an impossible size fails before any input is copied.
    py::array_t<T> h({s.N, s.H}), y({s.N, s.C}), dW1({s.D, s.H}), db1(s.H), dW2({s.H, s.C}), db2(s.C);
    py::array_t<bool> mask({s.N, s.H});
    std::unique_ptr<T[]> dy(new T[static_cast<std::size_t>(s.N * s.C)]);
    std::unique_ptr<T[]> dh(new T[static_cast<std::size_t>(s.N * s.H)]);
    const bool onehot = t.ndim() == 2;
    py::array_t<std::int64_t> labels = onehot ? py::array_t<std::int64_t>(0) : checked_labels(fn, t, s.C);
    py::array_t<T> onehot_t = onehot ? contiguous<T>(t) : py::array_t<T>(0);
    auto xc = contiguous<TX>(x);
    auto W1c = contiguous<T>(W1), b1c = contiguous<T>(b1), W2c = contiguous<T>(W2), b2c = contiguous<T>(b2);
    T* params[4] = {nullptr, nullptr, nullptr, nullptr};
    if (lr) {
        params[0] = writable_param<T>(fn, "W1", W1);
        params[1] = writable_param<T>(fn, "b1", b1);
        params[2] = writable_param<T>(fn, "W2", W2);
        params[3] = writable_param<T>(fn, "b2", b2);
    }
    const TwoLayerOutputs<T> out{h.mutable_data(),   mask.mutable_data(), y.mutable_data(),
                                 dW1.mutable_data(), db1.mutable_data(),  dW2.mutable_data(),
                                 db2.mutable_data(), dy.get(),            dh.get()};
    const std::int64_t* pl = onehot ? nullptr : labels.data();
    const T* pt = onehot ? onehot_t.data() : nullptr;
    const TX* px = xc.data();
    const T *pW1 = W1c.data(), *pb1 = b1c.data(), *pW2 = W2c.data(), *pb2 = b2c.data();
    const T rate = lr ? static_cast<T>(*lr) : T(0);
    // Without lr, the caller usually writes the weights next (its own SGD step): their lines are
    // taken for writing after the gradient. With lr, the update here is split across the pool.
    const ssize W1_bytes = lr ? 0 : bytes_updatable_in_place(W1, W1c);
    const ssize W2_bytes = lr ? 0 : bytes_updatable_in_place(W2, W2c);
    // W1's step runs as dW1 is stored, unless x is (part of) W1: dW1 = x^T·dh reads x until the
    // product is done. W2's stays a pass of its own: dh = dy·W2^T may read W2 beside dW2.
    T* W1_fused = params[0] && !overlaps(xc, W1) ? params[0] : nullptr;
    double loss = 0;
    without_gil([&] {
        loss = two_layer_gradient<T, TX>(out, px, pl, pt, pW1, pb1, pW2, pb2, s.N, s.D, s.H, s.C, W1_fused, rate);
        if (params[0]) {
            if (!W1_fused) sgd_update<T>(params[0], out.dW1, rate, s.D * s.H);
            sgd_update<T>(params[1], out.db1, rate, s.H);
            sgd_update<T>(params[2], out.dW2, rate, s.H * s.C);
            sgd_update<T>(params[3], out.db2, rate, s.C);
        } else {
            prefetch_for_write(pW1, W1_bytes);
            prefetch_for_write(pW2, W2_bytes);
        }
    });
    return py::make_tuple(py::dtype::of<T>().attr("type")(loss), h, mask, y, dW1, db1, dW2, db2);
}

// Runs the step; with lr set, also W -= lr * dW for every parameter. Returns
// (loss, h, mask, y, dW1, db1, dW2, db2). x may be float32 with float64 parameters.
py::tuple two_layer_step(const char* fn, const py::array& x, const py::array& t, py::array W1, py::array b1,
                         py::array W2, py::array b2, const double* lr) {
    const Shapes s = check_shapes(fn, x, t, W1, b1, W2, b2);
    std::vector<Arg> params{{"W1", W1}, {"b1", b1}, {"W2", W2}, {"b2", b2}};
    if (t.ndim() == 2) params.push_back({"t", t});
    const bool mixed = py::isinstance<py::array_t<float>>(x) && py::isinstance<py::array_t<double>>(W1);
    if (!mixed) params.push_back({"x", x});
    return with_float_dtype(fn, params, [&](auto tag) -> py::tuple {
        using T = decltype(tag);
        if constexpr (std::is_same_v<T, double>) {
            if (mixed) return run_step<double, float>(fn, s, x, t, W1, b1, W2, b2, lr);
        }
        return run_step<T, T>(fn, s, x, t, W1, b1, W2, b2, lr);
    });
}

}  // namespace

void register_nets(py::module_& m) {
    m.def(
        "two_layer_gradient",
        [](const py::array& x, const py::array& t, py::array W1, py::array b1, py::array W2, py::array b2) {
            return two_layer_step("two_layer_gradient", x, t, W1, b1, W2, b2, nullptr);
        },
        py::arg("x"), py::arg("t"), py::arg("W1"), py::arg("b1"), py::arg("W2"), py::arg("b2"),
        "TwoLayerNet forward, loss and backward in one call. x is (N,D), t labels (N,) or one-hot (N,C);\n"
        "returns (loss, h (N,H), mask (N,H), y (N,C), dW1, db1, dW2, db2).");
    m.def(
        "two_layer_train_step",
        [](const py::array& x, const py::array& t, py::array W1, py::array b1, py::array W2, py::array b2,
           double lr) { return two_layer_step("two_layer_train_step", x, t, W1, b1, W2, b2, &lr); },
        py::arg("x"), py::arg("t"), py::arg("W1"), py::arg("b1"), py::arg("W2"), py::arg("b2"), py::arg("lr"),
        "two_layer_gradient, then W -= lr * dW for each parameter, in place; returns the same tuple.");
}

}  // namespace bpfast::bindings
