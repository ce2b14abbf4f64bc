// Random walks with restart on CSR graphs, counted per start: see graph.h for the definitions.
//
// Each thread steps kLanes walkers in lockstep, one phase at a time (choose an edge, then read the
// node it leads to), prefetching what the next phase reads, so that the cache misses of a hop on
// a large graph overlap instead of following one another. The random words of a hop are Philox
// blocks keyed by (seed, start, hop), computed for all lanes at once (vectorised). A walker's
// landings go to a buffer, then are counted with a small open-addressing table, cut to the top k
// and emitted sorted by node id. Output rows are assembled batch by batch straight into the final
// CSR arrays, so memory stays at graph + output + per-thread scratch.
#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "graph.h"
#include "parallel.h"
#include "rng.h"

namespace ramen {
namespace {

constexpr int kLanes = 16;               // walkers stepped together by one thread
constexpr int64_t kVisitBudget = 16 << 20;  // bytes of landing buffer per thread (lanes x walk_length)

inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// Philox words of block 0 at counter (hop, start) for every lane: words[i][lane].
struct LaneWords {
    uint32_t w[4][kLanes];
};

// Same values as philox4x32(hop, lo[l], hi[l], 0, k0, k1) for each lane, written lane-innermost so
// that the compiler vectorises it (one 512-bit register per word).
void philox_lanes(uint32_t hop, const uint32_t* lo, const uint32_t* hi, uint64_t key, LaneWords& out) {
    uint32_t c0[kLanes], c1[kLanes], c2[kLanes], c3[kLanes];
    for (int l = 0; l < kLanes; ++l) {
        c0[l] = hop;
        c1[l] = lo[l];
        c2[l] = hi[l];
        c3[l] = 0;
    }
    uint32_t k0 = static_cast<uint32_t>(key), k1 = static_cast<uint32_t>(key >> 32);
    for (int round = 0; round < 10; ++round) {
        for (int l = 0; l < kLanes; ++l) {
            const uint64_t p0 = static_cast<uint64_t>(kPhiloxM0) * c0[l];
            const uint64_t p1 = static_cast<uint64_t>(kPhiloxM1) * c2[l];
            const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1[l] ^ k0;
            const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3[l] ^ k1;
            c1[l] = static_cast<uint32_t>(p1);
            c3[l] = static_cast<uint32_t>(p0);
            c0[l] = n0;
            c2[l] = n2;
        }
        k0 += kPhiloxW0;
        k1 += kPhiloxW1;
    }
    std::memcpy(out.w[0], c0, sizeof c0);
    std::memcpy(out.w[1], c1, sizeof c1);
    std::memcpy(out.w[2], c2, sizeof c2);
    std::memcpy(out.w[3], c3, sizeof c3);
}

// The walkers of one group: start nodes and their Philox stream (the start id, split in words).
struct Lanes {
    int n = 0;  // active lanes
    int64_t start[kLanes];
    uint32_t lo[kLanes], hi[kLanes];

