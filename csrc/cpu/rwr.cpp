// Random walks with restart on CSR graphs, counted per start: see rwr.h for the definitions.
//
// Each thread steps kLanes walkers in lockstep, one phase at a time (choose an edge, then read the
// node it leads to), prefetching what the next phase reads, so that the cache misses of a hop on
// a large graph overlap instead of following one another. The random words of a hop are Philox
// blocks keyed by (seed, start, hop), computed for all lanes at once (vectorised). A walker's
// landings go to a buffer, then are counted with a small open-addressing table, cut to the top k
// and emitted sorted by node id. Output rows are assembled batch by batch straight into the final
// CSR arrays, so memory stays at graph + output + per-thread scratch.
#include "rwr.h"

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

#include "buffer.h"
#include "csr.h"
#include "parallel.h"
#include "rng.h"

#if defined(__AVX512F__)
// GCC 12 warns falsely about the undefined pass-through operand inside the mask intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#include <immintrin.h>
#pragma GCC diagnostic pop
#endif

namespace ramen {
namespace {

// Walkers stepped together by one thread: enough independent cache misses in flight to cover the
// memory latency (hyperlink-scale graph, one thread: 16 lanes 29 ns/hop, 64 lanes 18, 128 no better).
constexpr int kLanes = 64;
constexpr int64_t kVisitBudget = 16 << 20;  // bytes of landing buffer per thread (lanes x walk_length)

inline void prefetch(const void* p) { __builtin_prefetch(p, 0, 3); }

// Philox words of block 0 at counter (hop, start) for every lane: words[i][lane].
struct alignas(64) LaneWords {
    uint32_t w[4][kLanes];
};

#if defined(__AVX512F__)
// High and low halves of the 32 x 32-bit products of 16 lanes by one multiplier.
inline __m512i mulhilo(__m512i a, __m512i m, __m512i& lo) {
    const __m512i even = _mm512_mul_epu32(a, m);                         // lanes 0, 2, ...: 64-bit products
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(a, 32), m);  // lanes 1, 3, ...
    lo = _mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32));
    return _mm512_mask_blend_epi32(0xAAAA, _mm512_srli_epi64(even, 32), odd);
}
#endif

// Same values as philox4x32(hop, lo[l], hi[l], 0, k0, k1) for each lane (tests check it against
// the scalar function): 16 lanes per 512-bit register where the build has AVX-512.
void philox_lanes(uint32_t hop, const uint32_t* lo, const uint32_t* hi, uint64_t key, LaneWords& out) {
    static_assert(kLanes % 16 == 0, "whole 512-bit registers of lanes");
    const uint32_t key0 = static_cast<uint32_t>(key), key1 = static_cast<uint32_t>(key >> 32);
#if defined(__AVX512F__)
    const __m512i m0 = _mm512_set1_epi32(static_cast<int>(kPhiloxM0)), m1 = _mm512_set1_epi32(static_cast<int>(kPhiloxM1));
    for (int b = 0; b < kLanes; b += 16) {
        __m512i c0 = _mm512_set1_epi32(static_cast<int>(hop)), c1 = _mm512_loadu_si512(lo + b),
                c2 = _mm512_loadu_si512(hi + b), c3 = _mm512_setzero_si512();
        uint32_t k0 = key0, k1 = key1;
        for (int round = 0; round < 10; ++round) {
            __m512i lo0, lo1;
            const __m512i hi0 = mulhilo(c0, m0, lo0), hi1 = mulhilo(c2, m1, lo1);
            c0 = _mm512_ternarylogic_epi32(hi1, c1, _mm512_set1_epi32(static_cast<int>(k0)), 0x96);  // three-way xor
            c2 = _mm512_ternarylogic_epi32(hi0, c3, _mm512_set1_epi32(static_cast<int>(k1)), 0x96);
            c1 = lo1;
            c3 = lo0;
            k0 += kPhiloxW0;
            k1 += kPhiloxW1;
        }
        _mm512_store_si512(out.w[0] + b, c0);
        _mm512_store_si512(out.w[1] + b, c1);
        _mm512_store_si512(out.w[2] + b, c2);
        _mm512_store_si512(out.w[3] + b, c3);
    }
#else
    for (int l = 0; l < kLanes; ++l) {
        const Words4 w = philox4x32(hop, lo[l], hi[l], 0, key0, key1);
        for (int i = 0; i < 4; ++i) out.w[i][l] = w.w[i];
    }
#endif
}

