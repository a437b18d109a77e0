// The register_<area>(m) functions that module.cpp calls.
#pragma once

#include <pybind11/pybind11.h>

namespace bpfast::bindings {

void register_affine(pybind11::module_& m);
void register_elementwise(pybind11::module_& m);
void register_info(pybind11::module_& m);
void register_nets(pybind11::module_& m);

}  // namespace bpfast::bindings
