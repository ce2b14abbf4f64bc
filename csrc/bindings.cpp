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
#include "graph.h"
#include "rng.h"
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
template <typename T>
using CArray = py::array_t<T, py::array::c_style>;

// A CSR structure from numpy buffers, with the O(1) size checks (the O(nnz) checks of sortedness
// and range are the Python caller's, before the kernel).
template <typename I>
ramen::CsrView<I> csr_view(const CArray<I>& indptr, const CArray<I>& indices, int64_t rows, int64_t cols,
                           const char* name) {
    if (rows < 0 || cols < 0) throw std::invalid_argument(std::string(name) + ": negative shape");
    if (indptr.ndim() != 1 || indptr.size() != rows + 1)
        throw std::invalid_argument(std::string(name) + ": indptr must have rows + 1 entries");
    const I* p = indptr.data();
    if (p[0] != 0 || p[rows] < 0 || indices.ndim() != 1 || indices.size() < static_cast<py::ssize_t>(p[rows]))
        throw std::invalid_argument(std::string(name) + ": indptr[0] must be 0 and indptr[-1] <= len(indices)");
    return ramen::CsrView<I>{p, indices.data(), rows, cols};
}

void check_starts(const CArray<int64_t>& starts, int64_t n) {
    if (starts.ndim() != 1) throw std::invalid_argument("starts must be one-dimensional");
    const int64_t* s = starts.data();
    for (py::ssize_t i = 0; i < starts.size(); ++i)
        if (s[i] < 0 || s[i] >= n) throw std::invalid_argument("starts: node id out of range");
}

// Progress callback: called with the GIL held; Ctrl-C (or an exception in the callback) abandons the walk.
ramen::Progress progress_fn(const py::object& callback) {
    const py::handle cb = callback;
    return [cb](int64_t done) {
        py::gil_scoped_acquire gil;
        if (!cb.is_none()) cb(done);
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    };
}

template <typename T>
py::array_t<T> take(ramen::Buffer<T>& buffer) {
    const py::ssize_t n = buffer.size();
    T* data = buffer.release();
    if (data == nullptr) return py::array_t<T>(0);
    py::capsule owner(data, [](void* p) { ramen::free_buffer(p); });
    return py::array_t<T>({n}, {static_cast<py::ssize_t>(sizeof(T))}, data, owner);
}

template <typename I>
py::tuple take_csr(ramen::CsrResult<I>& r) {
    return py::make_tuple(take(r.indptr), take(r.indices), take(r.data));
}

ramen::WalkOptions walk_options(int64_t walk_length, double restart_prob, int64_t top_k, uint64_t seed, int num_threads,
                                int64_t batch_starts) {
    ramen::WalkOptions o;
    o.batch_starts = batch_starts;
    o.walk_length = walk_length;
    o.restart_prob = static_cast<float>(restart_prob);
    o.top_k = top_k;
    o.seed = seed;
    o.num_threads = num_threads;
    return o;
}

template <typename I>
py::tuple rwr_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t num_nodes,
                      const CArray<int64_t>& starts, int64_t walk_length, double restart_prob, int64_t top_k,
                      uint64_t seed, int num_threads, const py::object& progress, int64_t batch_starts) {
    const auto adj = csr_view(indptr, indices, num_nodes, num_nodes, "adj");
    check_starts(starts, num_nodes);
    const auto options = walk_options(walk_length, restart_prob, top_k, seed, num_threads, batch_starts);
    const auto report = progress_fn(progress);
    ramen::CsrResult<I> result;
    {
        py::gil_scoped_release release;
        result = ramen::random_walk_with_restart(adj, starts.data(), starts.size(), options, report);
    }
    return take_csr(result);
}

template <typename I>
py::tuple bipartite_binding(const CArray<I>& indptr, const CArray<I>& indices, const CArray<I>& t_indptr,
                            const CArray<I>& t_indices, int64_t rows, int64_t cols, const CArray<int64_t>& starts,
                            bool starts_are_rows, bool keep_extra, int64_t walk_length, double restart_prob,
                            int64_t top_k, uint64_t seed, int num_threads, const py::object& progress,
                            int64_t batch_starts) {
    const auto Y = csr_view(indptr, indices, rows, cols, "Y");
    const auto Yt = csr_view(t_indptr, t_indices, cols, rows, "Y transposed");
    if (Y.indptr[rows] != Yt.indptr[cols]) throw std::invalid_argument("Y and its transpose differ in nnz");
    check_starts(starts, starts_are_rows ? rows : cols);
    const auto options = walk_options(walk_length, restart_prob, top_k, seed, num_threads, batch_starts);
    const auto report = progress_fn(progress);
    ramen::CsrResult<I> result;
    {
        py::gil_scoped_release release;
        result = ramen::bipartite_walk(Y, Yt, starts.data(), starts.size(), starts_are_rows, keep_extra, options, report);
    }
    return take_csr(result);
}

