// CSR structures (csr.h): their validation before the graph kernels run (one parallel pass, first
// problem reported) and the transpose of their structure.
#include "csr.h"

#include <algorithm>
#include <vector>

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

template <typename I>
void transpose_structure(const CsrView<I>& m, I* t_indptr, I* t_indices, int num_threads) {
    // Each task owns a range of columns and scans every edge, counting and then placing only its
    // own: a column's rows are written by one task in row order, so the output never depends on
    // the thread count. Scanning all edges per task is cheap (sequential) next to the scattered
    // writes it splits; ranges are capped so the repeated scans stay a small cost.
    const int64_t nnz = m.indptr[m.rows];
    const int64_t ranges = std::clamp<int64_t>(resolve_threads(num_threads), 1, std::min<int64_t>(8, m.cols + 1));
    const int64_t width = (m.cols + ranges - 1) / ranges;
    // body(lo, hi) for each column range [lo, hi), one task per range
    const auto per_range = [&](auto&& body) {
        parallel_for(ranges, 1, static_cast<int>(ranges), [&](int64_t begin, int64_t end) {
            for (int64_t range = begin; range < end; ++range)
                body(range * width, std::min<int64_t>(m.cols, range * width + width));
        });
    };
    std::fill(t_indptr, t_indptr + m.cols + 1, I{0});
    per_range([&](int64_t lo, int64_t hi) {
        for (int64_t e = 0; e < nnz; ++e) {
            const int64_t c = m.indices[e];
            if (c >= lo && c < hi) ++t_indptr[c + 1];
        }
    });
    for (int64_t c = 0; c < m.cols; ++c) t_indptr[c + 1] += t_indptr[c];
    std::vector<I> cursor(t_indptr, t_indptr + m.cols);
    per_range([&](int64_t lo, int64_t hi) {
        for (int64_t r = 0; r < m.rows; ++r)
            for (int64_t e = m.indptr[r]; e < m.indptr[r + 1]; ++e) {
                const int64_t c = m.indices[e];
                if (c >= lo && c < hi) t_indices[cursor[c]++] = static_cast<I>(r);
            }
    });
}

template void transpose_structure(const CsrView<int32_t>&, int32_t*, int32_t*, int);
template void transpose_structure(const CsrView<int64_t>&, int64_t*, int64_t*, int);

}  // namespace ramen
