// Fused in-batch hard-negative triplet scoring over a score matrix S = q c^T (rows x cols).
//
// For row i with positive columns P_i (a set: duplicate ids count once) and excluded columns E_i,
// the candidates are the columns in neither set and N_i holds the `num_negatives` highest-scoring
// candidates (all of them when num_negatives <= 0). Among equal scores the lower column id ranks
// higher, so N_i is always well defined. A column that is both positive and excluded is positive.
//
//   loss[i]  = sum_{p in P_i} sum_{n in N_i} w_ipn * relu(S_in - S_ip + margin)
//   grad[i]  = d loss[i] / d S[i, :]            (the weights w held constant; relu'(0) = 0)
//   count[i] = |P_i| * |N_i|                    (the number of (i, p, n) triplets)
//
// w_ipn = 1, or with temperature > 0 the softmax of S_in / temperature over the negatives n that
// violate the margin for (i, p) (NGAME's "aggressive" mode). Rows without positives give zeros.
#pragma once

#include <cstdint>
#include <vector>

namespace ramen {

// Per-row column sets (a row's positives, or its excluded columns), given as CSR (indptr
// [rows + 1], indices [nnz], column ids, duplicates allowed) or as a dense row-major mask
// (rows x cols, nonzero = member). With neither, every row's set is empty.
struct ColumnSets {
    const int64_t* indptr = nullptr;
    const int64_t* indices = nullptr;
    int64_t nnz = 0;
    const uint8_t* mask = nullptr;
};

struct TripletOptions {
    double margin = 0.3;        // hinge margin, >= 0
    int64_t num_negatives = 0;  // hardest negatives per row; <= 0 means every candidate
    double temperature = 0.0;   // > 0: softmax-weighted hinges; 0: plain hinges
};

// G = dloss/dS as compressed sparse rows: row i's nonzeros are at columns
// indices[indptr[i] .. indptr[i + 1]) with the matching values. With num_negatives = k > 0 a row
// has at most k + |P_i| of them (its selected negatives, then its positives).
template <typename T>
struct SparseGrad {
    std::vector<int64_t> indptr;  // [rows + 1]
    std::vector<int64_t> indices;
    std::vector<T> values;
};

// CPU kernel, T = float or double. Writes loss [rows] and count [rows], and G either densely into
// grad [rows x cols] (every entry; sparse == nullptr) or into *sparse, when given, with grad then
// used as scratch (its contents unspecified on return). grad may be the scores' memory (computed
// in place). Rows are spread over num_threads threads (<= 0: all); the output does not depend on
// the thread count, nor G's values on the form it is written in. Throws std::invalid_argument on
// a non-finite score, a column id outside [0, cols) or a malformed indptr.
template <typename T>
void triplet_mine_cpu(const T* scores, int64_t rows, int64_t cols, const ColumnSets& positives,
                      const ColumnSets& exclude, const TripletOptions& options, T* loss, T* grad,
                      int64_t* count, int num_threads, SparseGrad<T>* sparse = nullptr);

// The backward products from a sparse G (rows x cols; CSR arrays as in SparseGrad, nnz entries):
//   dq = scale * diag(row_scale) G c     (rows x dim), written when dq != nullptr
//   dc = scale * G^T diag(row_scale) q   (cols x dim), written when dc != nullptr
// q (rows x dim) and c (cols x dim) row-major; row_scale [rows] may be null (all ones). Each
// output row sums its terms in a fixed order (dq: the row's entries in order; dc: ascending rows
// of G), so the result does not depend on num_threads. Throws std::invalid_argument on a
// malformed indptr or a column id outside [0, cols).
template <typename T>
void triplet_sparse_backward_cpu(const int64_t* indptr, const int64_t* indices, const T* values, int64_t nnz,
                                 int64_t rows, int64_t cols, const T* q, const T* c, int64_t dim,
                                 const T* row_scale, T scale, T* dq, T* dc, int num_threads);

// Scalar types of the CUDA kernel's scores and grad (the loss is always float32).
enum class CudaDType : int { float32 = 0, float16 = 1, bfloat16 = 2 };

// CUDA kernel: every pointer is device memory on `device`; the work is queued on `stream` (a
// cudaStream_t passed as an integer) and the host is never synchronised. grad may be the scores'
// memory. One block per row, its working set (13 bytes a column) in shared memory up to
// triplet_cuda_max_cols (about 12.8K columns on an A100, 17.8K on an H100) and in a global-memory
// workspace (stream-ordered, at most 256 MiB a launch) for wider rows, so any cols < 2^31 works
// (triplet_launch.h). Bad input cannot be reported without a synchronisation, so a row with a
// non-finite score, a column id outside [0, cols) or a malformed indptr gets a NaN loss and a NaN
// grad row instead (the Python layer checks first).
void triplet_mine_cuda(CudaDType dtype, const void* scores, int64_t rows, int64_t cols,
                       const ColumnSets& positives, const ColumnSets& exclude,
                       const TripletOptions& options, float* loss, void* grad, int64_t* count,
                       int device, std::uintptr_t stream);

// The widest rows (cols) whose working set the CUDA kernel keeps in shared memory on `device`
// (wider rows take the global-memory path); device attributes are queried once per device.
int64_t triplet_cuda_max_cols(int device);

}  // namespace ramen