template <typename I, typename T>
py::tuple prune_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t rows, int64_t cols,
                        const CArray<T>& row_emb, const CArray<T>& col_emb, double threshold, int num_threads) {
    const auto E = csr_view(indptr, indices, rows, cols, "E");
    if (row_emb.ndim() != 2 || col_emb.ndim() != 2 || row_emb.shape(0) != rows || col_emb.shape(0) != cols ||
        row_emb.shape(1) != col_emb.shape(1))
        throw std::invalid_argument("row_emb must be (rows, dim) and col_emb (cols, dim)");
    const int64_t nnz = E.indptr[rows];
    py::array_t<uint8_t> keep(nnz);
    py::array_t<int64_t> row_kept(rows);
    uint8_t* k = keep.mutable_data();
    int64_t* rk = row_kept.mutable_data();
    {
        py::gil_scoped_release release;
        if constexpr (std::is_same_v<T, float>)
            ramen::prune_mask_f32(E, row_emb.data(), col_emb.data(), row_emb.shape(1), static_cast<float>(threshold),
                                  num_threads, k, rk);
        else
            ramen::prune_mask_f16(E, row_emb.data(), col_emb.data(), row_emb.shape(1), static_cast<float>(threshold),
                                  num_threads, k, rk);
    }
    return py::make_tuple(keep, row_kept);
}

template <typename I>
py::tuple transpose_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t rows, int64_t cols) {
    const auto mat = csr_view(indptr, indices, rows, cols, "matrix");
    py::array_t<I> t_indptr(cols + 1), t_indices(static_cast<py::ssize_t>(mat.indptr[rows]));
    I* p = t_indptr.mutable_data();
    I* q = t_indices.mutable_data();
    {
        py::gil_scoped_release release;
        ramen::transpose_structure(mat, p, q);
    }
    return py::make_tuple(t_indptr, t_indices);
}

template <typename I>
py::tuple check_csr_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t cols, int num_threads) {
    if (indptr.ndim() != 1 || indptr.size() < 1 || indices.ndim() != 1)
        throw std::invalid_argument("indptr and indices must be 1-d, indptr non-empty");
    const I* p = indptr.data();
    const I* q = indices.data();
    const int64_t rows = indptr.size() - 1, n = indices.size();
    ramen::CsrProblem problem;
    {
        py::gil_scoped_release release;
        problem = ramen::check_csr(p, rows, q, n, cols, num_threads);
    }
    return py::make_tuple(problem.kind, problem.at, problem.value);
}

template <typename I>
void def_graph(py::module_& m) {
    m.def("check_csr", &check_csr_binding<I>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("cols"), py::kw_only(), py::arg("num_threads"),
          "First problem of a CSR structure: (kind, at, value); kind 0 = none, 1 = indptr[0] != 0, "
          "2 = indptr decreases after row `at`, 3 = indptr[-1] > len(indices), 4 = index out of range at entry `at`.");
    m.def("transpose_structure", &transpose_binding<I>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("rows"), py::arg("cols"), "CSR structure of the transpose: (t_indptr, t_indices), same dtype.");
    m.def("random_walk_with_restart", &rwr_binding<I>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("num_nodes"), py::arg("starts").noconvert(), py::kw_only(), py::arg("walk_length"),
          py::arg("restart_prob"), py::arg("top_k"), py::arg("seed"), py::arg("num_threads"), py::arg("progress"),
          py::arg("batch_starts") = 0,
          "Visit counts of walks with restart from each start: (indptr int64, indices, data float32).");
    m.def("bipartite_walk", &bipartite_binding<I>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("t_indptr").noconvert(), py::arg("t_indices").noconvert(), py::arg("rows"), py::arg("cols"),
          py::arg("starts").noconvert(), py::kw_only(), py::arg("starts_are_rows"), py::arg("keep_extra"),
          py::arg("walk_length"), py::arg("restart_prob"), py::arg("top_k"), py::arg("seed"), py::arg("num_threads"),
          py::arg("progress"), py::arg("batch_starts") = 0,
          "Column visit counts of column -> row -> column walks with restart: (indptr, indices, data).");
    m.def("prune_mask", &prune_binding<I, float>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("rows"), py::arg("cols"), py::arg("row_emb").noconvert(), py::arg("col_emb").noconvert(),
          py::kw_only(), py::arg("threshold"), py::arg("num_threads"),
          "Edges whose endpoint embeddings have a dot product > threshold: (keep uint8, kept per row).");
    m.def("prune_mask", &prune_binding<I, uint16_t>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("rows"), py::arg("cols"), py::arg("row_emb").noconvert(), py::arg("col_emb").noconvert(),
          py::kw_only(), py::arg("threshold"), py::arg("num_threads"),
          "The same with float16 embeddings passed as their uint16 bits.");
}

