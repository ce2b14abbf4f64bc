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
#include "io.h"

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
// Hands a vector's buffer to numpy without copying; the array owns it.
template <typename T>
py::array_t<T> vector_to_numpy(std::vector<T>&& v) {
    auto* owned = new std::vector<T>(std::move(v));
    py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                          owned->data(), owner);
}

py::tuple sparse_to_python(ramen::io::SparseMatrix&& m) {
    return py::make_tuple(m.rows, m.cols, vector_to_numpy(std::move(m.indptr)),
                          vector_to_numpy(std::move(m.indices)), vector_to_numpy(std::move(m.data)));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "ramen's C++/CUDA kernels (random walks, pruning, triplet scoring, XC file parsing)";
    m.def("has_cuda", &has_cuda, "Whether this build contains the CUDA kernels.");
    m.def("hardware_threads", &ramen::hardware_threads, "Threads used when num_threads is None.");
    m.attr("__version__") = "0.1.0";

    // ---- bindings: graph ----
    // ---- bindings: triplet ----
    // ---- bindings: io ----
    m.def(
        "read_sparse_text",
        [](const std::string& path, int num_threads, int64_t chunk_bytes) {
            ramen::io::SparseMatrix mat;
            {
                py::gil_scoped_release release;
                const ramen::io::FileBuffer text = ramen::io::read_file(path);
                mat = ramen::io::parse_sparse_text(text.data.get(), text.size, num_threads, chunk_bytes);
            }
            return sparse_to_python(std::move(mat));
        },
        py::arg("path"), py::kw_only(), py::arg("num_threads") = 0,
        py::arg("chunk_bytes") = ramen::io::kDefaultChunkBytes,
        "Reads an XC sparse text file: (rows, cols, indptr int64, indices int32, data float32). "
        "ValueError 'line N: ...' for malformed input.");
    m.def(
        "parse_sparse_text",
        [](py::buffer text, int num_threads, int64_t chunk_bytes) {
            const py::buffer_info info = text.request();
            if (info.itemsize != 1 || info.ndim != 1 || (info.size > 1 && info.strides[0] != 1))
                throw std::invalid_argument("text must be a contiguous buffer of bytes");
            ramen::io::SparseMatrix mat;
            {
                py::gil_scoped_release release;
                mat = ramen::io::parse_sparse_text(static_cast<const char*>(info.ptr), info.size, num_threads,
                                                   chunk_bytes);
            }
            return sparse_to_python(std::move(mat));
        },
        py::arg("text"), py::kw_only(), py::arg("num_threads") = 0,
        py::arg("chunk_bytes") = ramen::io::kDefaultChunkBytes,
        "Parses XC sparse text held in a bytes-like object; same result as read_sparse_text.");
    m.def(
        "write_sparse_text",
        [](const std::string& path, int64_t rows, int64_t cols,
           py::array_t<int64_t, py::array::c_style> indptr, py::array_t<int32_t, py::array::c_style> indices,
           py::array_t<float, py::array::c_style> data, int num_threads) {
            if (rows < 0 || cols < 0) throw std::invalid_argument("rows and cols must be non-negative");
            if (indptr.ndim() != 1 || indptr.size() != rows + 1)
                throw std::invalid_argument("indptr must have rows + 1 entries");
            const int64_t nnz = indptr.at(rows);
            if (indices.ndim() != 1 || data.ndim() != 1 || indices.size() != nnz || data.size() != nnz)
                throw std::invalid_argument("indices and data must have indptr[rows] entries");
            py::gil_scoped_release release;
            ramen::io::write_sparse_text(path, rows, cols, indptr.data(), indices.data(), data.data(), num_threads);
        },
        py::arg("path"), py::arg("rows"), py::arg("cols"), py::kw_only(), py::arg("indptr"), py::arg("indices"),
        py::arg("data"), py::arg("num_threads") = 0,
        "Writes a CSR matrix (float32 values) in the XC sparse text format.");
}
