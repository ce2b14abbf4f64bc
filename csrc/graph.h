// Graph kernels over CSR structure: random walks with restart (unipartite and bipartite, top-k
// visit counts per start) and edge pruning by the dot product of endpoint embeddings.
//
// Plain functions over raw pointers and sizes, templated over the index type (int32_t or int64_t)
// so that scipy's arrays are used as they are. Every kernel gives the same output for any number
// of threads: random draws are keyed by (seed, start node, hop), never taken from a shared stream.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>

namespace ramen {

// The structure of a CSR matrix (values are not used): row r links to indices[indptr[r]:indptr[r+1]].
// Callers guarantee indptr[0] == 0, indptr non-decreasing and every index in [0, cols).
template <typename I>
struct CsrView {
    const I* indptr;   // (rows + 1,)
    const I* indices;  // (indptr[rows],)
    int64_t rows;
    int64_t cols;
};

// Memory for Buffer: on Linux an anonymous mapping of its own, grown by mremap (pages move, nothing
// is copied) and unmapped on free, so a growing output never leaves copies behind; elsewhere
// realloc. A 64-byte header before the data records the size, so that free_buffer needs only the
// data pointer (numpy frees released buffers through it).
void* grow_buffer(void* data, size_t bytes);
void free_buffer(void* data);

// A growable array whose ownership can be handed over (to numpy) with release().
template <typename T>
class Buffer {
public:
    Buffer() = default;
    Buffer(const Buffer&) = delete;
    Buffer& operator=(const Buffer&) = delete;
    Buffer(Buffer&& other) noexcept : data_(other.data_), size_(other.size_), capacity_(other.capacity_) {
        other.data_ = nullptr;
        other.size_ = other.capacity_ = 0;
    }
    Buffer& operator=(Buffer&& other) noexcept {
        if (this != &other) {
            free_buffer(data_);
            data_ = other.data_;
            size_ = other.size_;
            capacity_ = other.capacity_;
            other.data_ = nullptr;
            other.size_ = other.capacity_ = 0;
        }
        return *this;
    }
    ~Buffer() { free_buffer(data_); }

    T* data() { return data_; }
    const T* data() const { return data_; }
    int64_t size() const { return size_; }

    // Makes room for `n` elements in all (contents kept); geometric growth.
    void reserve(int64_t n) {
        if (n <= capacity_) return;
        int64_t cap = capacity_ < 1024 ? 1024 : capacity_;
        while (cap < n) cap += cap / 2;
        reallocate(cap);
    }
    void resize(int64_t n) {
        reserve(n);
        size_ = n;
    }
    // Gives back unused capacity (in place).
    void shrink_to_fit() {
        if (capacity_ > size_) reallocate(size_ > 0 ? size_ : 1);
    }
    // The caller takes the memory over and must free it with free_buffer().
    T* release() {
        T* p = data_;
        data_ = nullptr;
        size_ = capacity_ = 0;
        return p;
    }

private:
    void reallocate(int64_t cap) {
        data_ = static_cast<T*>(grow_buffer(data_, static_cast<size_t>(cap) * sizeof(T)));
        capacity_ = cap;
    }