// The walkers of one group: start nodes and their Philox stream (the start id, split in words).
struct Lanes {
    int n = 0;  // active lanes
    int64_t start[kLanes];
    alignas(64) uint32_t lo[kLanes];
    alignas(64) uint32_t hi[kLanes];

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
__attribute__((noinline)) int64_t choose_slow(int64_t lo, int64_t deg, uint32_t first_word, uint64_t key,
                                              int64_t start, uint32_t hop, uint32_t which) {
    CounterStream retry(key, static_cast<uint64_t>(start), hop, which, 2);
    return lo + static_cast<int64_t>(uniform_below(static_cast<uint64_t>(deg), first_word, retry));
}

// The same, with Lemire's common case inline: a product whose low half is >= deg is accepted
// (the rejection threshold 2^32 mod deg is below deg), anything else takes the general path.
inline int64_t choose(int64_t lo, int64_t deg, uint32_t first_word, uint64_t key, int64_t start, uint32_t hop,
                      uint32_t which) {
    const uint64_t m = static_cast<uint64_t>(first_word) * static_cast<uint64_t>(deg);
    if (deg <= 0xFFFFFFFFll && static_cast<uint32_t>(m) >= static_cast<uint64_t>(deg))
        return lo + static_cast<int64_t>(m >> 32);
    return choose_slow(lo, deg, first_word, key, start, hop, which);
}

// Walks of up to kLanes starts on a square adjacency; landings to visits[lane * L + hop].
template <typename I>
void walk_unipartite(const CsrView<I>& g, const Lanes& lanes, const WalkOptions& o, I* visits) {
    const int64_t L = o.walk_length;
    const uint32_t r = threshold24(o.restart_prob);
    const uint64_t key = o.seed;
    int64_t cur[kLanes], pos[kLanes];
    LaneWords now, next;
    philox_lanes(0, lanes.lo, lanes.hi, key, now);
    for (int64_t h = 0; h < L; ++h) {
        const uint32_t hop = static_cast<uint32_t>(h);
        for (int l = 0; l < lanes.n; ++l) {  // choose an out-edge (or none: dangling)
            const bool restart = h == 0 || below(now.w[0][l], r);
            const int64_t x = restart ? lanes.start[l] : cur[l];
            const int64_t lo = g.indptr[x], deg = static_cast<int64_t>(g.indptr[x + 1]) - lo;
            if (deg == 0) {
                pos[l] = -1;
            } else {
                pos[l] = choose(lo, deg, now.w[1][l], key, lanes.start[l], hop, 1);
                prefetch(g.indices + pos[l]);
            }
        }
        philox_lanes(hop + 1, lanes.lo, lanes.hi, key, next);  // decides the next hop's restart: what to prefetch
        for (int l = 0; l < lanes.n; ++l) {  // land
            const int64_t y = pos[l] < 0 ? lanes.start[l] : static_cast<int64_t>(g.indices[pos[l]]);
            cur[l] = y;
            visits[l * L + h] = static_cast<I>(y);
            prefetch(g.indptr + (below(next.w[0][l], r) ? lanes.start[l] : y));  // the next hop's row
        }
        std::swap(now, next);
    }
}

// Walks of up to kLanes starts over the columns of Y (Yt its transpose); see rwr.h. A hop that
// lands nowhere (rows mode: a start row without columns) records -1.
template <typename I>
void walk_bipartite(const CsrView<I>& Y, const CsrView<I>& Yt, bool starts_are_rows, const Lanes& lanes,
                    const WalkOptions& o, I* visits) {
    const int64_t L = o.walk_length;
    const uint32_t r = threshold24(o.restart_prob);
    const uint64_t key = o.seed;
    constexpr int64_t kDangling = -1, kFromStartRow = -2;
    int64_t cur[kLanes], row[kLanes], pos_a[kLanes], pos_b[kLanes];
    std::fill(cur, cur + kLanes, int64_t{-1});  // -1: not yet on a column (rows mode)
    LaneWords now, next;
    philox_lanes(0, lanes.lo, lanes.hi, key, now);
    for (int64_t h = 0; h < L; ++h) {
        const uint32_t hop = static_cast<uint32_t>(h);
        for (int l = 0; l < lanes.n; ++l) {  // column -> a linked row: choose the edge
            const bool restart = h == 0 || below(now.w[0][l], r) || cur[l] < 0;
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
        philox_lanes(hop + 1, lanes.lo, lanes.hi, key, next);  // decides the next hop's restart: what to prefetch
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
            if (!starts_are_rows) prefetch(Yt.indptr + (below(next.w[0][l], r) || y < 0 ? lanes.start[l] : y));
            else if (y >= 0) prefetch(Yt.indptr + y);
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

    // The count of id, set to 0 in the table (it then takes no part in the top k).
    uint32_t take(I id) {
        for (size_t s = slot_of(id);; s = (s + 1) & mask_) {
            if (slots_[s].id == id) return std::exchange(slots_[s].count, 0u);
            if (slots_[s].id == kEmpty) return 0;
        }
    }

    int64_t size() const { return static_cast<int64_t>(used_.size()); }

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

// The rows of one chunk of starts, before they are copied into the result. Cache-line aligned:
// neighbouring chunks are filled by different threads at once.
template <typename I>
struct alignas(64) ChunkRows {
    std::vector<int64_t> row_nnz;
    std::vector<I> indices;
    std::vector<float> data;

    void clear() {
        row_nnz.clear();
        indices.clear();
        data.clear();
    }
};

// Row entries packed in 64 bits, so that rows sort as integers: a node id (< 2^39) above a count
// (<= 2^24, the longest walk).
constexpr int kCountBits = 25;
constexpr int kIdBits = 64 - kCountBits;
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;
constexpr uint64_t kIdMask = (uint64_t{1} << kIdBits) - 1;

inline uint64_t by_id(uint64_t id, uint64_t count) { return (id << kCountBits) | count; }
// Ascending order of this key is count descending, then id ascending: the top-k order.
inline uint64_t by_rank(uint64_t id, uint64_t count) { return ((kCountMask - count) << kIdBits) | id; }

// Sorts by_id keys by id: LSD radix on bytes of the id (a row of ~100 entries sorts ~4x faster
// than with comparisons, whose branches mispredict), std::sort for short rows.
void sort_by_id(std::vector<uint64_t>& keys, std::vector<uint64_t>& tmp, int id_bits) {
    const size_t n = keys.size();
    if (n <= 48) {
        std::sort(keys.begin(), keys.end());
        return;
    }
    tmp.resize(n);
    uint64_t* a = keys.data();
    uint64_t* b = tmp.data();
    for (int shift = kCountBits; shift < kCountBits + id_bits; shift += 8) {
        uint32_t count[256] = {};
        for (size_t i = 0; i < n; ++i) ++count[(a[i] >> shift) & 0xFF];
        if (count[(a[0] >> shift) & 0xFF] == n) continue;  // one digit for all: nothing to move
        uint32_t sum = 0;
        for (int d = 0; d < 256; ++d) {
            const uint32_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (size_t i = 0; i < n; ++i) b[count[(a[i] >> shift) & 0xFF]++] = a[i];
        std::swap(a, b);
    }
    if (a != keys.data()) std::copy(a, a + n, keys.data());
}

// Scratch for emit_row.
struct RowScratch {
    std::vector<uint64_t> keys, extra_keys, tmp;
    std::vector<std::pair<uint64_t, uint64_t>> ranked;
    int id_bits = 1;  // bits of the largest node id
};

// What a row keeps beside the top k of its walk's counts.
struct Extra {
    const void* ids = nullptr;  // I*: ids the row keeps whatever the top k says
    int64_t size = 0;
    bool outside_top_k = false;  // rank the top k among the other ids only
    bool hashed_ties = false;    // equal counts ordered by tie_hash(seed, start, id), not by id
};

// SplitMix64's finaliser: a bijective 64-bit mixer.
inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// A reproducible, uniform order among equally visited ids of the row of `start`.
inline uint64_t tie_hash(uint64_t seed, int64_t start, uint64_t id) {
    return mix64(seed ^ mix64(static_cast<uint64_t>(start) + 0x9E3779B97F4A7C15ull * (id + 1)));
}

// One row of output from a walk's counts: the top k (count descending, then id ascending) and the
// extra ids with weight max(count, 1), sorted by id without duplicates. With extra.outside_top_k
// the top k is taken among the ids that are not extra (densify: k new anchors per item).
template <typename I>
void emit_row(VisitCounter<I>& counter, int64_t top_k, const Extra& extra, uint64_t seed, int64_t start,
              RowScratch& scratch, ChunkRows<I>& out) {
    using Slot = typename VisitCounter<I>::Slot;
    std::vector<uint64_t>& keys = scratch.keys;
    std::vector<uint64_t>& extra_keys = scratch.extra_keys;
    extra_keys.clear();
    const I* ids = static_cast<const I*>(extra.ids);
    for (int64_t i = 0; i < extra.size; ++i) extra_keys.push_back(static_cast<uint64_t>(ids[i]) << kCountBits);
    sort_by_id(extra_keys, scratch.tmp, scratch.id_bits);
    extra_keys.erase(std::unique(extra_keys.begin(), extra_keys.end()), extra_keys.end());
    for (uint64_t& k : extra_keys) {
        const I id = static_cast<I>(k >> kCountBits);
        k |= std::max<uint32_t>(extra.outside_top_k ? counter.take(id) : counter.count(id), 1);
    }
    keys.clear();
    counter.for_each([&](const Slot& s) {
        if (s.count > 0) keys.push_back(by_id(static_cast<uint64_t>(s.id), s.count));
    });
    if (top_k > 0 && static_cast<int64_t>(keys.size()) > top_k && extra.hashed_ties) {
        auto& ranked = scratch.ranked;  // (count descending, then tie hash) beside the by_id key
        ranked.clear();
        for (const uint64_t k : keys)
            ranked.emplace_back(by_rank(tie_hash(seed, start, k >> kCountBits) & kIdMask, k & kCountMask), k);
        std::nth_element(ranked.begin(), ranked.begin() + top_k, ranked.end());
        for (int64_t i = 0; i < top_k; ++i) keys[static_cast<size_t>(i)] = ranked[static_cast<size_t>(i)].second;
        keys.resize(static_cast<size_t>(top_k));
    } else if (top_k > 0 && static_cast<int64_t>(keys.size()) > top_k) {
        for (uint64_t& k : keys) k = by_rank(k >> kCountBits, k & kCountMask);
        std::nth_element(keys.begin(), keys.begin() + top_k, keys.end());
        keys.resize(static_cast<size_t>(top_k));
        for (uint64_t& k : keys) k = by_id(k & kIdMask, kCountMask - (k >> kIdBits));
    }
    keys.insert(keys.end(), extra_keys.begin(), extra_keys.end());
    sort_by_id(keys, scratch.tmp, scratch.id_bits);
    int64_t n = 0;
    for (size_t i = 0; i < keys.size(); ++i) {
        if (i > 0 && (keys[i] >> kCountBits) == (keys[i - 1] >> kCountBits)) continue;  // an extra id also in the top k
        out.indices.push_back(static_cast<I>(keys[i] >> kCountBits));
        out.data.push_back(static_cast<float>(keys[i] & kCountMask));
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
// walk_group(lanes, visits) fills visits[lane * L + hop]; extra(start, &one) gives the ids the row
// keeps whatever the top k says (`one` is storage for a single id).
template <typename I, typename WalkGroup, typename Extra>
CsrResult<I> run_walks(const int64_t* starts, int64_t num_starts, int64_t num_nodes, const WalkOptions& o,
                       const Progress& progress, WalkGroup&& walk_group, Extra&& extra) {
    if (o.walk_length < 1 || o.walk_length > (int64_t{1} << 24))
        throw std::invalid_argument("walk_length must be in [1, 2^24]");
    if (!(o.restart_prob > 0.0f && o.restart_prob <= 1.0f)) throw std::invalid_argument("restart_prob must be in (0, 1]");
    if (o.top_k < 0) throw std::invalid_argument("top_k must be >= 0");
    if (num_nodes > static_cast<int64_t>(kIdMask)) throw std::invalid_argument("graphs of 2^39 nodes or more are not supported");
    const int64_t L = o.walk_length;
    const int threads = resolve_threads(o.num_threads);
    const int group = lanes_for<I>(L);
    // ~64K hops per chunk (about a millisecond), whole groups; batches of 64 chunks per thread keep
    // the idle time at a batch's end (half a chunk per thread on average) under 1%.
    const int64_t chunk = std::max<int64_t>(1, std::min<int64_t>(4096, (int64_t{1} << 16) / L) / group) * group;
    const int64_t batch = o.batch_starts > 0 ? o.batch_starts : chunk * threads * 64;

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
            RowScratch scratch;
            while ((int64_t{1} << scratch.id_bits) < num_nodes) ++scratch.id_bits;
            for (int64_t g0 = begin; g0 < end; g0 += group) {
                const Lanes lanes(starts + b0 + g0, static_cast<int>(std::min<int64_t>(group, end - g0)));
                walk_group(lanes, visits.data());
                for (int l = 0; l < lanes.n; ++l) {
                    counter.clear();
                    const I* v = visits.data() + l * L;
                    for (int64_t h = 0; h < L; ++h)
                        if (v[h] >= 0) counter.add(v[h]);
                    I one = 0;
                    emit_row(counter, o.top_k, extra(lanes.start[l], &one), o.seed, lanes.start[l], scratch, out);
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

uint64_t walk_draw(uint64_t seed, int64_t start, uint32_t hop, uint32_t which, uint64_t range) {
    if (range < 1 || range > static_cast<uint64_t>(INT64_MAX) || which < 1 || which > 2)
        throw std::invalid_argument("walk_draw: range must be in [1, 2^63) and which 1 or 2");
    const Words4 first = philox4x32(hop, static_cast<uint32_t>(start), static_cast<uint32_t>(static_cast<uint64_t>(start) >> 32),
                                    0, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    return static_cast<uint64_t>(choose(0, static_cast<int64_t>(range), first.w[which], seed, start, hop, which));
}

template <typename I>
CsrResult<I> random_walk_with_restart(const CsrView<I>& adj, const int64_t* starts, int64_t num_starts,
                                      const WalkOptions& options, const Progress& progress) {
    if (adj.rows != adj.cols) throw std::invalid_argument("adj must be square");
    return run_walks<I>(
        starts, num_starts, adj.rows, options, progress,
        [&](const Lanes& lanes, I* visits) { walk_unipartite(adj, lanes, options, visits); },
        [](int64_t, I*) { return Extra{}; });
}

template <typename I>
CsrResult<I> bipartite_walk(const CsrView<I>& Y, const CsrView<I>& Yt, const int64_t* starts, int64_t num_starts,
                            bool starts_are_rows, bool keep_extra, const WalkOptions& options,
                            const Progress& progress) {
    if (Yt.rows != Y.cols || Yt.cols != Y.rows) throw std::invalid_argument("Yt must be the transpose of Y");
    return run_walks<I>(
        starts, num_starts, Y.cols, options, progress,
        [&](const Lanes& lanes, I* visits) { walk_bipartite(Y, Yt, starts_are_rows, lanes, options, visits); },
        [&](int64_t start, I* one) {
            if (!keep_extra) return Extra{};
            if (starts_are_rows)  // densify: the item's own anchors, and top_k new ones
                return Extra{Y.indices + Y.indptr[start], static_cast<int64_t>(Y.indptr[start + 1]) - Y.indptr[start],
                             true, true};
            *one = static_cast<I>(start);  // the self-loop, competing in the top k like any column
            return Extra{one, 1, false};
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
