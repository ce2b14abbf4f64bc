// Edge pruning by the dot product of endpoint embeddings (float32 or IEEE half), see prune.h.
//
// Each edge reads its column's embedding at random: with millions of columns that is a cache and
// TLB miss per edge, and the kernel is bound by memory latency, not bandwidth. Two edge orders:
// plain CSR order (rows stream, the next few edges' column rows are prefetched), or, inside blocks
// of edges, order of column bucket (a counting sort on column >> shift, buckets of about
// kBucketBytes of column rows), so a bucket's rows are reused from L2 and its pages stay mapped.
// Which is faster depends on the machine (the bucket order won 1.27x on an Intel Xeon and lost
// 25% on an AMD Zen 4), so by default a timed trial on the call's own first blocks picks it.
// Each edge's dot product is the same whatever the order, so the output does not depend on the
// order, the block size or the thread count. The dot products are dot.h's.
#include "prune.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "csr.h"
#include "dot.h"
#include "parallel.h"
#include "prefetch.h"

namespace ramen {
namespace {

constexpr int kPrefetchEdges = 8;                  // how many edges ahead the embedding rows are fetched
constexpr int64_t kMaxEdgesPerBlock = int64_t{1} << 18;  // edges reordered together (12 bytes of scratch each)
constexpr int64_t kMinEdgesPerBlock = int64_t{1} << 14;
constexpr int64_t kBucketBytes = int64_t{1} << 18;     // column rows per bucket: about this many bytes (in L2)
constexpr int64_t kMaxBuckets = int64_t{1} << 16;
constexpr int64_t kMinEdgesToTrial = int64_t{1} << 22; // smaller graphs take the CSR order untimed

// log2 of the columns per bucket: about kBucketBytes of column rows, at most kMaxBuckets buckets.
int bucket_shift(int64_t cols, int64_t row_bytes) {
    int shift = 0;
    while ((int64_t{2} << shift) * row_bytes <= kBucketBytes) ++shift;
    while (((cols - 1) >> shift) + 1 > kMaxBuckets) ++shift;
    return shift;
}

// Edges per block: a few blocks per thread for balance, few enough edges to keep the scratch small.
int64_t edges_per_block(int64_t nnz, int num_threads) {
    const int64_t per_thread = (nnz + 4 * int64_t{num_threads} - 1) / (4 * int64_t{num_threads});
    return std::clamp(per_thread, kMinEdgesPerBlock, kMaxEdgesPerBlock);
}

// The edges [e0, e1) as offsets from e0 in order of column bucket (stable: rows ascend in a
// bucket), and the row of each edge.
template <typename I>
void order_by_bucket(const CsrView<I>& E, int64_t e0, int64_t e1, int shift, std::vector<int32_t>& order,
                     std::vector<int64_t>& row_of) {
    const int64_t n = e1 - e0;
    int64_t r = std::upper_bound(E.indptr, E.indptr + E.rows + 1, static_cast<I>(e0)) - E.indptr - 1;
    int64_t row_end = E.indptr[r + 1];
    std::vector<int64_t> start(static_cast<size_t>(((E.cols - 1) >> shift) + 2), 0);
    for (int64_t e = e0; e < e1; ++e) {
        while (e >= row_end) row_end = E.indptr[++r + 1];
        row_of[e - e0] = r;
        ++start[(static_cast<int64_t>(E.indices[e]) >> shift) + 1];
    }
    for (size_t b = 1; b < start.size(); ++b) start[b] += start[b - 1];
    for (int64_t i = 0; i < n; ++i) order[start[static_cast<int64_t>(E.indices[e0 + i]) >> shift]++] = static_cast<int32_t>(i);
}

// Scores the edges [e0, e1) in CSR order: each row's embedding is read once, the column rows of
// the next kPrefetchEdges edges are prefetched.
template <typename I, typename T>
void score_csr_order(const CsrView<I>& E, const T* row_emb, const T* col_emb, int64_t dim, float threshold,
                     int64_t e0, int64_t e1, uint8_t* keep) {
    const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(T));
    auto col_row = [&](int64_t e) { return col_emb + static_cast<int64_t>(E.indices[e]) * dim; };
    for (int64_t e = e0; e < std::min(e1, e0 + kPrefetchEdges); ++e) prefetch_lines(col_row(e), row_bytes);
    int64_t r = std::upper_bound(E.indptr, E.indptr + E.rows + 1, static_cast<I>(e0)) - E.indptr - 1;
    for (int64_t e = e0; e < e1; ++r) {
        const int64_t row_end = std::min<int64_t>(E.indptr[r + 1], e1);
        const T* row = row_emb + r * dim;
        if (r + 1 < E.rows) prefetch_lines(row + dim, row_bytes);
        for (; e < row_end; ++e) {
            if (e + kPrefetchEdges < e1) prefetch_lines(col_row(e + kPrefetchEdges), row_bytes);
            keep[e] = dot(row, col_row(e), dim) > threshold ? 1 : 0;
        }
    }
}

// Scores the edges [e0, e1) in order of column bucket (`shift`: log2 of the columns per bucket).
template <typename I, typename T>
void score_bucket_order(const CsrView<I>& E, const T* row_emb, const T* col_emb, int64_t dim, float threshold,
                        int shift, int64_t e0, int64_t e1, uint8_t* keep) {
    const int64_t n = e1 - e0;
    const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(T));
    std::vector<int32_t> order(static_cast<size_t>(n));
    std::vector<int64_t> row_of(static_cast<size_t>(n));
    order_by_bucket(E, e0, e1, shift, order, row_of);
    auto col_row = [&](int64_t i) { return col_emb + static_cast<int64_t>(E.indices[e0 + order[i]]) * dim; };
    auto row_row = [&](int64_t i) { return row_emb + row_of[order[i]] * dim; };
    for (int64_t i = 0; i < std::min<int64_t>(n, kPrefetchEdges); ++i) {
        prefetch_lines(col_row(i), row_bytes);
        prefetch_lines(row_row(i), row_bytes);
    }
    for (int64_t i = 0; i < n; ++i) {
        if (i + kPrefetchEdges < n) {
            prefetch_lines(col_row(i + kPrefetchEdges), row_bytes);
            prefetch_lines(row_row(i + kPrefetchEdges), row_bytes);
        }
        keep[e0 + order[i]] = dot(row_row(i), col_row(i), dim) > threshold ? 1 : 0;
    }
}