    Lanes(const int64_t* starts, int count) : n(count) {
        for (int l = 0; l < kLanes; ++l) {
            start[l] = starts[l < count ? l : 0];
            lo[l] = static_cast<uint32_t>(start[l]);
            hi[l] = static_cast<uint32_t>(static_cast<uint64_t>(start[l]) >> 32);
        }
    }
};

// Uniform position in [lo, lo + deg) for draw `which` (1 or 2) of a hop: its first word comes from
// the precomputed block, rejections draw from blocks which, which + 2, ... of the same hop.
inline int64_t choose(int64_t lo, int64_t deg, uint32_t first_word, uint64_t key, int64_t start, uint32_t hop,
                      uint32_t which) {
    CounterStream retry(key, static_cast<uint64_t>(start), hop, which, 2);
    return lo + static_cast<int64_t>(uniform_below(static_cast<uint64_t>(deg), first_word, retry));
}

// Walks of up to kLanes starts on a square adjacency; landings to visits[lane * L + hop].
template <typename I>
void walk_unipartite(const CsrView<I>& g, const Lanes& lanes, const WalkOptions& o, I* visits) {
    const int64_t L = o.walk_length;
    const float r = o.restart_prob;
    const uint64_t key = o.seed;
    int64_t cur[kLanes], pos[kLanes];
    LaneWords now, next;
    philox_lanes(0, lanes.lo, lanes.hi, key, now);
    for (int64_t h = 0; h < L; ++h) {
        const uint32_t hop = static_cast<uint32_t>(h);
        for (int l = 0; l < lanes.n; ++l) {  // choose an out-edge (or none: dangling)
            const bool restart = h == 0 || uniform01(now.w[0][l]) < r;
            const int64_t x = restart ? lanes.start[l] : cur[l];
            const int64_t lo = g.indptr[x], deg = static_cast<int64_t>(g.indptr[x + 1]) - lo;
            if (deg == 0) {
                pos[l] = -1;
            } else {
                pos[l] = choose(lo, deg, now.w[1][l], key, lanes.start[l], hop, 1);
                prefetch(g.indices + pos[l]);
            }
        }
        const bool more = h + 1 < L;
        if (more) philox_lanes(hop + 1, lanes.lo, lanes.hi, key, next);
        for (int l = 0; l < lanes.n; ++l) {  // land
            const int64_t y = pos[l] < 0 ? lanes.start[l] : static_cast<int64_t>(g.indices[pos[l]]);
            cur[l] = y;
            visits[l * L + h] = static_cast<I>(y);
            if (more && !(uniform01(next.w[0][l]) < r)) prefetch(g.indptr + y);
        }
        std::swap(now, next);
    }
}

// Walks of up to kLanes starts over the columns of Y (Yt its transpose); see graph.h. A hop that
// lands nowhere (rows mode: a start row without columns) records -1.
template <typename I>
void walk_bipartite(const CsrView<I>& Y, const CsrView<I>& Yt, bool starts_are_rows, const Lanes& lanes,
                    const WalkOptions& o, I* visits) {
    const int64_t L = o.walk_length;
    const float r = o.restart_prob;
    const uint64_t key = o.seed;
    constexpr int64_t kDangling = -1, kFromStartRow = -2;
    int64_t cur[kLanes], row[kLanes], pos_a[kLanes], pos_b[kLanes];
    std::fill(cur, cur + kLanes, int64_t{-1});  // -1: not yet on a column (rows mode)
    LaneWords now, next;
    philox_lanes(0, lanes.lo, lanes.hi, key, now);
    for (int64_t h = 0; h < L; ++h) {
        const uint32_t hop = static_cast<uint32_t>(h);
        for (int l = 0; l < lanes.n; ++l) {  // column -> a linked row: choose the edge
            const bool restart = h == 0 || uniform01(now.w[0][l]) < r || cur[l] < 0;
            if (restart && starts_are_rows) {
                pos_a[l] = kFromStartRow;
                row[l] = lanes.start[l];
                prefetch(Y.indptr + row[l]);
                continue;
            }
            const int64_t col = restart ? lanes.start[l] : cur[l];
            const int64_t lo = Yt.indptr[col], deg = static_cast<int64_t>(Yt.indptr[col + 1]) - lo;
            if (deg == 0) {
                pos_a[l] = kDangling;
            } else {
                pos_a[l] = choose(lo, deg, now.w[1][l], key, lanes.start[l], hop, 1);
                prefetch(Yt.indices + pos_a[l]);
            }
        }
        for (int l = 0; l < lanes.n; ++l) {  // ... read the row
            if (pos_a[l] >= 0) {
                row[l] = Yt.indices[pos_a[l]];
                prefetch(Y.indptr + row[l]);
            }
        }
        const bool more = h + 1 < L;
        if (more) philox_lanes(hop + 1, lanes.lo, lanes.hi, key, next);
        for (int l = 0; l < lanes.n; ++l) {  // row -> a linked column: choose the edge
            if (pos_a[l] == kDangling) {
                pos_b[l] = kDangling;
                continue;
            }
            const int64_t lo = Y.indptr[row[l]], deg = static_cast<int64_t>(Y.indptr[row[l] + 1]) - lo;
            if (deg == 0) {
                pos_b[l] = kDangling;
            } else {
                pos_b[l] = choose(lo, deg, now.w[2][l], key, lanes.start[l], hop, 2);
                prefetch(Y.indices + pos_b[l]);
            }
        }
        for (int l = 0; l < lanes.n; ++l) {  // ... land on the column
            int64_t y;
            if (pos_b[l] >= 0) {
                y = Y.indices[pos_b[l]];
                cur[l] = y;
            } else {
                y = starts_are_rows ? -1 : lanes.start[l];
                cur[l] = starts_are_rows ? cur[l] : y;
            }
            visits[l * L + h] = static_cast<I>(y);
            if (more && y >= 0 && !(uniform01(next.w[0][l]) < r)) prefetch(Yt.indptr + y);
        }
        std::swap(now, next);
    }
}

// Visit counts of one walk: open addressing with linear probing, cleared slot by slot.
template <typename I>
class VisitCounter {
public:
    struct Slot {
        I id;
        uint32_t count;
    };