    T* data_ = nullptr;
    int64_t size_ = 0;
    int64_t capacity_ = 0;
};

// A sparse result with one row per start: visit counts (or weights) in CSR.
template <typename I>
struct CsrResult {
    Buffer<int64_t> indptr;  // (rows + 1,)
    Buffer<I> indices;       // (nnz,) sorted within each row
    Buffer<float> data;      // (nnz,)
};

struct WalkOptions {
    int64_t walk_length = 400;  // hops per start, 1 <= walk_length <= 2^24
    float restart_prob = 0.8f;  // in (0, 1]
    int64_t top_k = 0;          // keep the k most visited per row (ties: lower id); 0 keeps all
    uint64_t seed = 0;
    int num_threads = 0;        // <= 0: every hardware thread
    int64_t batch_starts = 0;   // starts per progress batch; 0: automatic (tests set it to cut chunks)
};

// Called on the calling thread between batches of starts with the number of starts done so far;
// it may throw to abandon the walk (e.g. on KeyboardInterrupt).
using Progress = std::function<void(int64_t done)>;

// Walks on a square adjacency from each start; row r of the result counts the landings of the
// walk from starts[r] over walk_length hops. Hop 1 leaves the start; before each later hop the
// walker returns to the start with probability restart_prob; a node without out-edges sends the
// walker back to the start (that hop lands on the start). Neighbours are uniform over stored
// entries (a duplicate entry is a parallel edge).
template <typename I>
CsrResult<I> random_walk_with_restart(const CsrView<I>& adj, const int64_t* starts, int64_t num_starts,
                                      const WalkOptions& options, const Progress& progress);

// Walks over the columns of a rows x cols matrix Y (with Yt its transpose, cols x rows): one hop
// goes column -> uniform linked row -> uniform linked column; restarts as above; landings on
// columns are counted.
// - starts_are_rows == false: starts are columns; a restart puts the walker on the start column;
//   a column without rows sends it back to the start. With keep_extra, each row keeps its start
//   column even where top-k cut it (weight max(count, 1)).
// - starts_are_rows == true: starts are rows; a restart hop goes start row -> uniform linked
//   column (the start's columns are the restart distribution). With keep_extra, each row keeps
//   the start row's own columns (weight max(count, 1)) and the top k is taken among the other
//   columns (k new columns per row), equal counts ordered by a hash of (seed, start, column)
//   instead of by id. Rows without columns give empty rows.
template <typename I>
CsrResult<I> bipartite_walk(const CsrView<I>& Y, const CsrView<I>& Yt, const int64_t* starts, int64_t num_starts,
                            bool starts_are_rows, bool keep_extra, const WalkOptions& options,
                            const Progress& progress);

// The first problem of a CSR structure, for error messages: kind, where (row or entry) and value.
struct CsrProblem {
    enum Kind { kNone = 0, kIndptrStart, kIndptrDecreasing, kIndptrEnd, kIndexRange };
    int kind = kNone;
    int64_t at = -1;
    int64_t value = 0;
};

// Checks indptr[0] == 0, indptr non-decreasing, indptr[rows] <= num_indices and every used index in
// [0, cols), in one parallel pass; reports the first problem found.
template <typename I>
CsrProblem check_csr(const I* indptr, int64_t rows, const I* indices, int64_t num_indices, int64_t cols,
                     int num_threads);

// The structure of the transpose (cols x rows) of m: t_indptr (cols + 1) and t_indices (nnz), each
// column's rows in increasing order (duplicates kept). A counting sort over column ranges, one
// range per thread (at most 8); the same output for any num_threads (<= 0: every hardware thread).
template <typename I>
void transpose_structure(const CsrView<I>& m, I* t_indptr, I* t_indices, int num_threads);

// The order in which pruning visits the edges (the output is the same in every order): CSR order,
// column buckets within blocks of edges, or kAuto: the faster of the two on a timed trial over the
// first edges (graphs under 4M edges take CSR order untimed).
enum class PruneOrder : int { kAuto = 0, kCsr = 1, kBucket = 2 };

// Edge pruning: keep[e] = 1 where the dot product of row_emb[r] and col_emb[indices[e]] (edge e in
// row r) is > threshold, else 0; row_kept[r] counts the kept edges of row r. Embeddings are
// row-major (rows x dim) and (cols x dim); dot products accumulate in float32. Returns the order
// used (kCsr or kBucket).
template <typename I>
PruneOrder prune_mask_f32(const CsrView<I>& E, const float* row_emb, const float* col_emb, int64_t dim,
                          float threshold, PruneOrder order, int num_threads, uint8_t* keep, int64_t* row_kept);
// The same with IEEE half-precision embeddings (raw uint16 bits).
template <typename I>
PruneOrder prune_mask_f16(const CsrView<I>& E, const uint16_t* row_emb, const uint16_t* col_emb, int64_t dim,
                          float threshold, PruneOrder order, int num_threads, uint8_t* keep, int64_t* row_kept);

// The kept edges of E (keep[e] != 0) as a new CSR: out_indices and out_data (itemsize bytes per
// entry, copied as bytes; itemsize 0 for no data) at the offsets new_indptr (rows + 1, the prefix
// sums of the kept counts per row). Rows in parallel; the output does not depend on num_threads.
template <typename I>
void compact_edges(const CsrView<I>& E, const uint8_t* keep, const int64_t* new_indptr, I* out_indices,
                   const void* data, int64_t itemsize, void* out_data, int num_threads);

// The first row of a (rows x dim) matrix holding a NaN or an infinity, or -1 (for input checks).
int64_t first_non_finite_f32(const float* data, int64_t rows, int64_t dim, int num_threads);
int64_t first_non_finite_f16(const uint16_t* data, int64_t rows, int64_t dim, int num_threads);

// The walks' edge choice: a uniform integer in [0, range) for draw `which` (1 or 2) of hop `hop` of
// the walk from `start` (Philox keyed by seed; first word `which` of block 0, retries from blocks
// which, which + 2, ...). Exposed so that tests can check the rare paths (rejections, ranges of
// 2^32 or more) without graphs of that degree.
uint64_t walk_draw(uint64_t seed, int64_t start, uint32_t hop, uint32_t which, uint64_t range);

// Dot products of single vectors, exposed for tests of the vector code paths.
float dot_f32(const float* a, const float* b, int64_t dim);
float dot_f16(const uint16_t* a, const uint16_t* b, int64_t dim);

}  // namespace ramen
