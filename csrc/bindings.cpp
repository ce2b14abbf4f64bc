// The only file that knows pybind11: exposes the plain C++ kernels of csrc/ as ramen._C.
//
// Each binding takes numpy buffers (or device pointers and a stream as integers), checks sizes,
// releases the GIL around the kernel and turns std::invalid_argument into ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "parallel.h"

namespace py = pybind11;

// ---- includes: graph ----
// ---- includes: triplet ----
// ---- includes: io ----

namespace {

bool has_cuda() {
#ifdef RAMEN_WITH_CUDA
    return true;
#else
    return false;
#endif
}

// ---- helpers: graph ----
// ---- helpers: triplet ----
// ---- helpers: io ----

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "ramen's C++/CUDA kernels (random walks, pruning, triplet scoring, XC file parsing)";
    m.def("has_cuda", &has_cuda, "Whether this build contains the CUDA kernels.");
    m.def("hardware_threads", &ramen::hardware_threads, "Threads used when num_threads is None.");
    m.attr("__version__") = "0.1.0";

    // ---- bindings: graph ----
    // ---- bindings: triplet ----
    // ---- bindings: io ----
}