// The median of a non-empty sample (the mean of the middle two for an even count): a block
// stalled by another process weighs no more than any other.
double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

template <typename I, typename T>
PruneOrder prune_mask(const CsrView<I>& E, const T* row_emb, const T* col_emb, int64_t dim, float threshold,
                      PruneOrder order, int num_threads, uint8_t* keep, int64_t* row_kept) {
    const int64_t nnz = E.indptr[E.rows];
    const int64_t row_bytes = dim * static_cast<int64_t>(sizeof(T));
    const int threads = resolve_threads(num_threads);
    const int shift = bucket_shift(std::max<int64_t>(E.cols, 1), std::max<int64_t>(row_bytes, 1));
    auto score = [&](PruneOrder how, int64_t e0, int64_t e1) {
        if (how == PruneOrder::kBucket)
            score_bucket_order(E, row_emb, col_emb, dim, threshold, shift, e0, e1, keep);
        else
            score_csr_order(E, row_emb, col_emb, dim, threshold, e0, e1, keep);
    };
    const int64_t block = edges_per_block(nnz, threads);
    int64_t done = 0;  // edges scored by the order trial
    if (order == PruneOrder::kAuto) {
        order = PruneOrder::kCsr;
        // The first blocks, in both orders (CSR-bucket-bucket-CSR repeated, so that a drift along
        // the graph or in the machine's load weighs on both alike), timed at full size and on all
        // threads as the rest will run; their verdicts are kept.
        const int64_t trials = std::min<int64_t>(8 * ((threads + 1) / 2), nnz / (2 * block) / 4 * 4);
        if (nnz >= kMinEdgesToTrial && trials >= 4) {
            auto trial_order = [](int64_t c) { return c % 4 == 1 || c % 4 == 2 ? PruneOrder::kBucket : PruneOrder::kCsr; };
            std::vector<double> seconds(static_cast<size_t>(trials));
            parallel_for(trials * block, block, threads, [&](int64_t e0, int64_t e1) {
                const auto t0 = std::chrono::steady_clock::now();
                score(trial_order(e0 / block), e0, e1);
                seconds[e0 / block] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
            });
            std::vector<double> csr, bucket;
            for (int64_t c = 0; c < trials; ++c) (trial_order(c) == PruneOrder::kBucket ? bucket : csr).push_back(seconds[c]);
            if (median(bucket) < 0.95 * median(csr)) order = PruneOrder::kBucket;  // near-ties keep the simpler order
            done = trials * block;
        }
    }
    parallel_for(nnz - done, block, threads, [&](int64_t e0, int64_t e1) { score(order, done + e0, done + e1); });
    parallel_for(E.rows, 1 << 16, threads, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
            int64_t kept = 0;
            for (int64_t e = E.indptr[r]; e < E.indptr[r + 1]; ++e) kept += keep[e];
            row_kept[r] = kept;
        }
    });
    return order;
}

// Whether an IEEE value has all exponent bits set (an infinity or a NaN), on its bits.
inline uint32_t non_finite(uint32_t bits) { return (bits & 0x7F800000u) == 0x7F800000u; }
inline uint32_t non_finite(uint16_t bits) { return (bits & 0x7C00u) == 0x7C00u; }

