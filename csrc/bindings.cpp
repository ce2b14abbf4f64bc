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
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>

#include "triplet.h"
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
// Checks a numpy buffer's kind ('f', 'i', 'u', 'b'), item size, rank and C-contiguity.
void check_array(const py::array& a, const char* name, const char* kinds, ssize_t itemsize, ssize_t ndim) {
    if (std::string(kinds).find(a.dtype().kind()) == std::string::npos || a.dtype().itemsize() != itemsize)
        throw std::invalid_argument(std::string(name) + ": unexpected dtype");
    if (a.ndim() != ndim) throw std::invalid_argument(std::string(name) + ": expected " + std::to_string(ndim) + "-D");
    if (!(a.flags() & py::array::c_style)) throw std::invalid_argument(std::string(name) + ": must be C-contiguous");
}

// A row set from optional numpy buffers: CSR (indptr int64 [rows + 1], indices int64) or a
// (rows x cols) uint8/bool mask.
ramen::ColumnSets column_sets(const std::optional<py::array>& indptr, const std::optional<py::array>& indices,
                              const std::optional<py::array>& mask, int64_t rows, int64_t cols, const char* name) {
    ramen::ColumnSets sets;
    if (mask) {
        if (indptr || indices) throw std::invalid_argument(std::string(name) + ": give a mask or a CSR, not both");
        check_array(*mask, name, "ub", 1, 2);
        if (mask->shape(0) != rows || mask->shape(1) != cols)
            throw std::invalid_argument(std::string(name) + ": mask shape must be (rows, cols) of the scores");
        sets.mask = static_cast<const uint8_t*>(mask->data());
    } else if (indptr || indices) {
        if (!indptr || !indices) throw std::invalid_argument(std::string(name) + ": CSR needs indptr and indices");
        check_array(*indptr, name, "i", 8, 1);
        check_array(*indices, name, "i", 8, 1);
        if (indptr->shape(0) != rows + 1) throw std::invalid_argument(std::string(name) + ": indptr must have rows + 1 entries");
        sets.indptr = static_cast<const int64_t*>(indptr->data());
        sets.indices = static_cast<const int64_t*>(indices->data());
        sets.nnz = indices->shape(0);
    }
    return sets;
}

template <typename T>
void triplet_mine_cpu_typed(const py::array& scores, const ramen::ColumnSets& pos, const ramen::ColumnSets& exc,
                            const ramen::TripletOptions& options, py::array& loss, py::array& grad, py::array& count,
                            int num_threads) {
    const int64_t rows = scores.shape(0), cols = scores.shape(1);
    const T* s = static_cast<const T*>(scores.data());
    T* l = static_cast<T*>(loss.mutable_data());
    T* g = static_cast<T*>(grad.mutable_data());
    int64_t* c = static_cast<int64_t*>(count.mutable_data());
    py::gil_scoped_release release;
    ramen::triplet_mine_cpu<T>(s, rows, cols, pos, exc, options, l, g, c, num_threads);
}

// The CPU entry: scores float32/float64 (rows x cols); writes loss [rows] and grad (rows x cols)
// of the same dtype and count [rows] int64 in place.
void triplet_mine_cpu_binding(const py::array& scores, const std::optional<py::array>& pos_indptr,
                              const std::optional<py::array>& pos_indices, const std::optional<py::array>& pos_mask,
                              const std::optional<py::array>& exc_indptr, const std::optional<py::array>& exc_indices,
                              const std::optional<py::array>& exc_mask, double margin, int64_t num_negatives,
                              double temperature, py::array loss, py::array grad, py::array count, int num_threads) {
    const ssize_t itemsize = scores.dtype().itemsize();
    if (itemsize != 4 && itemsize != 8) throw std::invalid_argument("scores: must be float32 or float64");
    check_array(scores, "scores", "f", itemsize, 2);
    const int64_t rows = scores.shape(0), cols = scores.shape(1);
    check_array(loss, "loss", "f", itemsize, 1);
    check_array(grad, "grad", "f", itemsize, 2);
    check_array(count, "count", "i", 8, 1);
    if (loss.shape(0) != rows || count.shape(0) != rows || grad.shape(0) != rows || grad.shape(1) != cols)
        throw std::invalid_argument("loss, grad and count must have the shapes (rows,), (rows, cols), (rows,)");
    if (!loss.writeable() || !grad.writeable() || !count.writeable())
        throw std::invalid_argument("loss, grad and count must be writeable");
    const ramen::ColumnSets pos = column_sets(pos_indptr, pos_indices, pos_mask, rows, cols, "positives");
    const ramen::ColumnSets exc = column_sets(exc_indptr, exc_indices, exc_mask, rows, cols, "exclude");
    const ramen::TripletOptions options{margin, num_negatives, temperature};
    if (itemsize == 4)
        triplet_mine_cpu_typed<float>(scores, pos, exc, options, loss, grad, count, num_threads);
    else
        triplet_mine_cpu_typed<double>(scores, pos, exc, options, loss, grad, count, num_threads);
}

