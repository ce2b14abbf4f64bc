// Backward products of the triplet op from a sparse G (see triplet.h): dq = G c row by row, and
// dc = G^T q by column ownership (G transposed by a counting sort that keeps rows ascending, then
// each column's output row summed by one thread). No atomics, no per-thread partial sums: every
// output element is a sum in a fixed order, whatever the thread count.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "parallel.h"
#include "triplet.h"

namespace ramen {
namespace {

constexpr int64_t kOutRowsPerChunk = 16;

// out[0, n) += a * x[0, n)
template <typename T>
inline void axpy(T* __restrict out, T a, const T* __restrict x, int64_t n) {
    for (int64_t d = 0; d < n; ++d) out[d] += a * x[d];
}

template <typename T>
inline void scale_row(T* out, T s, int64_t n) {
    if (s != T(1))
        for (int64_t d = 0; d < n; ++d) out[d] *= s;
}

void check_sparse(const int64_t* indptr, const int64_t* indices, int64_t nnz, int64_t rows, int64_t cols) {
    if (rows < 0 || cols < 0 || nnz < 0) throw std::invalid_argument("sparse grad: negative shape");
    if (indptr[0] != 0 || indptr[rows] != nnz)
        throw std::invalid_argument("sparse grad: indptr must start at 0 and end at nnz = " + std::to_string(nnz));
    for (int64_t i = 0; i < rows; ++i)
        if (indptr[i + 1] < indptr[i])
            throw std::invalid_argument("sparse grad: indptr decreases at row " + std::to_string(i));
    for (int64_t t = 0; t < nnz; ++t)
        if (indices[t] < 0 || indices[t] >= cols)
            throw std::invalid_argument("sparse grad: column id " + std::to_string(indices[t]) + " outside [0, " +
                                        std::to_string(cols) + ")");
}

}  // namespace

template <typename T>
void triplet_sparse_backward_cpu(const int64_t* indptr, const int64_t* indices, const T* values, int64_t nnz,
                                 int64_t rows, int64_t cols, const T* q, const T* c, int64_t dim,
                                 const T* row_scale, T scale, T* dq, T* dc, int num_threads) {
    if (dim < 0) throw std::invalid_argument("sparse grad: negative dimension");
    check_sparse(indptr, indices, nnz, rows, cols);
    const auto rs = [&](int64_t i) { return row_scale != nullptr ? row_scale[i] : T(1); };
    if (dq != nullptr) {
        parallel_for(rows, kOutRowsPerChunk, num_threads, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
                T* out = dq + i * dim;
                std::fill(out, out + dim, T(0));
                for (int64_t t = indptr[i]; t < indptr[i + 1]; ++t) axpy(out, values[t], c + indices[t] * dim, dim);
                scale_row(out, scale * rs(i), dim);
            }
        });
    }
    if (dc == nullptr) return;
    // G^T as CSR over columns: a stable counting sort of the entries by column (rows ascending)
    std::vector<int64_t> col_ptr(cols + 1, 0);
    for (int64_t t = 0; t < nnz; ++t) ++col_ptr[indices[t] + 1];
    for (int64_t j = 0; j < cols; ++j) col_ptr[j + 1] += col_ptr[j];
    std::vector<int64_t> next(col_ptr.begin(), col_ptr.end() - 1), row_of(nnz);
    std::vector<T> value_of(nnz);
    for (int64_t i = 0; i < rows; ++i)
        for (int64_t t = indptr[i]; t < indptr[i + 1]; ++t) {
            const int64_t at = next[indices[t]]++;
            row_of[at] = i;
            value_of[at] = values[t] * rs(i);
        }
    parallel_for(cols, kOutRowsPerChunk, num_threads, [&](int64_t begin, int64_t end) {
        for (int64_t j = begin; j < end; ++j) {
            T* out = dc + j * dim;
            std::fill(out, out + dim, T(0));
            for (int64_t e = col_ptr[j]; e < col_ptr[j + 1]; ++e) axpy(out, value_of[e], q + row_of[e] * dim, dim);
            scale_row(out, scale, dim);
        }
    });
}

template void triplet_sparse_backward_cpu<float>(const int64_t*, const int64_t*, const float*, int64_t, int64_t,
                                                 int64_t, const float*, const float*, int64_t, const float*, float,
                                                 float*, float*, int);
template void triplet_sparse_backward_cpu<double>(const int64_t*, const int64_t*, const double*, int64_t, int64_t,
                                                  int64_t, const double*, const double*, int64_t, const double*,
                                                  double, double*, double*, int);

}  // namespace ramen
