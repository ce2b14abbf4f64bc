// HNSW insertion and search over caller-owned arrays, see hnsw.h.
//
// Distances are negated inner products (unit vectors: smaller is nearer); ties go to the lower
// node id, so every choice is deterministic. A search keeps a min-heap of nodes to expand and a
// max-heap of the ef best found; before scoring a node's links it filters the unvisited ones and
// prefetches their vectors, so that their cache misses overlap instead of queueing one by one.
// Insertion follows the paper's algorithms 1 and 4 (greedy descent, beam search of width
// ef_construction, the neighbour-diversity heuristic), in batches (see hnsw.h): step 1 links each
// node of a batch into the graph as it stood before the batch, in parallel; step 2 adds the reverse
// links, node by node, re-selecting with the heuristic where a node's list overflows. Nodes of one
// batch cannot link to each other, so the caller's insertion order should be shuffled (near
// neighbours often arrive together) and a batch holds at most 2% of the graph and 1/16 of the call.
// Rows of the nodes that were in the graph before the call are never written: the first write makes
// a copy (LinkOverlay) that the rest of the insertion reads and writes instead, returned at the end.
#include "hnsw.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <utility>
#include <vector>

#include "dot.h"
#include "half.h"
#include "parallel.h"
#include "prefetch.h"

namespace ramen {

// An insertion's copies of the rows it changed in nodes [0, visible), by node (level 0) and by row
// of `upper`. Rows live in fixed blocks, so a pointer to one stays valid while others are added;
// copies are made by one thread at a time, and read by many only while none is being made.
class LinkOverlay {
public:
    LinkOverlay(int64_t visible, int64_t upper_rows, int m0, int m)
        : visible_(visible), level0_(m0 + 1), upper_(m + 1),
          level0_slot_(static_cast<size_t>(visible), -1), upper_slot_(static_cast<size_t>(upper_rows), -1) {}

    // The row to read for node v at level 0 (upper row r): its copy if one was made, else `row`.
    const int32_t* level0_or(int64_t v, const int32_t* row) const {
        return v < visible_ && level0_slot_[static_cast<size_t>(v)] >= 0 ? level0_.at(level0_slot_[static_cast<size_t>(v)]) : row;
    }
    const int32_t* upper_or(int64_t node, int64_t r, const int32_t* row) const {
        return node < visible_ && upper_slot_[static_cast<size_t>(r)] >= 0 ? upper_.at(upper_slot_[static_cast<size_t>(r)]) : row;
    }

    // The row to write: `row` itself for a new node, else its copy, made from `row` at the first write.
    int32_t* level0_for_write(int64_t v, int32_t* row) { return v < visible_ ? copy(level0_, level0_slot_[static_cast<size_t>(v)], row) : row; }
    int32_t* upper_for_write(int64_t node, int64_t r, int32_t* row) {
        return node < visible_ ? copy(upper_, upper_slot_[static_cast<size_t>(r)], row) : row;
    }

    // Every copy, with the node or upper row it replaces, in the order they were made.
    void drain(HnswPending& out) const {
        collect(level0_, level0_slot_, out.level0_nodes, out.level0_links);
        collect(upper_, upper_slot_, out.upper_rows, out.upper_links);
    }

private:
    class Rows {
    public:
        explicit Rows(int width) : width_(width) {}
        int32_t* at(int64_t i) const { return blocks_[static_cast<size_t>(i / kBlockRows)].get() + (i % kBlockRows) * width_; }
        int64_t append(const int32_t* row) {
            if (count_ % kBlockRows == 0) blocks_.push_back(std::make_unique<int32_t[]>(static_cast<size_t>(kBlockRows * width_)));
            std::copy(row, row + width_, at(count_));
            return count_++;
        }
        int64_t size() const { return count_; }
        int width() const { return width_; }

    private:
        static constexpr int64_t kBlockRows = 256;
        int width_;
        int64_t count_ = 0;
        std::vector<std::unique_ptr<int32_t[]>> blocks_;
    };

