// The only file that knows pybind11: exposes the plain C++ kernels of csrc/ as ramen._C.
//
// Each binding takes numpy buffers (or device pointers and a stream as integers), checks sizes,
// releases the GIL around the kernel and turns std::invalid_argument into ValueError.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "buffer.h"
#include "cluster.h"
#include "csr.h"
#include "dot.h"
#include "hnsw.h"
#include "io.h"
#include "parallel.h"
#include "prune.h"
#include "rng.h"
#include "rwr.h"
#include "triplet.h"
#include "triplet_launch.h"

namespace py = pybind11;

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

ramen::PruneOrder prune_order(const std::string& name) {
    if (name == "auto") return ramen::PruneOrder::kAuto;
    if (name == "csr") return ramen::PruneOrder::kCsr;
    if (name == "bucket") return ramen::PruneOrder::kBucket;
    throw std::invalid_argument("edge_order must be 'auto', 'csr' or 'bucket', got '" + name + "'");
}

template <typename I, typename T>
py::tuple prune_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t rows, int64_t cols,
                        const CArray<T>& row_emb, const CArray<T>& col_emb, double threshold,
                        const std::string& edge_order, int num_threads) {
    const auto E = csr_view(indptr, indices, rows, cols, "E");
    const auto order = prune_order(edge_order);
    if (row_emb.ndim() != 2 || col_emb.ndim() != 2 || row_emb.shape(0) != rows || col_emb.shape(0) != cols ||
        row_emb.shape(1) != col_emb.shape(1))
        throw std::invalid_argument("row_emb must be (rows, dim) and col_emb (cols, dim)");
    const int64_t nnz = E.indptr[rows];
    py::array_t<uint8_t> keep(nnz);
    py::array_t<int64_t> row_kept(rows);
    uint8_t* k = keep.mutable_data();
    int64_t* rk = row_kept.mutable_data();
    ramen::PruneOrder used;
    {
        py::gil_scoped_release release;
        if constexpr (std::is_same_v<T, float>)
            used = ramen::prune_mask_f32(E, row_emb.data(), col_emb.data(), row_emb.shape(1),
                                         static_cast<float>(threshold), order, num_threads, k, rk);
        else
            used = ramen::prune_mask_f16(E, row_emb.data(), col_emb.data(), row_emb.shape(1),
                                         static_cast<float>(threshold), order, num_threads, k, rk);
    }
    return py::make_tuple(keep, row_kept, used == ramen::PruneOrder::kBucket ? "bucket" : "csr");
}

template <typename I>
py::tuple compact_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t rows, int64_t cols,
                          const CArray<uint8_t>& keep, const CArray<int64_t>& new_indptr,
                          const std::optional<py::array>& data, int num_threads) {
    const auto E = csr_view(indptr, indices, rows, cols, "E");
    const int64_t nnz = E.indptr[rows];
    if (keep.ndim() != 1 || keep.size() < nnz) throw std::invalid_argument("keep must be 1-d with one entry per edge");
    if (new_indptr.ndim() != 1 || new_indptr.size() != rows + 1)
        throw std::invalid_argument("new_indptr must be 1-d with rows + 1 entries");
    const int64_t* offsets = new_indptr.data();  // its ranges bound every write below
    if (offsets[0] != 0 || offsets[rows] > nnz || !std::is_sorted(offsets, offsets + rows + 1))
        throw std::invalid_argument("new_indptr must start at 0, never decrease and end at most at the edge count");
    if (data && (data->ndim() != 1 || !(data->flags() & py::array::c_style) || data->size() < nnz))
        throw std::invalid_argument("data must be a contiguous 1-d array with one entry per edge");
    const int64_t kept = offsets[rows];
    py::array_t<I> out_indices(kept);
    I* q = out_indices.mutable_data();
    py::object out_data = py::none();
    const void* src = nullptr;
    void* dst = nullptr;
    int64_t itemsize = 0;
    if (data) {
        py::array out(data->dtype(), std::vector<py::ssize_t>{static_cast<py::ssize_t>(kept)});
        src = data->data();
        dst = out.mutable_data();
        itemsize = data->itemsize();
        out_data = out;
    }
    {
        py::gil_scoped_release release;
        ramen::compact_edges(E, keep.data(), offsets, q, src, itemsize, dst, num_threads);
    }
    return py::make_tuple(out_indices, out_data);
}