#ifdef RAMEN_WITH_CUDA
ramen::ColumnSets device_column_sets(std::uintptr_t indptr, std::uintptr_t indices, int64_t nnz, std::uintptr_t mask) {
    ramen::ColumnSets sets;
    sets.indptr = reinterpret_cast<const int64_t*>(indptr);
    sets.indices = reinterpret_cast<const int64_t*>(indices);
    sets.nnz = nnz;
    sets.mask = reinterpret_cast<const uint8_t*>(mask);
    return sets;
}

// The CUDA entry: every buffer is a device pointer (0 = absent) on `device`, queued on `stream`.
void triplet_mine_cuda_binding(int dtype, std::uintptr_t scores, int64_t rows, int64_t cols,
                               std::uintptr_t pos_indptr, std::uintptr_t pos_indices, int64_t pos_nnz,
                               std::uintptr_t pos_mask, std::uintptr_t exc_indptr, std::uintptr_t exc_indices,
                               int64_t exc_nnz, std::uintptr_t exc_mask, double margin, int64_t num_negatives,
                               double temperature, std::uintptr_t loss, std::uintptr_t grad, std::uintptr_t count,
                               int device, std::uintptr_t stream) {
    if (dtype < 0 || dtype > 2) throw std::invalid_argument("dtype: 0 (float32), 1 (float16) or 2 (bfloat16)");
    const ramen::ColumnSets pos = device_column_sets(pos_indptr, pos_indices, pos_nnz, pos_mask);
    const ramen::ColumnSets exc = device_column_sets(exc_indptr, exc_indices, exc_nnz, exc_mask);
    const ramen::TripletOptions options{margin, num_negatives, temperature};
    py::gil_scoped_release release;
    ramen::triplet_mine_cuda(static_cast<ramen::CudaDType>(dtype), reinterpret_cast<const void*>(scores), rows, cols,
                             pos, exc, options, reinterpret_cast<float*>(loss), reinterpret_cast<void*>(grad),
                             reinterpret_cast<int64_t*>(count), device, stream);
}
#endif
// ---- helpers: io ----

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "ramen's C++/CUDA kernels (random walks, pruning, triplet scoring, XC file parsing)";
    m.def("has_cuda", &has_cuda, "Whether this build contains the CUDA kernels.");
    m.def("hardware_threads", &ramen::hardware_threads, "Threads used when num_threads is None.");
    m.attr("__version__") = "0.1.0";

    // ---- bindings: graph ----
    // ---- bindings: triplet ----
    m.def("triplet_mine_cpu", &triplet_mine_cpu_binding,
          "Fused hard-negative triplet scoring of a score matrix on the CPU (see ramen.ops.triplet_loss).",
          py::kw_only(), py::arg("scores"), py::arg("pos_indptr") = py::none(), py::arg("pos_indices") = py::none(),
          py::arg("pos_mask") = py::none(), py::arg("exc_indptr") = py::none(), py::arg("exc_indices") = py::none(),
          py::arg("exc_mask") = py::none(), py::arg("margin"), py::arg("num_negatives"), py::arg("temperature"),
          py::arg("loss"), py::arg("grad"), py::arg("count"), py::arg("num_threads") = 0);
#ifdef RAMEN_WITH_CUDA
    m.def("triplet_mine_cuda", &triplet_mine_cuda_binding,
          "Fused hard-negative triplet scoring on CUDA: device pointers and a stream as integers, no host sync.",
          py::kw_only(), py::arg("dtype"), py::arg("scores"), py::arg("rows"), py::arg("cols"),
          py::arg("pos_indptr") = 0, py::arg("pos_indices") = 0, py::arg("pos_nnz") = 0, py::arg("pos_mask") = 0,
          py::arg("exc_indptr") = 0, py::arg("exc_indices") = 0, py::arg("exc_nnz") = 0, py::arg("exc_mask") = 0,
          py::arg("margin"), py::arg("num_negatives"), py::arg("temperature"), py::arg("loss"), py::arg("grad"),
          py::arg("count"), py::arg("device"), py::arg("stream"));
    m.def("triplet_cuda_max_cols", &ramen::triplet_cuda_max_cols, "Largest M the CUDA triplet kernel takes on a device.",
          py::kw_only(), py::arg("device"));
#endif
    // ---- bindings: io ----
}
