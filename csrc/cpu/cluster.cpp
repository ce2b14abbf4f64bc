// Balanced recursive 2-means (see cluster.h): a tree of splits run a level at a time, the parts of
// a level in parallel, or the rows of a part in parallel while a level has fewer parts than threads.
#include "cluster.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "dot.h"
#include "parallel.h"
#include "rwr.h"

namespace ramen {
namespace {

constexpr int64_t kChunk = 2048;  // rows of a part per chunk of its scores and partial sums: fixes the sums' order

struct Part {
    int64_t lo, hi;  // order[lo, hi)
    uint64_t key;    // the place in the tree: the root 0, the children of k 2k + 1 and 2k + 2
};

// The rows a split of m rows sends to its first side: a whole number of clusters, half of them.
int64_t first_side(int64_t m, int64_t cluster_size) {
    return cluster_size * (cluster_count(m, cluster_size) / 2);
}

// The unit direction of a sum (kept as it is when its norm is below 1e-12).
void normalise(const double* sum, int64_t dim, float* out) {
    double norm = 0.0;
    for (int64_t d = 0; d < dim; ++d) norm += sum[d] * sum[d];
    const double scale = 1.0 / std::max(std::sqrt(norm), 1e-12);
    for (int64_t d = 0; d < dim; ++d) out[d] = static_cast<float>(sum[d] * scale);
}

// Splits rows[0, m) in place: the `first` rows nearest the first centroid by preference for it
// over the second (score = x . (c1 - c2), ties to the lower row id) first, in their order, then
// the rest in theirs; each round recomputes both centroids from the assignment.
void split(const float* emb, int64_t dim, int64_t* rows, int64_t m, int64_t first, uint64_t seed,
           uint64_t key, int iters, int threads) {
    const uint64_t a = walk_draw(seed, static_cast<int64_t>(key), 0, 1, static_cast<uint64_t>(m));
    uint64_t b = walk_draw(seed, static_cast<int64_t>(key), 0, 2, static_cast<uint64_t>(m - 1));
    if (b >= a) ++b;
    std::vector<float> c1(emb + rows[a] * dim, emb + (rows[a] + 1) * dim);
    std::vector<float> c2(emb + rows[b] * dim, emb + (rows[b] + 1) * dim);
    std::vector<float> w(dim), score(m);
    std::vector<int64_t> pos(m);
    std::vector<uint8_t> side(m, 0), last(m, 0);
    const int64_t chunks = (m + kChunk - 1) / kChunk;
    std::vector<double> partial(static_cast<size_t>(2 * chunks * dim));
    std::vector<double> sum1(dim), sum2(dim);
    const auto order_key = [&](int64_t x) {  // a NaN score (rows far from unit length can overflow) ranks last
        return std::isnan(score[x]) ? -std::numeric_limits<float>::infinity() : score[x];
    };
    const auto before = [&](int64_t x, int64_t y) {  // a strict weak order: key descending, then row id
        const float kx = order_key(x), ky = order_key(y);
        return kx > ky || (kx == ky && rows[x] < rows[y]);
    };
    for (int round = 0; round < iters; ++round) {
        for (int64_t d = 0; d < dim; ++d) w[d] = c1[d] - c2[d];
        parallel_for(m, kChunk, threads, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) score[i] = dot_f32(emb + rows[i] * dim, w.data(), dim);
        });
        std::iota(pos.begin(), pos.end(), int64_t{0});
        std::nth_element(pos.begin(), pos.begin() + first, pos.end(), before);
        std::fill(side.begin(), side.end(), uint8_t{0});
        for (int64_t i = 0; i < first; ++i) side[pos[i]] = 1;
        if ((round > 0 && side == last) || round + 1 == iters) break;  // a repeat: every later round repeats it
        last.swap(side);
        parallel_for(m, kChunk, threads, [&](int64_t begin, int64_t end) {
            double* p1 = partial.data() + 2 * (begin / kChunk) * dim;
            double* p2 = p1 + dim;
            std::fill(p1, p1 + 2 * dim, 0.0);
            for (int64_t i = begin; i < end; ++i) {
                const float* x = emb + rows[i] * dim;
                double* p = last[i] ? p1 : p2;
                for (int64_t d = 0; d < dim; ++d) p[d] += x[d];
            }
        });
        std::fill(sum1.begin(), sum1.end(), 0.0);
        std::fill(sum2.begin(), sum2.end(), 0.0);
        for (int64_t c = 0; c < chunks; ++c)  // in chunk order: the same sums for any thread count
            for (int64_t d = 0; d < dim; ++d) {
                sum1[d] += partial[(2 * c) * dim + d];
                sum2[d] += partial[(2 * c + 1) * dim + d];
            }
        normalise(sum1.data(), dim, c1.data());
        normalise(sum2.data(), dim, c2.data());
    }
    std::vector<int64_t> sorted;
    sorted.reserve(m);
    for (int64_t i = 0; i < m; ++i)
        if (side[i]) sorted.push_back(rows[i]);
    for (int64_t i = 0; i < m; ++i)
        if (!side[i]) sorted.push_back(rows[i]);
    std::copy(sorted.begin(), sorted.end(), rows);
}

}  // namespace

void balanced_clusters_f32(const float* emb, int64_t n, int64_t dim, int64_t cluster_size, uint64_t seed,
                           int iters, int num_threads, int64_t* order, int64_t* starts) {
    if (n < 0 || dim < 1) throw std::invalid_argument("emb must have rows >= 0 and dim >= 1");
    if (cluster_size < 1) throw std::invalid_argument("cluster_size must be >= 1");
    if (iters < 1) throw std::invalid_argument("iters must be >= 1");
    std::iota(order, order + n, int64_t{0});
    const int threads = resolve_threads(num_threads);
    std::vector<Part> level{{0, n, 0}}, leaves;
    if (n == 0) level.clear();
    while (!level.empty()) {
        std::vector<Part> parts;  // the level's parts that split
        for (const Part& p : level) (p.hi - p.lo <= cluster_size ? leaves : parts).push_back(p);
        const auto run = [&](const Part& p, int t) {
            split(emb, dim, order + p.lo, p.hi - p.lo, first_side(p.hi - p.lo, cluster_size), seed, p.key, iters, t);
        };
        if (static_cast<int64_t>(parts.size()) >= threads) {
            parallel_for(static_cast<int64_t>(parts.size()), 1, threads, [&](int64_t begin, int64_t end) {
                for (int64_t i = begin; i < end; ++i) run(parts[i], 1);
            });
        } else {
            for (const Part& p : parts) run(p, threads);
        }
        level.clear();
        for (const Part& p : parts) {
            const int64_t mid = p.lo + first_side(p.hi - p.lo, cluster_size);
            level.push_back({p.lo, mid, 2 * p.key + 1});
            level.push_back({mid, p.hi, 2 * p.key + 2});
        }
    }
    std::sort(leaves.begin(), leaves.end(), [](const Part& x, const Part& y) { return x.lo < y.lo; });
    for (size_t c = 0; c < leaves.size(); ++c) starts[c] = leaves[c].lo;
    starts[leaves.size()] = n;
}

}  // namespace ramen