    static int32_t* copy(Rows& rows, int64_t& slot, const int32_t* row) {
        if (slot < 0) slot = rows.append(row);
        return rows.at(slot);
    }
    static void collect(const Rows& rows, const std::vector<int64_t>& slots, std::vector<int64_t>& keys,
                        std::vector<int32_t>& links) {
        keys.assign(static_cast<size_t>(rows.size()), -1);
        for (size_t key = 0; key < slots.size(); ++key)
            if (slots[key] >= 0) keys[static_cast<size_t>(slots[key])] = static_cast<int64_t>(key);
        links.resize(static_cast<size_t>(rows.size() * rows.width()));
        for (int64_t i = 0; i < rows.size(); ++i) std::copy(rows.at(i), rows.at(i) + rows.width(), links.begin() + i * rows.width());
    }

    int64_t visible_;
    Rows level0_, upper_;
    std::vector<int64_t> level0_slot_, upper_slot_;  // index of the copy, -1 for none
};

namespace {

constexpr double kBatchFraction = 0.02;  // largest insertion batch, as a fraction of the final size
constexpr int64_t kBatchesPerCall = 16;   // and at most this fraction of the nodes being inserted
constexpr int64_t kSearchChunk = 4;       // queries per parallel task

struct Scored {
    float dist;
    int32_t id;
};

// The distance of an inner product for insertion: its negation, and +inf for NaN (a corrupt
// vector), so that std::sort sees a strict weak order (with NaN it may run past the range). The
// search keeps the plain negation (its heaps stay in bounds whatever the order) and drops NaN
// scores from its output.
inline float distance(float dot) { return dot == dot ? -dot : INFINITY; }

inline bool nearer(const Scored& a, const Scored& b) { return a.dist < b.dist || (a.dist == b.dist && a.id < b.id); }
struct FarthestOnTop {  // heap order for the ef best found
    bool operator()(const Scored& a, const Scored& b) const { return nearer(a, b); }
};
struct NearestOnTop {  // heap order for the nodes left to expand
    bool operator()(const Scored& a, const Scored& b) const { return nearer(b, a); }
};

inline void to_float(const float* v, int64_t dim, float* out) { std::copy(v, v + dim, out); }
inline void to_float(const uint16_t* v, int64_t dim, float* out) {
    for (int64_t i = 0; i < dim; ++i) out[i] = half_to_float(v[i]);
}

// Which nodes a search has seen: a tag per node, equal to the current generation once seen, so
// that a new search costs no clearing (except when the 16-bit generation wraps).
class Visited {
public:
    void reset(int64_t n) {
        if (static_cast<int64_t>(tags_.size()) < n) {
            tags_.assign(static_cast<size_t>(n), 0);
            generation_ = 0;
        }
        if (++generation_ == 0) {
            std::fill(tags_.begin(), tags_.end(), 0);
            generation_ = 1;
        }
    }
    bool first_visit(int32_t v) {
        if (tags_[static_cast<size_t>(v)] == generation_) return false;
        tags_[static_cast<size_t>(v)] = generation_;
        return true;
    }

private:
    std::vector<uint16_t> tags_;
    uint16_t generation_ = 0;
};

// Per-thread scratch of a search, kept across calls on the same thread.
struct Scratch {
    Visited visited;
    std::vector<Scored> frontier, found, starts, chosen;
    std::vector<int32_t> fresh;
    std::vector<float> query;
};

Scratch& thread_scratch() {
    thread_local Scratch scratch;
    return scratch;
}

// Node v's row of links at `level` (inside the graph: the insertion's own use), to read: the
// insertion's copy where it made one.
template <typename T>
const int32_t* link_row(const HnswGraph<T>& g, int64_t v, int level) {
    if (level == 0) {
        const int32_t* row = g.level0 + v * (g.m0 + 1);
        return g.overlay != nullptr ? g.overlay->level0_or(v, row) : row;
    }
    const int64_t r = g.upper_row[v] + level - 1;
    const int32_t* row = g.upper + r * (g.m + 1);
    return g.overlay != nullptr ? g.overlay->upper_or(v, r, row) : row;
}

// The same row, to write (one thread at a time for an old node: its first write makes the copy).
template <typename T>
int32_t* link_row_for_write(const HnswGraph<T>& g, int64_t v, int level) {
    if (level == 0) return g.overlay->level0_for_write(v, g.level0 + v * (g.m0 + 1));
    const int64_t r = g.upper_row[v] + level - 1;
    return g.overlay->upper_for_write(v, r, g.upper + r * (g.m + 1));
}

// A row of links as the search follows them: `links[0 .. count)`, none where the graph is corrupt.
struct Links {
    const int32_t* links = nullptr;
    uint32_t count = 0;
};

// Node v's links at `level`: none where v has no such level or its upper row lies outside `upper`
// (a corrupt graph), so that the search skips v instead of reading past the arrays; the count is
// clamped to the row's capacity (a negative one reads as past it, so clamped too).
template <typename T>
Links checked_links(const HnswGraph<T>& g, int64_t v, int level) {
    if (level == 0) {
        const int32_t* row = g.level0 + v * (g.m0 + 1);
        if (g.overlay != nullptr) row = g.overlay->level0_or(v, row);
        return {row + 1, std::min(static_cast<uint32_t>(row[0]), static_cast<uint32_t>(g.m0))};
    }
    const int64_t r = g.upper_row[v] + level - 1;
    if (g.level[v] < level || g.upper_row[v] < 0 || r >= g.upper_rows) return {};
    const int32_t* row = g.upper + r * (g.m + 1);
    if (g.overlay != nullptr) row = g.overlay->upper_or(v, r, row);
    return {row + 1, std::min(static_cast<uint32_t>(row[0]), static_cast<uint32_t>(g.m))};
}

template <typename T>
const T* vector_of(const HnswGraph<T>& g, int64_t v) {
    return g.vectors + v * g.dim;
}

// Beam search of width ef at one level from `starts` over nodes [0, n): s.found holds the ef
// nearest (alive ones only, if `alive`), nearest first.
template <typename T>
void search_level(const HnswGraph<T>& g, const float* q, int64_t n, int ef, int level, const uint8_t* alive,
                  Scratch& s) {
    const int64_t row_bytes = g.dim * static_cast<int64_t>(sizeof(T));
    const uint32_t limit = static_cast<uint32_t>(std::min<int64_t>(n, INT32_MAX));  // links are int32
    s.visited.reset(n);
    s.frontier.clear();
    s.found.clear();
    for (const Scored& start : s.starts) {
        if (!s.visited.first_visit(start.id)) continue;
        s.frontier.push_back(start);
        std::push_heap(s.frontier.begin(), s.frontier.end(), NearestOnTop{});
        if (alive == nullptr || alive[start.id]) {
            s.found.push_back(start);
            std::push_heap(s.found.begin(), s.found.end(), FarthestOnTop{});
        }
    }
    while (static_cast<int>(s.found.size()) > ef) {
        std::pop_heap(s.found.begin(), s.found.end(), FarthestOnTop{});
        s.found.pop_back();
    }
    while (!s.frontier.empty()) {
        const Scored c = s.frontier.front();
        if (static_cast<int>(s.found.size()) >= ef && nearer(s.found.front(), c)) break;
        std::pop_heap(s.frontier.begin(), s.frontier.end(), NearestOnTop{});
        s.frontier.pop_back();
        const Links row = checked_links(g, c.id, level);
        s.fresh.clear();
        for (uint32_t j = 0; j < row.count; ++j) {
            const int32_t v = row.links[j];
            if (static_cast<uint32_t>(v) < limit && s.visited.first_visit(v)) {  // inside [0, n) (negatives wrap), unseen
                s.fresh.push_back(v);
                prefetch_lines(vector_of(g, v), row_bytes);
            }
        }
        for (const int32_t v : s.fresh) {
            const Scored cand{-dot(q, vector_of(g, v), g.dim), v};
            const bool room = static_cast<int>(s.found.size()) < ef;
            if (!room && !nearer(cand, s.found.front())) continue;
            s.frontier.push_back(cand);
            std::push_heap(s.frontier.begin(), s.frontier.end(), NearestOnTop{});
            if (alive != nullptr && !alive[v]) continue;
            s.found.push_back(cand);
            std::push_heap(s.found.begin(), s.found.end(), FarthestOnTop{});
            if (static_cast<int>(s.found.size()) > ef) {
                std::pop_heap(s.found.begin(), s.found.end(), FarthestOnTop{});
                s.found.pop_back();
            }
        }
    }
    std::sort_heap(s.found.begin(), s.found.end(), FarthestOnTop{});  // nearest first
}

// Greedy descent from the entry point to level `stop` + 1; leaves the nearest node in s.starts.
template <typename T>
void descend(const HnswGraph<T>& g, const float* q, int64_t n, HnswEntry entry, int stop, Scratch& s) {
    s.starts.assign(1, Scored{-dot(q, vector_of(g, entry.node), g.dim), static_cast<int32_t>(entry.node)});
    for (int level = entry.level; level > stop; --level) {
        search_level(g, q, n, 1, level, nullptr, s);
        s.starts.assign(1, s.found.front());
    }
}

// The paper's heuristic: from `candidates` (nearest to the base first), keep each one that is
// nearer to the base than to every one kept so far, up to `cap`.
template <typename T>
void select_diverse(const HnswGraph<T>& g, const std::vector<Scored>& candidates, int cap, std::vector<Scored>& chosen) {
    chosen.clear();
    for (const Scored& c : candidates) {
        if (static_cast<int>(chosen.size()) >= cap) break;
        bool diverse = true;
        for (const Scored& r : chosen)
            if (-dot(vector_of(g, c.id), vector_of(g, r.id), g.dim) < c.dist) {
                diverse = false;
                break;
            }
        if (diverse) chosen.push_back(c);
    }
}

void write_links(int32_t* row, const std::vector<Scored>& links) {
    row[0] = static_cast<int32_t>(links.size());
    for (size_t j = 0; j < links.size(); ++j) row[j + 1] = links[j].id;
}

// Step 1 for node u: its own links at every level, found in the graph as it stands (n: the
// visited tags cover nodes [0, n)).
template <typename T>
void link_node(const HnswGraph<T>& g, HnswEntry entry, int64_t n, int64_t u, int ef_construction, Scratch& s) {
    const int top = g.level[u];
    for (int level = 0; level <= top; ++level) link_row_for_write(g, u, level)[0] = 0;
    s.query.resize(static_cast<size_t>(g.dim));
    to_float(vector_of(g, u), g.dim, s.query.data());
    const float* q = s.query.data();
    descend(g, q, n, entry, top, s);
    for (int level = std::min(top, entry.level); level >= 0; --level) {
        search_level(g, q, n, ef_construction, level, nullptr, s);
        select_diverse(g, s.found, level == 0 ? g.m0 : g.m, s.chosen);
        write_links(link_row_for_write(g, u, level), s.chosen);
        s.starts = s.found;
    }
}

// Step 2 at one level: every node named by the links of the batch's new nodes links back.
template <typename T>
void link_back(const HnswGraph<T>& g, const int64_t* batch, int64_t size, int level, int num_threads) {
    std::vector<std::pair<int32_t, int32_t>> pairs;  // (old node, new node linking to it)
    for (int64_t i = 0; i < size; ++i) {
        const int64_t u = batch[i];
        if (g.level[u] < level) continue;
        const int32_t* row = link_row(g, u, level);
        for (int j = 1; j <= row[0]; ++j) pairs.emplace_back(row[j], static_cast<int32_t>(u));
    }
    std::sort(pairs.begin(), pairs.end());
    std::vector<size_t> group_start;
    for (size_t i = 0; i < pairs.size(); ++i)
        if (i == 0 || pairs[i].first != pairs[i - 1].first) group_start.push_back(i);
    group_start.push_back(pairs.size());
    const int cap = level == 0 ? g.m0 : g.m;
    std::vector<int32_t*> rows(group_start.size() - 1);  // made here, on one thread: writing an old node's row copies it
    for (size_t gi = 0; gi + 1 < group_start.size(); ++gi) rows[gi] = link_row_for_write(g, pairs[group_start[gi]].first, level);
    parallel_for(static_cast<int64_t>(rows.size()), 64, num_threads, [&](int64_t g0, int64_t g1) {
        std::vector<Scored> candidates, chosen;
        for (int64_t gi = g0; gi < g1; ++gi) {
            const int32_t v = pairs[group_start[gi]].first;
            int32_t* row = rows[static_cast<size_t>(gi)];
            const int64_t incoming = static_cast<int64_t>(group_start[gi + 1] - group_start[gi]);
            if (row[0] + incoming <= cap) {
                for (size_t i = group_start[gi]; i < group_start[gi + 1]; ++i) row[1 + row[0]++] = pairs[i].second;
                continue;
            }
            candidates.clear();
            const T* base = vector_of(g, v);
            for (int j = 1; j <= row[0]; ++j)
                candidates.push_back({distance(dot(base, vector_of(g, row[j]), g.dim)), row[j]});
            for (size_t i = group_start[gi]; i < group_start[gi + 1]; ++i)
                candidates.push_back({distance(dot(base, vector_of(g, pairs[i].second), g.dim)), pairs[i].second});
            std::sort(candidates.begin(), candidates.end(), nearer);
            select_diverse(g, candidates, cap, chosen);
            write_links(row, chosen);
        }
    });
}

// Nodes [0, n) reachable from `from` through level-0 links, added to `reached` (a breadth-first search).
template <typename T>
void mark_reachable(const HnswGraph<T>& g, int64_t from, std::vector<uint8_t>& reached, std::vector<int32_t>& todo) {
    if (reached[static_cast<size_t>(from)]) return;
    reached[static_cast<size_t>(from)] = 1;
    todo.assign(1, static_cast<int32_t>(from));
    while (!todo.empty()) {
        const int32_t* row = link_row(g, todo.back(), 0);
        todo.pop_back();
        for (int j = 1; j <= row[0]; ++j)
            if (!reached[static_cast<size_t>(row[j])]) {
                reached[static_cast<size_t>(row[j])] = 1;
                todo.push_back(row[j]);
            }
    }
}

// Adds the link host -> u at level 0: into a free slot, else over the link whose target has the
// most other incoming links (never the last one in). False where every target has no other.
template <typename T>
bool link_from(const HnswGraph<T>& g, int32_t host, int32_t u, std::vector<int32_t>& indegree) {
    const int32_t* current = link_row(g, host, 0);
    int slot = -1;
    if (current[0] >= g.m0) {
        for (int j = 1; j <= current[0]; ++j)
            if (indegree[static_cast<size_t>(current[j])] > 1 &&
                (slot < 0 || indegree[static_cast<size_t>(current[j])] > indegree[static_cast<size_t>(current[slot])]))
                slot = j;
        if (slot < 0) return false;  // nothing to write: no copy made
    }
    int32_t* row = link_row_for_write(g, host, 0);
    if (slot < 0) {
        slot = ++row[0];
    } else {
        --indegree[static_cast<size_t>(row[slot])];
    }
    row[slot] = u;
    ++indegree[static_cast<size_t>(u)];
    return true;
}

// Heuristic pruning of reverse links can leave a node that no search from the entry reaches: a
// label that would never be returned. Each such node, in id order, gets a link from its nearest
// out-neighbour that the entry reaches (else from the first reached node that can take one), until
// every node is reached.
template <typename T>
void repair_reachability(const HnswGraph<T>& g, HnswEntry entry, int64_t n) {
    std::vector<uint8_t> reached(static_cast<size_t>(n), 0);
    std::vector<int32_t> indegree(static_cast<size_t>(n), 0), todo;
    for (int round = 0; round < 8; ++round) {
        std::fill(reached.begin(), reached.end(), 0);
        std::fill(indegree.begin(), indegree.end(), 0);
        for (int64_t v = 0; v < n; ++v) {
            const int32_t* row = link_row(g, v, 0);
            for (int j = 1; j <= row[0]; ++j) ++indegree[static_cast<size_t>(row[j])];
        }
        mark_reachable(g, entry.node, reached, todo);
        int64_t missing = 0, host = 0;
        for (int64_t u = 0; u < n; ++u) {
            if (reached[static_cast<size_t>(u)]) continue;
            const int32_t* own = link_row(g, u, 0);
            bool linked = false;
            for (int j = 1; j <= own[0] && !linked; ++j)
                if (reached[static_cast<size_t>(own[j])]) linked = link_from(g, own[j], static_cast<int32_t>(u), indegree);
            for (; !linked && host < n; host += linked ? 0 : 1)  // a host that cannot take a link never will this round
                linked = reached[static_cast<size_t>(host)] && host != u &&
                         link_from(g, static_cast<int32_t>(host), static_cast<int32_t>(u), indegree);
            if (linked) {
                mark_reachable(g, u, reached, todo);
            } else {
                ++missing;
            }
        }
        if (missing == 0) return;
    }
}

}  // namespace

template <typename T>
HnswPending hnsw_insert(const HnswGraph<T>& graph, HnswEntry entry, int64_t begin, int64_t end, const int64_t* order,
                        int ef_construction, int num_threads) {
    LinkOverlay overlay(begin, graph.upper_rows, graph.m0, graph.m);
    HnswGraph<T> g = graph;
    g.overlay = &overlay;
    const int64_t count = end - begin;
    int64_t pos = 0;  // position in `order`
    if (entry.node < 0 && count > 0) {  // the first node: the graph's entry, without links
        const int64_t first = order[0];
        for (int level = 0; level <= g.level[first]; ++level) link_row_for_write(g, first, level)[0] = 0;
        entry = HnswEntry{first, g.level[first]};
        pos = 1;
    }
    const int64_t max_batch = std::max<int64_t>(
        1, std::min(static_cast<int64_t>(std::ceil(kBatchFraction * end)), (count + kBatchesPerCall - 1) / kBatchesPerCall));
    while (pos < count) {
        const int64_t in_graph = begin + pos;
        const int64_t size = std::min({count - pos, in_graph, max_batch});  // prefix doubling, then capped
        const int64_t* batch = order + pos;
        const HnswEntry before = entry;
        parallel_for(size, 8, num_threads, [&](int64_t i0, int64_t i1) {
            Scratch& s = thread_scratch();
            for (int64_t i = i0; i < i1; ++i) link_node(g, before, end, batch[i], ef_construction, s);
        });
        int top = 0;
        for (int64_t i = 0; i < size; ++i) top = std::max<int>(top, g.level[batch[i]]);
        for (int level = 0; level <= std::min(top, before.level); ++level) link_back(g, batch, size, level, num_threads);
        for (int64_t i = 0; i < size; ++i)
            if (g.level[batch[i]] > entry.level) entry = HnswEntry{batch[i], g.level[batch[i]]};
        pos += size;
    }
    if (end > begin && end > 1) repair_reachability(g, entry, end);
    HnswPending pending{entry, {}, {}, {}, {}};
    overlay.drain(pending);
    return pending;
}

template <typename T>
void hnsw_search(const HnswGraph<T>& g, HnswEntry entry, int64_t n, const uint8_t* alive, const float* queries,
                 int64_t num_queries, int k, int ef, int num_threads, int64_t* rows, float* scores) {
    const int width = std::max(ef, k);
    parallel_for(num_queries, kSearchChunk, num_threads, [&](int64_t q0, int64_t q1) {
        Scratch& s = thread_scratch();
        for (int64_t i = q0; i < q1; ++i) {
            const float* q = queries + i * g.dim;
            int64_t* out_rows = rows + i * k;
            float* out_scores = scores + i * k;
            std::fill(out_rows, out_rows + k, int64_t{-1});
            std::fill(out_scores, out_scores + k, -INFINITY);
            if (entry.node < 0 || n == 0) continue;
            descend(g, q, n, entry, 0, s);
            search_level(g, q, n, width, 0, alive, s);
            int out = 0;
            for (size_t j = 0; j < s.found.size() && out < k; ++j) {
                const Scored& f = s.found[j];
                if (f.dist != f.dist) continue;  // NaN: a corrupt vector, never returned
                out_rows[out] = f.id;
                out_scores[out++] = -f.dist;
            }
        }
    });
}

template HnswPending hnsw_insert(const HnswGraph<float>&, HnswEntry, int64_t, int64_t, const int64_t*, int, int);
template HnswPending hnsw_insert(const HnswGraph<uint16_t>&, HnswEntry, int64_t, int64_t, const int64_t*, int, int);
template void hnsw_search(const HnswGraph<float>&, HnswEntry, int64_t, const uint8_t*, const float*, int64_t, int,
                          int, int, int64_t*, float*);
template void hnsw_search(const HnswGraph<uint16_t>&, HnswEntry, int64_t, const uint8_t*, const float*, int64_t, int,
                          int, int, int64_t*, float*);

}  // namespace ramen
