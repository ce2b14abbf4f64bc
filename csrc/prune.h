// Edge pruning by the dot product of endpoint embeddings (float32 or IEEE half bits), the
// compaction of the kept edges, and the finiteness check of the embeddings beforehand.
//
// Plain functions over raw pointers and sizes, templated over the index type (int32_t or int64_t)
// so that scipy's arrays are used as they are. The output never depends on the thread count or
// the edge order.
#pragma once

#include <cstdint>

#include "csr.h"

namespace ramen {

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

}  // namespace ramen
