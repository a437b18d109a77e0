// Bindings that describe the build and the CPU: info(), the thread count, the FMA rate the
// benchmarks divide by (_peak_gflops), and the _set_cpu_path test hook.
#include <pybind11/stl.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bpfast/cpu.hpp"
#include "bpfast/threads.hpp"
#include "build_info.hpp"
#include "register.hpp"

namespace bpfast::bindings {
namespace {

namespace py = pybind11;

py::dict info() {
    const CpuFeatures f = cpu_features();
    py::dict features;
    features["sse2"] = f.sse2;
    features["avx"] = f.avx;
    features["avx2"] = f.avx2;
    features["fma"] = f.fma;
    features["avx512f"] = f.avx512f;
    features["avx512vl"] = f.avx512vl;
    features["avx512bw"] = f.avx512bw;
    features["avx512dq"] = f.avx512dq;
    features["prefetchw"] = f.prefetchw;

    py::dict flags;
    flags["common"] = BPFAST_FLAGS_COMMON;
    flags["elementwise_<isa>"] = "(as gemm_<isa>)";
    flags["other kernels, runtime, bindings"] = "(common only)";
    flags["gemm_generic"] = BPFAST_FLAGS_GEMM_GENERIC;
    flags["gemm_avx2"] = BPFAST_FLAGS_GEMM_AVX2;
    flags["gemm_avx512"] = BPFAST_FLAGS_GEMM_AVX512;

    const PathChoice choice = active_choice();
    py::dict d;
    d["compiler"] = BPFAST_COMPILER;
    d["build_type"] = BPFAST_BUILD_TYPE;
    d["build_flags"] = flags;
    d["cpu_features"] = features;
    d["kernel_paths_compiled"] = compiled_paths();
    d["kernel_path"] = choice.kernels->path;
    d["kernel_path_reason"] = choice.reason;
    d["gemm_kernels"] = choice.kernels->blocking;
    d["gemm"] = gemm_backend();  // "bpfast", or "blas" (the BPFAST_GEMM=scipy hatch)
    d["gemm_zero_skipping"] = gemm_skip_zeros_enabled() ? "on" : "off";  // BPFAST_SKIP_ZEROS
    const int running = num_threads(), requested = requested_num_threads();
    d["num_threads"] = running;
    std::string note = num_threads_env_problem();
    if (running < requested)
        note += (note.empty() ? "" : "; ") + std::to_string(requested) + " threads were set, but the system started only " +
                std::to_string(running - 1) + " workers: the kernels run on " + std::to_string(running);
    if (!note.empty()) d["num_threads_note"] = note;
    return d;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// The active path's FMA rate on num_threads() threads, in GFLOP/s: independent FMAs through the
// microkernel's vectors (KernelTable::fma_probe_*) for about `seconds`, in 8 chunks per thread so
// that a thread slowed by the machine does not leave the other idle.
double peak_gflops(const std::string& dtype, double seconds) {
    if (dtype != "float32" && dtype != "float64")
        throw py::value_error("_peak_gflops: dtype must be 'float32' or 'float64', not '" + dtype + "'");
    if (!(seconds > 0 && seconds <= 60))
        throw py::value_error("_peak_gflops: seconds must be in (0, 60], got " + std::to_string(seconds));
    const KernelTable& kernels = active_kernels();
    const auto probe = dtype == "float32" ? kernels.fma_probe_f32 : kernels.fma_probe_f64;
    py::gil_scoped_release release;
    double sink = 0;
    std::int64_t steps = 1 << 12;  // calibrated on this thread: at least 2 ms
    double elapsed = 0;
    for (;;) {
        const auto t0 = std::chrono::steady_clock::now();
        probe(steps, &sink);
        elapsed = seconds_since(t0);
        if (elapsed >= 2e-3 || steps >= (std::int64_t(1) << 40)) break;
        steps *= 4;
    }
    const int threads = num_threads();
    const std::ptrdiff_t chunks = 8 * std::ptrdiff_t(threads);
    const double steps_per_second = double(steps) / (elapsed > 0 ? elapsed : 1e-9);
    const auto chunk_steps =
        static_cast<std::int64_t>(std::fmax(1.0, seconds * steps_per_second * threads / double(chunks)));
    std::vector<double> sinks(static_cast<std::size_t>(chunks));
    std::atomic<std::int64_t> flops{0};
    const auto t0 = std::chrono::steady_clock::now();
    parallel_for(chunks, [&](std::ptrdiff_t c) { flops += probe(chunk_steps, &sinks[static_cast<std::size_t>(c)]); });
    return double(flops.load()) / seconds_since(t0) / 1e9;
}

}  // namespace

void register_info(py::module_& m) {
    active_kernels();  // choose the path at import (probe or BPFAST_CPU)
    m.def("info", &info, "Compiler, build flags per translation unit, CPU features, kernel path and why.");
    m.def("get_num_threads", &num_threads,
          "Threads the kernels use (the calling thread included): as set, or fewer once the system refused "
          "to start one.");
    m.def("_num_threads_env_problem", &num_threads_env_problem,
          "Why BPFAST_NUM_THREADS was ignored, or '' (unset, or used).");
    m.def(
        "set_num_threads",
        [](long long n) {
            if (n < 1) throw py::value_error("set_num_threads: n must be at least 1, got " + std::to_string(n));
            if (n > kMaxThreads)
                throw py::value_error("set_num_threads: n must be at most " + std::to_string(kMaxThreads) + ", got " +
                                      std::to_string(n));
            set_num_threads(static_cast<int>(n));
        },
        py::arg("n"), "Use n threads (1 <= n <= MAX_THREADS) for the kernels from the next call on.");
    m.attr("MAX_THREADS") = kMaxThreads;
    m.def("_peak_gflops", &peak_gflops, py::arg("dtype"), py::arg("seconds") = 0.2,
          "Benchmark hook: the FMA rate of the active kernel path on get_num_threads() threads, in GFLOP/s "
          "('float32' or 'float64'; runs about `seconds`).");
    m.def(
        "_pool_selftest",
        [](std::ptrdiff_t n_chunks, int repeats, bool nested) {
            // Test hook: every chunk of every region must run exactly once. Nested: each chunk also
            // runs a region of n_chunks inside, which must run inline on the chunk's thread; and
            // where the outer region is one (2+ chunks, 2+ threads), region_threads() is 1 inside.
            if (n_chunks < 0 || n_chunks > (1 << 24) || repeats < 0 || (nested && n_chunks > 4096))
                throw py::value_error(
                    "_pool_selftest: need 0 <= n_chunks <= 2**24 (4096 nested) and repeats >= 0");
            py::gil_scoped_release release;
            const std::size_t n = static_cast<std::size_t>(n_chunks);
            std::vector<std::atomic<int>> hits(nested ? n * n : n);
            std::atomic<bool> inline_inside{true};
            for (int r = 0; r < repeats; ++r) {
                parallel_for(n_chunks, [&](std::ptrdiff_t c) {
                    if (!nested) {
                        hits[static_cast<std::size_t>(c)]++;
                        return;
                    }
                    const bool pooled = n_chunks > 1 && num_threads() > 1;
                    if (pooled && region_threads() != 1) inline_inside = false;
                    const std::thread::id outer = std::this_thread::get_id();
                    parallel_for(n_chunks, [&](std::ptrdiff_t i) {
                        if (std::this_thread::get_id() != outer) inline_inside = false;
                        hits[static_cast<std::size_t>(c) * n + static_cast<std::size_t>(i)]++;
                    });
                });
            }
            for (auto& h : hits) {
                if (h.load() != repeats) return false;
            }
            return inline_inside.load();
        },
        py::arg("n_chunks"), py::arg("repeats"), py::arg("nested") = false,
        "Test hook: run parallel_for regions (nested: a region inside every chunk) and check the chunk "
        "counts.");
    m.def(
        "_set_cpu_path",
        [](const std::optional<std::string>& path) {
            return select_path(path.value_or(""), "_set_cpu_path").kernels->path;
        },
        py::arg("path"),
        "Test hook: switch the kernel path ('generic', 'avx2', 'avx512'; None re-probes); returns the path "
        "in use (an unsupported request falls back, see info()['kernel_path_reason']).");
}

}  // namespace bpfast::bindings
