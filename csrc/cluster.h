// Balanced clusters of unit vectors (NGAME's batches): recursive balanced 2-means on cosine.
//
// A part of m rows is split around two centroids into the `first` rows that prefer the first
// centroid most (first = cluster_size * (clusters / 2), clusters = ceil(m / cluster_size)) and the
// rest, until every part holds at most cluster_size rows: every cluster then holds exactly
// cluster_size rows but one. A part's two starting rows come from Philox keyed by the seed and the
// part's place in the tree, ties are broken by row id and sums run in fixed chunks, so the output
// is the same for any number of threads.
#pragma once

#include <cstdint>

namespace ramen {

// Row ids of emb (n x dim, row-major float32, finite) in `order` (n entries), clusters contiguous
// from left to right, cluster c at order[starts[c] .. starts[c + 1]) (starts: clusters + 1 entries,
// clusters = ceil(n / cluster_size), 0 for n = 0). `iters` >= 1 assignment rounds a split at most
// (it stops early once the assignment repeats); cluster_size >= 1.
void balanced_clusters_f32(const float* emb, int64_t n, int64_t dim, int64_t cluster_size, uint64_t seed,
                           int iters, int num_threads, int64_t* order, int64_t* starts);

// The number of clusters balanced_clusters_f32 makes of n rows.
inline int64_t cluster_count(int64_t n, int64_t cluster_size) {
    return n <= 0 ? 0 : 1 + (n - 1) / cluster_size;  // no n + cluster_size - 1: it could overflow
}

}  // namespace ramen