    explicit VisitCounter(int64_t expected_distinct) {
        int bits = 6;
        while ((int64_t{1} << bits) < 2 * expected_distinct && bits < 20) ++bits;
        rehash(bits);
    }

    void add(I id) {
        size_t s = slot_of(id);
        for (;;) {
            Slot& slot = slots_[s];
            if (slot.id == id) {
                ++slot.count;
                return;
            }
            if (slot.id == kEmpty) {
                slot = Slot{id, 1};
                used_.push_back(static_cast<uint32_t>(s));
                if (2 * used_.size() > slots_.size()) rehash(bits_ + 1);
                return;
            }
            s = (s + 1) & mask_;
        }
    }

    uint32_t count(I id) const {
        for (size_t s = slot_of(id);; s = (s + 1) & mask_) {
            if (slots_[s].id == id) return slots_[s].count;
            if (slots_[s].id == kEmpty) return 0;
        }
    }

    template <typename F>
    void for_each(F&& f) const {
        for (const uint32_t s : used_) f(slots_[s]);
    }

    void clear() {
        for (const uint32_t s : used_) slots_[s].id = kEmpty;
        used_.clear();
    }

private:
    static constexpr I kEmpty = -1;

    size_t slot_of(I id) const {
        return static_cast<size_t>((static_cast<uint64_t>(id) * 0x9E3779B97F4A7C15ull) >> (64 - bits_));
    }

    void rehash(int bits) {
        std::vector<Slot> old;
        old.swap(slots_);
        std::vector<uint32_t> old_used;
        old_used.swap(used_);
        bits_ = bits;
        mask_ = (size_t{1} << bits) - 1;
        slots_.assign(size_t{1} << bits, Slot{kEmpty, 0});
        used_.reserve(slots_.size() / 2 + 1);
        for (const uint32_t s : old_used) {
            size_t t = slot_of(old[s].id);
            while (slots_[t].id != kEmpty) t = (t + 1) & mask_;
            slots_[t] = old[s];
            used_.push_back(static_cast<uint32_t>(t));
        }
    }

    std::vector<Slot> slots_;
    std::vector<uint32_t> used_;
    size_t mask_ = 0;
    int bits_ = 0;
};

// The rows of one chunk of starts, before they are copied into the result.
template <typename I>
struct ChunkRows {
    std::vector<int64_t> row_nnz;
    std::vector<I> indices;
    std::vector<float> data;

