// Random walks with restart over CSR structure (unipartite and bipartite), with top-k visit
// counts per start.
//
// Plain functions over raw pointers and sizes, templated over the index type (int32_t or int64_t)
// so that scipy's arrays are used as they are. Every walk gives the same output for any number of
// threads: random draws are keyed by (seed, start node, hop), never taken from a shared stream.
#pragma once

#include <cstdint>
#include <functional>

#include "buffer.h"
#include "csr.h"

namespace ramen {

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

// The walks' edge choice: a uniform integer in [0, range) for draw `which` (1 or 2) of hop `hop` of
// the walk from `start` (Philox keyed by seed; first word `which` of block 0, retries from blocks
// which, which + 2, ...). Exposed so that tests can check the rare paths (rejections, ranges of
// 2^32 or more) without graphs of that degree.
uint64_t walk_draw(uint64_t seed, int64_t start, uint32_t hop, uint32_t which, uint64_t range);

}  // namespace ramen
