// Bindings that describe the build and the CPU: info() and the _set_cpu_path test hook.
#include <pybind11/stl.h>

#include <string>

#include "bpfast/cpu.hpp"
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

    py::dict flags;
    flags["common"] = BPFAST_FLAGS_COMMON;
    flags["ops, runtime, bindings"] = "(common only)";
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
    d["num_threads"] = 1;
    return d;
}

}  // namespace

void register_info(py::module_& m) {
    active_kernels();  // choose the path at import (probe or BPFAST_CPU)
    m.def("info", &info, "Compiler, build flags per translation unit, CPU features, kernel path and why.");
    m.def(
        "_set_cpu_path",
        [](const py::object& path) {
            return select_path(path.is_none() ? "" : path.cast<std::string>(), "_set_cpu_path").kernels->path;
        },
        py::arg("path"),
        "Test hook: switch the kernel path ('generic', 'avx2', 'avx512'; None re-probes); returns the path "
        "in use (an unsupported request falls back, see info()['kernel_path_reason']).");
}

}  // namespace bpfast::bindings
