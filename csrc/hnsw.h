// A hierarchical navigable small-world graph (HNSW, Malkov and Yashunin 2018) over unit vectors,
// scored by inner product (cosine), for the label index.
//
// The arrays belong to the caller (numpy), so that they can be saved, memory-mapped and grown
// from Python; the kernels only read and write them. Insertion runs in batches: every node of a
// batch searches the graph as it stood before the batch (read-only, so in parallel without
// locks), then each node that gains reverse links merges them on its own. The graph therefore
// depends only on the vectors, the insertion order and the levels, never on the number of threads.
//
// Searches may run while an insertion does (the label index lets them): the insertion writes the
// new nodes' rows in place, which no search of the old nodes reads, and returns its changes to the
// old nodes' rows instead of writing them, for the caller to copy in at once while no search runs.
#pragma once

#include <cstdint>
#include <vector>

namespace ramen {

// Node v's links at level 0: level0[v * (m0 + 1) + 1 ...], count in level0[v * (m0 + 1)];
// at level l in [1, level[v]]: upper[(upper_row[v] + l - 1) * (m + 1) + 1 ...], count first.
class LinkOverlay;

template <typename T>
struct HnswGraph {
    const T* vectors;          // (capacity, dim), unit rows (float or IEEE half bits)
    int64_t dim;
    int32_t* level0;           // (capacity, m0 + 1)
    int32_t* upper;            // (upper_rows, m + 1)
    int64_t upper_rows;        // rows of upper: a search never reads past them, whatever upper_row says
    const int8_t* level;       // (capacity,) top level of each node
    const int64_t* upper_row;  // (capacity,) first upper row of each node (unused for level 0)
    int m;                     // links per node above level 0
    int m0;                    // links per node at level 0
    LinkOverlay* overlay = nullptr;  // insertion only: its own copies of the old nodes' changed rows
};

// The entry point of the search: the first node of the highest level.
struct HnswEntry {
    int64_t node = -1;  // -1: empty graph
    int level = -1;
};

// What an insertion changes in the rows of the nodes that were already in the graph: the caller
// writes row `level0_nodes[i]` of level0 with `level0_links[i * (m0 + 1) ...]` and row
// `upper_rows[i]` of upper with `upper_links[i * (m + 1) ...]`, then makes `entry` and the new node
// count current.
struct HnswPending {
    HnswEntry entry;
    std::vector<int64_t> level0_nodes;
    std::vector<int32_t> level0_links;
    std::vector<int64_t> upper_rows;
    std::vector<int32_t> upper_links;
};

// Inserts nodes [begin, end) in the order `order` (a permutation of them; shuffled, so that near
// neighbours rarely share a batch). Their vectors, levels and upper rows are already written; nodes
// [0, begin) form the graph. ef_construction: search width. Writes the new nodes' rows and returns
// the new entry point with the old nodes' changed rows, which it leaves unwritten (see above).
template <typename T>
HnswPending hnsw_insert(const HnswGraph<T>& g, HnswEntry entry, int64_t begin, int64_t end, const int64_t* order,
                        int ef_construction, int num_threads);

// Top-k search of the graph's nodes [0, n) for each of `num_queries` unit float32 queries
// (num_queries, dim). Nodes with alive[v] == 0 are traversed but not returned (alive may be null).
// A corrupt graph cannot make it read out of bounds: links outside [0, n), link counts outside
// [0, m0] / [0, m], a link at level l to a node below l and upper rows outside `upper` are skipped.
// Writes rows (num_queries, k) best first, padded with -1, and their scores (inner products,
// padded with -inf).
template <typename T>
void hnsw_search(const HnswGraph<T>& g, HnswEntry entry, int64_t n, const uint8_t* alive, const float* queries,
                 int64_t num_queries, int k, int ef, int num_threads, int64_t* rows, float* scores);

}  // namespace ramen
