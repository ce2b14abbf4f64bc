// Validation of CSR structures before the graph kernels run: one parallel pass, first problem reported.
#include <algorithm>
#include <vector>

#include "graph.h"
#include "parallel.h"

namespace ramen {
namespace {

constexpr int64_t kCheckChunk = 1 << 18;

// The smallest position in [0, n) where bad(i) holds, or -1: chunks in parallel, the first wins.
template <typename Bad>
int64_t first_bad(int64_t n, int num_threads, Bad&& bad) {
    std::vector<int64_t> first(static_cast<size_t>((n + kCheckChunk - 1) / kCheckChunk), -1);
    parallel_for(n, kCheckChunk, num_threads, [&](int64_t begin, int64_t end) {
        uint32_t any = 0;
        for (int64_t i = begin; i < end; ++i) any |= static_cast<uint32_t>(bad(i));  // branch-free: vectorises
        if (any == 0) return;
        for (int64_t i = begin; i < end; ++i)
            if (bad(i)) {
                first[static_cast<size_t>(begin / kCheckChunk)] = i;
                return;
            }
    });
    for (const int64_t i : first)
        if (i >= 0) return i;
    return -1;
}

}  // namespace

template <typename I>
CsrProblem check_csr(const I* indptr, int64_t rows, const I* indices, int64_t num_indices, int64_t cols,
                     int num_threads) {
    if (indptr[0] != 0) return {CsrProblem::kIndptrStart, 0, static_cast<int64_t>(indptr[0])};
    const int64_t row = first_bad(rows, num_threads, [&](int64_t r) { return indptr[r + 1] < indptr[r]; });
    if (row >= 0) return {CsrProblem::kIndptrDecreasing, row, static_cast<int64_t>(indptr[row + 1])};
    const int64_t nnz = indptr[rows];
    if (nnz > num_indices) return {CsrProblem::kIndptrEnd, rows, nnz};
    const int64_t at = first_bad(nnz, num_threads, [&](int64_t e) {
        return static_cast<uint64_t>(static_cast<int64_t>(indices[e])) >= static_cast<uint64_t>(cols);
    });
    if (at >= 0) return {CsrProblem::kIndexRange, at, static_cast<int64_t>(indices[at])};
    return {};
}

template CsrProblem check_csr(const int32_t*, int64_t, const int32_t*, int64_t, int64_t, int);
template CsrProblem check_csr(const int64_t*, int64_t, const int64_t*, int64_t, int64_t, int);

}  // namespace ramen