    void clear() {
        row_nnz.clear();
        indices.clear();
        data.clear();
    }
};

// One row of output from a walk's counts: the top k (count descending, then id ascending), plus the
// `extra` ids with weight max(count, 1), sorted by id without duplicates.
template <typename I>
void emit_row(const VisitCounter<I>& counter, int64_t top_k, const I* extra, int64_t num_extra,
              std::vector<typename VisitCounter<I>::Slot>& entries, ChunkRows<I>& out) {
    using Slot = typename VisitCounter<I>::Slot;
    entries.clear();
    counter.for_each([&](const Slot& s) { entries.push_back(s); });
    if (top_k > 0 && static_cast<int64_t>(entries.size()) > top_k) {
        std::nth_element(entries.begin(), entries.begin() + top_k, entries.end(), [](const Slot& a, const Slot& b) {
            return a.count > b.count || (a.count == b.count && a.id < b.id);
        });
        entries.resize(top_k);
    }
    for (int64_t i = 0; i < num_extra; ++i) entries.push_back(Slot{extra[i], std::max<uint32_t>(counter.count(extra[i]), 1)});
    std::sort(entries.begin(), entries.end(), [](const Slot& a, const Slot& b) { return a.id < b.id; });
    int64_t n = 0;
    for (size_t i = 0; i < entries.size(); ++i) {
        if (i > 0 && entries[i].id == entries[i - 1].id) continue;  // an extra id also in the top k
        out.indices.push_back(entries[i].id);
        out.data.push_back(static_cast<float>(entries[i].count));
        ++n;
    }
    out.row_nnz.push_back(n);
}

// Lanes per group: all of them unless the landing buffers of very long walks would pass the budget.
template <typename I>
int lanes_for(int64_t walk_length) {
    const int64_t fit = kVisitBudget / (walk_length * static_cast<int64_t>(sizeof(I)));
    return static_cast<int>(std::clamp<int64_t>(fit, 1, kLanes));
}

// The driver shared by all walks: batches of starts (progress is reported between batches), each
// batch split into fixed chunks over the threads, rows assembled into the result in start order.
// walk_group(lanes, visits) fills visits[lane * L + hop]; extra(start, &one, &ids) points ids at the
// ids that row keeps whatever top-k says (`one` is storage for a single id) and returns their number.
template <typename I, typename WalkGroup, typename Extra>
CsrResult<I> run_walks(const int64_t* starts, int64_t num_starts, int64_t num_nodes, const WalkOptions& o,
                       const Progress& progress, WalkGroup&& walk_group, Extra&& extra) {
    if (o.walk_length < 1 || o.walk_length > (int64_t{1} << 24))
        throw std::invalid_argument("walk_length must be in [1, 2^24]");
    if (!(o.restart_prob > 0.0f && o.restart_prob <= 1.0f)) throw std::invalid_argument("restart_prob must be in (0, 1]");
    if (o.top_k < 0) throw std::invalid_argument("top_k must be >= 0");
    const int64_t L = o.walk_length;
    const int threads = resolve_threads(o.num_threads);
    const int group = lanes_for<I>(L);
    // ~64K hops per chunk (a fraction of a millisecond), whole groups; batches of 32 chunks per
    // thread keep the idle time at a batch's end near 1%.
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(4096, (int64_t{1} << 16) / L) / group) * group;
    const int64_t batch = chunk * threads * 32;

    CsrResult<I> result;
    result.indptr.resize(num_starts + 1);
    result.indptr.data()[0] = 0;
    std::vector<ChunkRows<I>> rows(static_cast<size_t>((std::min(batch, std::max<int64_t>(num_starts, 1)) + chunk - 1) / chunk));
    const int64_t expected_distinct = std::min(L, num_nodes) + 1;