template <typename I>
py::tuple transpose_binding(const CArray<I>& indptr, const CArray<I>& indices, int64_t rows, int64_t cols,
                            int num_threads) {
    const auto mat = csr_view(indptr, indices, rows, cols, "matrix");
    py::array_t<I> t_indptr(cols + 1), t_indices(static_cast<py::ssize_t>(mat.indptr[rows]));
    I* p = t_indptr.mutable_data();
    I* q = t_indices.mutable_data();
    {
        py::gil_scoped_release release;
        ramen::transpose_structure(mat, p, q, num_threads);
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
          py::arg("rows"), py::arg("cols"), py::kw_only(), py::arg("num_threads") = 0,
          "CSR structure of the transpose: (t_indptr, t_indices), same dtype; any num_threads gives the same.");
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
    m.def("compact_edges", &compact_binding<I>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("rows"), py::arg("cols"), py::arg("keep").noconvert(), py::arg("new_indptr").noconvert(),
          py::arg("data").none(true), py::kw_only(), py::arg("num_threads"),
          "The kept edges (keep != 0) at offsets new_indptr: (indices, data or None); data of itemsize 1, 2, 4 "
          "or 8 bytes.");
    m.def("prune_mask", &prune_binding<I, float>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("rows"), py::arg("cols"), py::arg("row_emb").noconvert(), py::arg("col_emb").noconvert(),
          py::kw_only(), py::arg("threshold"), py::arg("edge_order"), py::arg("num_threads"),
          "Edges whose endpoint embeddings have a dot product > threshold: (keep uint8, kept per row, order used).");
    m.def("prune_mask", &prune_binding<I, uint16_t>, py::arg("indptr").noconvert(), py::arg("indices").noconvert(),
          py::arg("rows"), py::arg("cols"), py::arg("row_emb").noconvert(), py::arg("col_emb").noconvert(),
          py::kw_only(), py::arg("threshold"), py::arg("edge_order"), py::arg("num_threads"),
          "The same with float16 embeddings passed as their uint16 bits.");
}

py::tuple philox_binding(const std::vector<uint32_t>& counter, const std::vector<uint32_t>& key) {
    if (counter.size() != 4 || key.size() != 2) throw std::invalid_argument("counter must have 4 words and key 2");
    const ramen::Words4 w = ramen::philox4x32(counter[0], counter[1], counter[2], counter[3], key[0], key[1]);
    return py::make_tuple(w.w[0], w.w[1], w.w[2], w.w[3]);
}