// The first row holding a NaN or an infinity (exponent bits all ones), or -1; one parallel pass.
template <typename Bits>
int64_t first_non_finite(const Bits* data, int64_t rows, int64_t dim, int num_threads) {
    const int64_t chunk = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(dim, 1));
    std::vector<int64_t> first(static_cast<size_t>((rows + chunk - 1) / chunk), -1);
    parallel_for(rows, chunk, num_threads, [&](int64_t r0, int64_t r1) {
        const Bits* p = data + r0 * dim;
        const int64_t n = (r1 - r0) * dim;
        uint32_t bad = 0;
        for (int64_t i = 0; i < n; ++i) bad |= non_finite(p[i]);  // a branch-free reduction: vectorises
        if (bad == 0) return;
        for (int64_t r = r0; r < r1; ++r)
            for (int64_t j = 0; j < dim; ++j)
                if (non_finite(data[r * dim + j])) {
                    first[static_cast<size_t>(r0 / chunk)] = r;
                    return;
                }
    });
    for (const int64_t r : first)
        if (r >= 0) return r;
    return -1;
}

template <typename T>
struct Tag {
    using type = T;
};

// Copies the kept edges of rows [r0, r1); Word is the entry's data as raw bits (void: no data).
template <typename I, typename Word>
void compact_rows(const CsrView<I>& E, const uint8_t* keep, const int64_t* new_indptr, I* out_indices,
                  const Word* data, Word* out_data, int64_t r0, int64_t r1) {
    // Branch-free: every edge is written at the next free slot, which only a kept edge claims (a
    // branch on a verdict that is kept about half the time would mispredict at every other edge).
    // The rare guard keeps the write inside this range's slots, which the next range owns beyond.
    int64_t out = new_indptr[r0];
    const int64_t end = new_indptr[r1];
    for (int64_t e = E.indptr[r0]; e < E.indptr[r1] && out < end; ++e) {
        out_indices[out] = E.indices[e];
        if constexpr (!std::is_void_v<Word>) out_data[out] = data[e];
        out += keep[e] != 0;
    }
}

}  // namespace

int64_t first_non_finite_f32(const float* data, int64_t rows, int64_t dim, int num_threads) {
    return first_non_finite(reinterpret_cast<const uint32_t*>(data), rows, dim, num_threads);
}
int64_t first_non_finite_f16(const uint16_t* data, int64_t rows, int64_t dim, int num_threads) {
    return first_non_finite(data, rows, dim, num_threads);
}

template <typename I>
void compact_edges(const CsrView<I>& E, const uint8_t* keep, const int64_t* new_indptr, I* out_indices,
                   const void* data, int64_t itemsize, void* out_data, int num_threads) {
    auto run = [&](auto word) {
        using Word = typename decltype(word)::type;
        parallel_for(E.rows, 1 << 14, num_threads, [&](int64_t r0, int64_t r1) {
            compact_rows<I, Word>(E, keep, new_indptr, out_indices, static_cast<const Word*>(data),
                                  static_cast<Word*>(out_data), r0, r1);
        });
    };
    switch (itemsize) {
        case 0: return run(Tag<void>{});
        case 1: return run(Tag<uint8_t>{});
        case 2: return run(Tag<uint16_t>{});
        case 4: return run(Tag<uint32_t>{});
        case 8: return run(Tag<uint64_t>{});
        default: throw std::invalid_argument("compact_edges: itemsize must be 0, 1, 2, 4 or 8");
    }
}

template <typename I>
PruneOrder prune_mask_f32(const CsrView<I>& E, const float* row_emb, const float* col_emb, int64_t dim,
                          float threshold, PruneOrder order, int num_threads, uint8_t* keep, int64_t* row_kept) {
    return prune_mask<I, float>(E, row_emb, col_emb, dim, threshold, order, num_threads, keep, row_kept);
}

template <typename I>
PruneOrder prune_mask_f16(const CsrView<I>& E, const uint16_t* row_emb, const uint16_t* col_emb, int64_t dim,
                          float threshold, PruneOrder order, int num_threads, uint8_t* keep, int64_t* row_kept) {
    return prune_mask<I, uint16_t>(E, row_emb, col_emb, dim, threshold, order, num_threads, keep, row_kept);
}

template PruneOrder prune_mask_f32(const CsrView<int32_t>&, const float*, const float*, int64_t, float, PruneOrder,
                                   int, uint8_t*, int64_t*);
template PruneOrder prune_mask_f32(const CsrView<int64_t>&, const float*, const float*, int64_t, float, PruneOrder,
                                   int, uint8_t*, int64_t*);
template PruneOrder prune_mask_f16(const CsrView<int32_t>&, const uint16_t*, const uint16_t*, int64_t, float,
                                   PruneOrder, int, uint8_t*, int64_t*);
template PruneOrder prune_mask_f16(const CsrView<int64_t>&, const uint16_t*, const uint16_t*, int64_t, float,
                                   PruneOrder, int, uint8_t*, int64_t*);

template void compact_edges(const CsrView<int32_t>&, const uint8_t*, const int64_t*, int32_t*, const void*, int64_t,
                            void*, int);
template void compact_edges(const CsrView<int64_t>&, const uint8_t*, const int64_t*, int64_t*, const void*, int64_t,
                            void*, int);

}  // namespace ramen