    for (int64_t b0 = 0; b0 < num_starts; b0 += batch) {
        const int64_t b1 = std::min(num_starts, b0 + batch);
        parallel_for(b1 - b0, chunk, threads, [&](int64_t begin, int64_t end) {
            ChunkRows<I>& out = rows[static_cast<size_t>(begin / chunk)];
            out.clear();
            std::vector<I> visits(static_cast<size_t>(group * L));
            VisitCounter<I> counter(expected_distinct);
            std::vector<typename VisitCounter<I>::Slot> entries;
            for (int64_t g0 = begin; g0 < end; g0 += group) {
                const Lanes lanes(starts + b0 + g0, static_cast<int>(std::min<int64_t>(group, end - g0)));
                walk_group(lanes, visits.data());
                for (int l = 0; l < lanes.n; ++l) {
                    counter.clear();
                    const I* v = visits.data() + l * L;
                    for (int64_t h = 0; h < L; ++h)
                        if (v[h] >= 0) counter.add(v[h]);
                    I one = 0;
                    const I* ids = nullptr;
                    const int64_t num_ids = extra(lanes.start[l], &one, &ids);
                    emit_row(counter, o.top_k, ids, num_ids, entries, out);
                }
            }
        });
        // Copy the batch's rows into the result at their offsets.
        const int64_t num_chunks = (b1 - b0 + chunk - 1) / chunk;
        std::vector<int64_t> offset(static_cast<size_t>(num_chunks) + 1);
        offset[0] = result.indices.size();
        for (int64_t c = 0; c < num_chunks; ++c) offset[c + 1] = offset[c] + static_cast<int64_t>(rows[c].indices.size());
        result.indices.resize(offset[num_chunks]);
        result.data.resize(offset[num_chunks]);
        parallel_for(num_chunks, 1, threads, [&](int64_t c, int64_t) {
            const ChunkRows<I>& in = rows[static_cast<size_t>(c)];
            std::copy(in.indices.begin(), in.indices.end(), result.indices.data() + offset[c]);
            std::copy(in.data.begin(), in.data.end(), result.data.data() + offset[c]);
            int64_t* indptr = result.indptr.data() + b0 + c * chunk + 1;
            int64_t at = offset[c];
            for (size_t i = 0; i < in.row_nnz.size(); ++i) indptr[i] = at += in.row_nnz[i];
        });
        if (progress) progress(b1);
    }
    result.indices.shrink_to_fit();
    result.data.shrink_to_fit();
    return result;
}

}  // namespace

template <typename I>
CsrResult<I> random_walk_with_restart(const CsrView<I>& adj, const int64_t* starts, int64_t num_starts,
                                      const WalkOptions& options, const Progress& progress) {
    if (adj.rows != adj.cols) throw std::invalid_argument("adj must be square");
    return run_walks<I>(
        starts, num_starts, adj.rows, options, progress,
        [&](const Lanes& lanes, I* visits) { walk_unipartite(adj, lanes, options, visits); },
        [](int64_t, I*, const I**) -> int64_t { return 0; });
}

template <typename I>
CsrResult<I> bipartite_walk(const CsrView<I>& Y, const CsrView<I>& Yt, const int64_t* starts, int64_t num_starts,
                            bool starts_are_rows, bool keep_extra, const WalkOptions& options,
                            const Progress& progress) {
    if (Yt.rows != Y.cols || Yt.cols != Y.rows) throw std::invalid_argument("Yt must be the transpose of Y");
    return run_walks<I>(
        starts, num_starts, Y.cols, options, progress,
        [&](const Lanes& lanes, I* visits) { walk_bipartite(Y, Yt, starts_are_rows, lanes, options, visits); },
        [&](int64_t start, I* one, const I** ids) -> int64_t {
            if (!keep_extra) return 0;
            if (starts_are_rows) {
                *ids = Y.indices + Y.indptr[start];
                return static_cast<int64_t>(Y.indptr[start + 1]) - Y.indptr[start];
            }
            *one = static_cast<I>(start);
            *ids = one;
            return 1;
        });
}

template CsrResult<int32_t> random_walk_with_restart(const CsrView<int32_t>&, const int64_t*, int64_t,
                                                     const WalkOptions&, const Progress&);
template CsrResult<int64_t> random_walk_with_restart(const CsrView<int64_t>&, const int64_t*, int64_t,
                                                     const WalkOptions&, const Progress&);
template CsrResult<int32_t> bipartite_walk(const CsrView<int32_t>&, const CsrView<int32_t>&, const int64_t*, int64_t,
                                           bool, bool, const WalkOptions&, const Progress&);
template CsrResult<int64_t> bipartite_walk(const CsrView<int64_t>&, const CsrView<int64_t>&, const int64_t*, int64_t,
                                           bool, bool, const WalkOptions&, const Progress&);

}  // namespace ramen