py::tuple balanced_clusters_binding(const CArray<float>& emb, int64_t cluster_size, uint64_t seed, int iters,
                                    int num_threads) {
    if (emb.ndim() != 2 || emb.shape(1) < 1) throw std::invalid_argument("emb must be 2-d (rows, dim) with dim >= 1");
    if (cluster_size < 1) throw std::invalid_argument("cluster_size must be >= 1");
    if (iters < 1) throw std::invalid_argument("iters must be >= 1");
    const int64_t n = emb.shape(0), dim = emb.shape(1);
    const float* x = emb.data();
    py::array_t<int64_t> order(n), starts(ramen::cluster_count(n, cluster_size) + 1);
    int64_t* o = order.mutable_data();
    int64_t* s = starts.mutable_data();
    int64_t bad;
    {
        py::gil_scoped_release release;
        bad = ramen::first_non_finite_f32(x, n, dim, num_threads);
        if (bad < 0) ramen::balanced_clusters_f32(x, n, dim, cluster_size, seed, iters, num_threads, o, s);
    }
    if (bad >= 0) throw std::invalid_argument("emb row " + std::to_string(bad) + " is not finite (NaN or infinity)");
    return py::make_tuple(order, starts);
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

// A vector's buffer as a 1-D numpy array that owns it (no copy).
template <typename T>
py::array_t<T> owned_array(std::vector<T>&& v) {
    auto* owned = new std::vector<T>(std::move(v));
    py::capsule owner(owned, [](void* p) { delete static_cast<std::vector<T>*>(p); });
    return py::array_t<T>({static_cast<py::ssize_t>(owned->size())}, {static_cast<py::ssize_t>(sizeof(T))},
                          owned->data(), owner);
}

template <typename T>
py::object triplet_mine_cpu_typed(const py::array& scores, const ramen::ColumnSets& pos, const ramen::ColumnSets& exc,
                                  const ramen::TripletOptions& options, py::array& loss, py::array& grad,
                                  py::array& count, int num_threads, bool sparse) {
    const int64_t rows = scores.shape(0), cols = scores.shape(1);
    const T* s = static_cast<const T*>(scores.data());
    T* l = static_cast<T*>(loss.mutable_data());
    T* g = static_cast<T*>(grad.mutable_data());
    int64_t* c = static_cast<int64_t*>(count.mutable_data());
    ramen::SparseGrad<T> out;
    {
        py::gil_scoped_release release;
        ramen::triplet_mine_cpu<T>(s, rows, cols, pos, exc, options, l, g, c, num_threads, sparse ? &out : nullptr);
    }
    if (!sparse) return py::none();
    return py::make_tuple(owned_array(std::move(out.indptr)), owned_array(std::move(out.indices)),
                          owned_array(std::move(out.values)));
}

// The CPU entry: scores float32/float64 (rows x cols); writes loss [rows] and count [rows] int64 in
// place, and G into grad (rows x cols, the scores' dtype), or with sparse=True returns G as a CSR
// (indptr, indices, values) and uses grad as scratch.
py::object triplet_mine_cpu_binding(const py::array& scores, const std::optional<py::array>& pos_indptr,
                                    const std::optional<py::array>& pos_indices, const std::optional<py::array>& pos_mask,
                                    const std::optional<py::array>& exc_indptr, const std::optional<py::array>& exc_indices,
                                    const std::optional<py::array>& exc_mask, double margin, int64_t num_negatives,
                                    double temperature, py::array loss, py::array grad, py::array count, int num_threads,
                                    bool sparse) {
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
        return triplet_mine_cpu_typed<float>(scores, pos, exc, options, loss, grad, count, num_threads, sparse);
    return triplet_mine_cpu_typed<double>(scores, pos, exc, options, loss, grad, count, num_threads, sparse);
}

template <typename T>
void triplet_sparse_backward_typed(const py::array& indptr, const py::array& indices, const py::array& values,
                                   int64_t cols, const py::array& q, const py::array& c,
                                   const std::optional<py::array>& row_scale, double scale,
                                   const std::optional<py::array>& dq, const std::optional<py::array>& dc,
                                   int num_threads) {
    const int64_t rows = q.shape(0), dim = q.shape(1);
    const T* rs = row_scale ? static_cast<const T*>(row_scale->data()) : nullptr;
    T* dq_ptr = dq ? static_cast<T*>(const_cast<void*>(dq->data())) : nullptr;
    T* dc_ptr = dc ? static_cast<T*>(const_cast<void*>(dc->data())) : nullptr;
    py::gil_scoped_release release;
    ramen::triplet_sparse_backward_cpu<T>(static_cast<const int64_t*>(indptr.data()),
                                          static_cast<const int64_t*>(indices.data()),
                                          static_cast<const T*>(values.data()), indices.shape(0), rows, cols,
                                          static_cast<const T*>(q.data()), static_cast<const T*>(c.data()), dim, rs,
                                          static_cast<T>(scale), dq_ptr, dc_ptr, num_threads);
}

// dq = scale * diag(row_scale) G c and dc = scale * G^T diag(row_scale) q from G as a CSR (rows of
// q x rows of c); q, c, values, row_scale, dq, dc all of one float dtype; dq / dc written in place.
void triplet_sparse_backward_binding(const py::array& indptr, const py::array& indices, const py::array& values,
                                     const py::array& q, const py::array& c, const std::optional<py::array>& row_scale,
                                     double scale, const std::optional<py::array>& dq,
                                     const std::optional<py::array>& dc, int num_threads) {
    const ssize_t itemsize = values.dtype().itemsize();
    if (itemsize != 4 && itemsize != 8) throw std::invalid_argument("values: must be float32 or float64");
    check_array(indptr, "indptr", "i", 8, 1);
    check_array(indices, "indices", "i", 8, 1);
    check_array(values, "values", "f", itemsize, 1);
    check_array(q, "q", "f", itemsize, 2);
    check_array(c, "c", "f", itemsize, 2);
    const int64_t rows = q.shape(0), cols = c.shape(0), dim = q.shape(1);
    if (c.shape(1) != dim) throw std::invalid_argument("q and c must have the same number of columns");
    if (indptr.shape(0) != rows + 1) throw std::invalid_argument("indptr must have len(q) + 1 entries");
    if (values.shape(0) != indices.shape(0)) throw std::invalid_argument("values and indices differ in length");
    if (row_scale) {
        check_array(*row_scale, "row_scale", "f", itemsize, 1);
        if (row_scale->shape(0) != rows) throw std::invalid_argument("row_scale must have len(q) entries");
    }
    const auto check_out = [&](const std::optional<py::array>& out, const char* name, const char* like, int64_t n) {
        if (!out) return;
        check_array(*out, name, "f", itemsize, 2);
        if (out->shape(0) != n || out->shape(1) != dim || !out->writeable())
            throw std::invalid_argument(std::string(name) + ": must be writeable and shaped like " + like);
    };
    check_out(dq, "dq", "q", rows);
    check_out(dc, "dc", "c", cols);
    if (itemsize == 4)
        triplet_sparse_backward_typed<float>(indptr, indices, values, cols, q, c, row_scale, scale, dq, dc, num_threads);
    else
        triplet_sparse_backward_typed<double>(indptr, indices, values, cols, q, c, row_scale, scale, dq, dc, num_threads);
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
// ---- helpers: hnsw ----
// The graph arrays as the kernels see them, after the O(1) shape checks; `nodes`: how many rows
// every per-node array must hold. Search only reads the links, so read-only (memory-mapped) arrays
// serve it; insertion checks that they are writeable first.
template <typename T>
ramen::HnswGraph<T> hnsw_graph(const CArray<T>& vectors, const CArray<int32_t>& level0, const CArray<int32_t>& upper,
                               const CArray<int8_t>& level, const CArray<int64_t>& upper_row, int m, int m0,
                               int64_t nodes) {
    if (m < 2 || m0 < 2) throw std::invalid_argument("m and m0 must be >= 2");
    if (vectors.ndim() != 2 || vectors.shape(0) < nodes || vectors.shape(1) < 1)
        throw std::invalid_argument("vectors must be (capacity, dim) with capacity >= the node count");
    if (level0.ndim() != 2 || level0.shape(0) < nodes || level0.shape(1) != m0 + 1)
        throw std::invalid_argument("level0 must be (capacity, m0 + 1)");
    if (upper.ndim() != 2 || upper.shape(1) != m + 1) throw std::invalid_argument("upper must be (rows, m + 1)");
    if (level.ndim() != 1 || level.shape(0) < nodes || upper_row.ndim() != 1 || upper_row.shape(0) < nodes)
        throw std::invalid_argument("level and upper_row must have an entry per node");
    return ramen::HnswGraph<T>{vectors.data(), vectors.shape(1), const_cast<int32_t*>(level0.data()),
                               const_cast<int32_t*>(upper.data()), upper.shape(0), level.data(), upper_row.data(), m, m0};
}

void check_entry(const CArray<int8_t>& level, int64_t nodes, int64_t entry_node, int entry_level) {
    if (entry_node < -1 || entry_node >= nodes || (nodes > 0) != (entry_node >= 0))
        throw std::invalid_argument("entry: a node of the graph, or -1 exactly when it is empty");
    if (entry_node >= 0 && level.data()[entry_node] != entry_level)
        throw std::invalid_argument("entry: its level disagrees with level[entry]");
}

template <typename T>
py::tuple hnsw_insert_binding(const CArray<T>& vectors, const CArray<int32_t>& level0, const CArray<int32_t>& upper,
                              const CArray<int8_t>& level, const CArray<int64_t>& upper_row, int m, int m0,
                              int64_t entry_node, int entry_level, int64_t begin, int64_t end,
                              const CArray<int64_t>& order, int ef_construction, int num_threads) {
    if (begin < 0 || end < begin) throw std::invalid_argument("need 0 <= begin <= end");
    if (ef_construction < 1) throw std::invalid_argument("ef_construction must be >= 1");
    if (!level0.writeable() || !upper.writeable()) throw std::invalid_argument("level0 and upper must be writeable");
    const auto g = hnsw_graph(vectors, level0, upper, level, upper_row, m, m0, end);
    if (end > std::numeric_limits<int32_t>::max()) throw std::invalid_argument("at most 2^31 - 1 nodes");
    check_entry(level, begin, entry_node, entry_level);
    for (int64_t u = begin; u < end; ++u) {
        const int top = level.data()[u];
        if (top < 0 || top > 63) throw std::invalid_argument("level: values must lie in [0, 63]");
        const int64_t first = upper_row.data()[u];
        if (top > 0 && (first < 0 || first + top > upper.shape(0)))
            throw std::invalid_argument("upper_row: a node's upper rows fall outside upper");
    }
    if (order.ndim() != 1 || order.shape(0) != end - begin)
        throw std::invalid_argument("order must hold end - begin node ids");
    std::vector<uint8_t> seen(static_cast<size_t>(end - begin), 0);
    for (int64_t i = 0; i < end - begin; ++i) {
        const int64_t u = order.data()[i];
        if (u < begin || u >= end || seen[static_cast<size_t>(u - begin)]++)
            throw std::invalid_argument("order must be a permutation of [begin, end)");
    }
    ramen::HnswPending pending;
    {
        py::gil_scoped_release release;
        pending = ramen::hnsw_insert(g, ramen::HnswEntry{entry_node, entry_level}, begin, end, order.data(),
                                     ef_construction, num_threads);
    }
    const auto array = [](const auto& values, int64_t width) {  // (size / width, width), or (size,) for width 0
        using V = typename std::decay_t<decltype(values)>::value_type;
        const int64_t n = static_cast<int64_t>(values.size());
        py::array_t<V> out = width ? py::array_t<V>({n / width, width}) : py::array_t<V>(n);
        std::copy(values.begin(), values.end(), out.mutable_data());
        return out;
    };
    return py::make_tuple(pending.entry.node, pending.entry.level, array(pending.level0_nodes, 0),
                          array(pending.level0_links, m0 + 1), array(pending.upper_rows, 0),
                          array(pending.upper_links, m + 1));
}

template <typename T>
py::tuple hnsw_search_binding(const CArray<T>& vectors, const CArray<int32_t>& level0, const CArray<int32_t>& upper,
                              const CArray<int8_t>& level, const CArray<int64_t>& upper_row, int m, int m0,
                              int64_t entry_node, int entry_level, int64_t nodes, const std::optional<CArray<uint8_t>>& alive,
                              const CArray<float>& queries, int k, int ef, int num_threads) {
    const auto g = hnsw_graph(vectors, level0, upper, level, upper_row, m, m0, nodes);
    check_entry(level, nodes, entry_node, entry_level);
    if (k < 1 || ef < 1) throw std::invalid_argument("k and ef must be >= 1");
    if (queries.ndim() != 2 || queries.shape(1) != g.dim) throw std::invalid_argument("queries must be (n, dim)");
    if (alive && (alive->ndim() != 1 || alive->shape(0) < nodes))
        throw std::invalid_argument("alive must have an entry per node");
    const int64_t n = queries.shape(0);
    py::array_t<int64_t> rows({n, static_cast<int64_t>(k)});
    py::array_t<float> scores({n, static_cast<int64_t>(k)});
    int64_t* r = rows.mutable_data();
    float* s = scores.mutable_data();
    {
        py::gil_scoped_release release;
        ramen::hnsw_search(g, ramen::HnswEntry{entry_node, entry_level}, nodes, alive ? alive->data() : nullptr,
                           queries.data(), n, k, ef, num_threads, r, s);
    }
    return py::make_tuple(rows, scores);
}

template <typename T>
void def_hnsw(py::module_& m) {
    const char* kind = std::is_same_v<T, float> ? "float32" : "float16 (as uint16 bits)";
    m.def("hnsw_insert", &hnsw_insert_binding<T>, py::arg("vectors").noconvert(), py::arg("level0").noconvert(),
          py::arg("upper").noconvert(), py::arg("level").noconvert(), py::arg("upper_row").noconvert(), py::kw_only(),
          py::arg("m"), py::arg("m0"), py::arg("entry_node"), py::arg("entry_level"), py::arg("begin"), py::arg("end"),
          py::arg("order").noconvert(), py::arg("ef_construction"), py::arg("num_threads"),
          (std::string("Links nodes [begin, end) into the HNSW graph of ") + kind +
           " vectors, writing their own rows; returns (entry node, entry level, level0 nodes, their new rows, "
           "upper rows, their new rows): the changes to the rows of nodes [0, begin), left for the caller to write.").c_str());
    m.def("hnsw_search", &hnsw_search_binding<T>, py::arg("vectors").noconvert(), py::arg("level0").noconvert(),
          py::arg("upper").noconvert(), py::arg("level").noconvert(), py::arg("upper_row").noconvert(), py::kw_only(),
          py::arg("m"), py::arg("m0"), py::arg("entry_node"), py::arg("entry_level"), py::arg("nodes"),
          py::arg("alive").noconvert(), py::arg("queries").noconvert(), py::arg("k"), py::arg("ef"),
          py::arg("num_threads"),
          (std::string("Top-k (rows, inner products) of float32 queries in the HNSW graph of ") + kind + " vectors.").c_str());
}

// ---- helpers: io ----
// Hands a vector's buffer to numpy without copying; the array owns it.
py::tuple sparse_to_python(ramen::io::SparseMatrix&& m) {
    return py::make_tuple(m.rows, m.cols, owned_array(std::move(m.indptr)),
                          owned_array(std::move(m.indices)), owned_array(std::move(m.data)));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "ramen's C++/CUDA kernels (random walks, pruning, triplet scoring, XC file parsing)";
    m.def("has_cuda", &has_cuda, "Whether this build contains the CUDA kernels.");
    m.def("hardware_threads", &ramen::hardware_threads, "Threads used when num_threads is None.");
    m.attr("__version__") = "0.1.0";

    // ---- bindings: graph ----
    def_graph<int32_t>(m);
    def_graph<int64_t>(m);
    m.def("balanced_clusters", &balanced_clusters_binding, py::arg("emb").noconvert(), py::kw_only(),
          py::arg("cluster_size"), py::arg("seed"), py::arg("iters"), py::arg("num_threads"),
          "Balanced recursive 2-means of unit rows: (order, starts), cluster c at order[starts[c]:starts[c + 1]].");
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
    m.def("triplet_mine_cpu", &triplet_mine_cpu_binding,
          "Fused hard-negative triplet scoring of a score matrix on the CPU (see ramen.ops.triplet_loss).",
          py::kw_only(), py::arg("scores"), py::arg("pos_indptr") = py::none(), py::arg("pos_indices") = py::none(),
          py::arg("pos_mask") = py::none(), py::arg("exc_indptr") = py::none(), py::arg("exc_indices") = py::none(),
          py::arg("exc_mask") = py::none(), py::arg("margin"), py::arg("num_negatives"), py::arg("temperature"),
          py::arg("loss"), py::arg("grad"), py::arg("count"), py::arg("num_threads") = 0, py::arg("sparse") = false);
    m.def("triplet_sparse_backward_cpu", &triplet_sparse_backward_binding,
          "dq = G c and dc = G^T q (scaled) from the triplet op's sparse G on the CPU; deterministic.",
          py::kw_only(), py::arg("indptr"), py::arg("indices"), py::arg("values"), py::arg("q"), py::arg("c"),
          py::arg("row_scale") = py::none(), py::arg("scale") = 1.0, py::arg("dq") = py::none(),
          py::arg("dc") = py::none(), py::arg("num_threads") = 0);
#ifdef RAMEN_WITH_CUDA
    m.def("triplet_mine_cuda", &triplet_mine_cuda_binding,
          "Fused hard-negative triplet scoring on CUDA: device pointers and a stream as integers, no host sync.",
          py::kw_only(), py::arg("dtype"), py::arg("scores"), py::arg("rows"), py::arg("cols"),
          py::arg("pos_indptr") = 0, py::arg("pos_indices") = 0, py::arg("pos_nnz") = 0, py::arg("pos_mask") = 0,
          py::arg("exc_indptr") = 0, py::arg("exc_indices") = 0, py::arg("exc_nnz") = 0, py::arg("exc_mask") = 0,
          py::arg("margin"), py::arg("num_negatives"), py::arg("temperature"), py::arg("loss"), py::arg("grad"),
          py::arg("count"), py::arg("device"), py::arg("stream"));
    m.def("triplet_cuda_max_cols", &ramen::triplet_cuda_max_cols,
          "Widest M the CUDA triplet kernel keeps in shared memory on a device (wider M: global memory).",
          py::kw_only(), py::arg("device"));
#endif
    m.def(
        "triplet_cuda_launch_plan",
        [](int64_t rows, int64_t cols, int64_t optin_bytes, int64_t static_bytes, int64_t workspace_budget) {
            const ramen::TripletLaunch plan =
                ramen::plan_triplet_launch(rows, cols, optin_bytes, static_bytes, workspace_budget);
            py::dict out;
            out["shared"] = plan.shared;
            out["dynamic_shared"] = plan.dynamic_shared;
            out["raise_limit"] = plan.raise_limit;
            out["workspace_stride"] = plan.workspace_stride;
            out["rows_per_launch"] = plan.rows_per_launch;
            out["shared_max_cols"] = ramen::triplet_shared_max_cols(optin_bytes, static_bytes);
            return out;
        },
        "The CUDA triplet kernel's launch sizes for rows x cols on a device with the given shared memory "
        "(host arithmetic: runs in every build).",
        py::kw_only(), py::arg("rows"), py::arg("cols"), py::arg("optin_bytes"), py::arg("static_bytes"),
        py::arg("workspace_budget") = ramen::kTripletWorkspaceBudget);
    // ---- bindings: hnsw ----
    def_hnsw<float>(m);
    def_hnsw<uint16_t>(m);
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
