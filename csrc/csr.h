// CSR structure as the kernels see it: a view over scipy's arrays (values are not used), its
// validation and its transpose.
//
// Plain functions over raw pointers and sizes, templated over the index type (int32_t or int64_t)
// so that scipy's arrays are used as they are.
#pragma once

#include <cstdint>

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

}  // namespace ramen
