// bpfast._core: the compiled core's Python module. Each area registers its own functions.
#include <pybind11/pybind11.h>

#include "register.hpp"

PYBIND11_MODULE(_core, m) {
    m.doc() = "bpfast's compiled kernels (private; use bpfast.backends.cpp or bpfast.layers)";
    bpfast::bindings::register_affine(m);
    bpfast::bindings::register_elementwise(m);
    bpfast::bindings::register_nets(m);
    bpfast::bindings::register_info(m);
}