py::tuple philox_binding(const std::vector<uint32_t>& counter, const std::vector<uint32_t>& key) {
    if (counter.size() != 4 || key.size() != 2) throw std::invalid_argument("counter must have 4 words and key 2");
    const ramen::Words4 w = ramen::philox4x32(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
    return py::make_tuple(w.w[0], w.w[1], w.w[2], w.w[3]);
}

int64_t first_non_finite_binding(const py::array& emb, int num_threads) {
    if (emb.ndim() != 2) throw std::invalid_argument("embeddings must be 2-d");
    const int64_t rows = emb.shape(0), dim = emb.shape(1);
    if (py::isinstance<CArray<float>>(emb) && emb.dtype().is(py::dtype::of<float>())) {
        const float* p = CArray<float>(emb).data();
        py::gil_scoped_release release;
        return ramen::first_non_finite_f32(p, rows, dim, num_threads);
    }
    if (py::isinstance<CArray<uint16_t>>(emb) && emb.dtype().is(py::dtype::of<uint16_t>())) {
        const uint16_t* p = CArray<uint16_t>(emb).data();
        py::gil_scoped_release release;
        return ramen::first_non_finite_f16(p, rows, dim, num_threads);
    }
    throw std::invalid_argument("embeddings must be C-contiguous float32 or uint16 (float16 bits)");
}

// uniform01 of each word, and whether the kernels' integer test below(word, threshold24(p)) holds.
py::tuple uniform01_binding(const CArray<uint32_t>& words, float p) {
    py::array_t<float> u(words.size());
    py::array_t<bool> restart(words.size());
    const uint32_t threshold = ramen::threshold24(p);
    for (py::ssize_t i = 0; i < words.size(); ++i) {
        u.mutable_data()[i] = ramen::uniform01(words.data()[i]);
        restart.mutable_data()[i] = ramen::below(words.data()[i], threshold);
    }
    return py::make_tuple(u, restart);
}

float dot_binding(const py::array& a, const py::array& b) {
    if (a.ndim() != 1 || b.ndim() != 1 || a.size() != b.size() || !a.dtype().is(b.dtype()))
        throw std::invalid_argument("a and b must be 1-d arrays of one dtype and size");
    if (py::isinstance<CArray<float>>(a) && a.dtype().is(py::dtype::of<float>()))
        return ramen::dot_f32(CArray<float>(a).data(), CArray<float>(b).data(), a.size());
    if (a.dtype().is(py::dtype::of<uint16_t>()))
        return ramen::dot_f16(CArray<uint16_t>(a).data(), CArray<uint16_t>(b).data(), a.size());
    throw std::invalid_argument("a and b must be float32 or uint16 (float16 bits)");
}
// ---- helpers: triplet ----
// ---- helpers: io ----

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "ramen's C++/CUDA kernels (random walks, pruning, triplet scoring, XC file parsing)";
    m.def("has_cuda", &has_cuda, "Whether this build contains the CUDA kernels.");
    m.def("hardware_threads", &ramen::hardware_threads, "Threads used when num_threads is None.");
    m.attr("__version__") = "0.1.0";

    // ---- bindings: graph ----
    def_graph<int32_t>(m);
    def_graph<int64_t>(m);
    m.def("philox4x32", &philox_binding, py::arg("counter"), py::arg("key"),
          "Philox-4x32-10 block function (for known-answer tests).");
    m.def("walk_draw", &ramen::walk_draw, py::arg("seed"), py::arg("start"), py::arg("hop"), py::arg("which"),
          py::arg("range"), "The walks' uniform edge choice in [0, range) (for tests of its rare paths).");
    m.def("first_non_finite", &first_non_finite_binding, py::arg("emb"), py::kw_only(), py::arg("num_threads"),
          "The first row of a 2-d float32 / float16-bits array with a NaN or infinity, or -1.");
    m.def("uniform01", &uniform01_binding, py::arg("words").noconvert(), py::arg("p"),
          "(uniform01(words), below(words, threshold24(p))): the RNG's float draw and the walks' restart test.");
    m.def("dot", &dot_binding, py::arg("a"), py::arg("b"), "Dot product by the pruning kernel's vector code.");
    // ---- bindings: triplet ----
    // ---- bindings: io ----
}
