// CPU kernel of the fused triplet scoring (see triplet.h): one pass per row, rows spread over
// threads. Per row, while it is in cache: copy the scores with the non-candidates (positive and
// excluded columns) set to -inf, select the hardest k with a heap behind a vectorised threshold
// test (never a full sort), then the hinges, the loss and the row of grad: dense, or its nonzeros
// appended to the chunk's sparse sink (the chunks are joined into one CSR at the end).
//
// Hot loops use fixed-width vectors (GCC/Clang vector extensions: AVX-512 with -march=native on
// this CPU, narrower instructions elsewhere). Their lane order is fixed, so sums come out the same
// whatever the thread count.
#include "triplet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parallel.h"

namespace ramen {
namespace {

enum Status : uint8_t { kCandidate = 0, kPositive = 1, kExcluded = 2 };

constexpr int64_t kRowsPerChunk = 8;
constexpr int64_t kSmallK = 16;  // up to this k, selection by a sorted insertion buffer

template <typename T>
struct Simd;
template <>
struct Simd<float> {
    typedef float V __attribute__((vector_size(64)));
};
template <>
struct Simd<double> {
    typedef double V __attribute__((vector_size(64)));
};
template <typename T>
using Vec = typename Simd<T>::V;
template <typename T>
constexpr int64_t kWidth = static_cast<int64_t>(sizeof(Vec<T>) / sizeof(T));

// Vectors go by reference, never by value, so the ABI does not depend on the instruction set.
template <typename T>
inline void load(Vec<T>& v, const T* p) {
    std::memcpy(&v, p, sizeof v);
}
template <typename T>
inline void store(T* p, const Vec<T>& v) {
    std::memcpy(p, &v, sizeof v);
}
template <typename T>
inline double lane_sum(const Vec<T>& v) {
    double total = 0.0;
    for (int64_t l = 0; l < kWidth<T>; ++l) total += static_cast<double>(v[l]);
    return total;
}

// exp of a vector of arguments <= 0 (e.g. -inf), lanewise, for the softmax weights: x = n ln2 + r
// with |r| <= ln2 / 2 (ln2 split in two so that n ln2 is exact), a Taylor polynomial in r
// (degree 7 for float, 13 for double: truncation below 1e-8 and 1e-17 relative), times 2^n built
// in the exponent bits. Lanes below `low`, where exp is under the smallest normal, give 0.
template <typename T>
struct ExpTraits;
template <>
struct ExpTraits<float> {
    typedef int32_t I __attribute__((vector_size(64)));
    static constexpr float low = -87.0f, magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    static constexpr int bias = 127, mantissa_bits = 23, degree = 7;
};
template <>
struct ExpTraits<double> {
    typedef int64_t I __attribute__((vector_size(64)));
    static constexpr double low = -708.0, magic = 6755399441055744.0;  // 1.5 * 2^52
    static constexpr double ln2_hi = 0.693145751953125, ln2_lo = 1.42860682030941723212e-6;
    static constexpr int bias = 1023, mantissa_bits = 52, degree = 13;
};

template <typename T>
inline void exp_nonpositive(Vec<T>& v) {
    using E = ExpTraits<T>;
    using I = typename E::I;
    static_assert(sizeof(I) == sizeof(Vec<T>), "lane counts must match");
    const Vec<T> zero = {};
    const Vec<T> low = zero + E::low, magic = zero + E::magic;
    const auto below = v < low;
    const Vec<T> x = below ? low : v;
    const Vec<T> t = x * T(1.4426950408889634) + magic;  // magic + round(x / ln2)
    const Vec<T> n = t - magic;
    const Vec<T> r = (x - n * E::ln2_hi) - n * E::ln2_lo;
    T coef = T(1);  // 1 / degree!
    for (int d = 2; d <= E::degree; ++d) coef /= T(d);
    Vec<T> p = zero + coef;
    for (int d = E::degree; d >= 1; --d) {
        coef *= T(d);  // now 1 / (d - 1)!
        p = p * r + coef;
    }
    I t_bits, magic_bits, scale_bits;
    std::memcpy(&t_bits, &t, sizeof t);
    std::memcpy(&magic_bits, &magic, sizeof magic);
    scale_bits = (t_bits - magic_bits + E::bias) << E::mantissa_bits;  // 2^n
    Vec<T> scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    v = below ? zero : p * scale;
}

void check_csr(const ColumnSets& sets, int64_t rows, const char* name) {
    if (sets.indptr == nullptr) return;
    if (sets.indptr[0] != 0)
        throw std::invalid_argument(std::string(name) + ": indptr[0] must be 0, got " +
                                    std::to_string(sets.indptr[0]));
    for (int64_t i = 0; i < rows; ++i)
        if (sets.indptr[i + 1] < sets.indptr[i])
            throw std::invalid_argument(std::string(name) + ": indptr decreases at row " +
                                        std::to_string(i));
    if (sets.indptr[rows] != sets.nnz)
        throw std::invalid_argument(std::string(name) + ": indptr[-1] = " +
                                    std::to_string(sets.indptr[rows]) + " but there are " +
                                    std::to_string(sets.nnz) + " indices");
}

[[noreturn]] void throw_bad_column(const char* name, int64_t row, int64_t col, int64_t cols) {
    throw std::invalid_argument(std::string(name) + ": column id " + std::to_string(col) + " in row " +
                                std::to_string(row) + " is outside [0, " + std::to_string(cols) + ")");
}

// out[0, n) = s[0, n); returns whether every value is finite (v - v is 0 exactly for finite v,
// NaN for Inf and NaN).
template <typename T>
bool copy_finite(const T* s, int64_t n, T* out) {
    constexpr int64_t W = kWidth<T>;
    Vec<T> check = {};
    int64_t j = 0;
    for (; j + W <= n; j += W) {
        Vec<T> x;
        load(x, s + j);
        store(out + j, x);
        check += x - x;
    }
    bool finite = lane_sum<T>(check) == 0.0;
    for (; j < n; ++j) {
        out[j] = s[j];
        finite &= s[j] - s[j] == T(0);
    }
    return finite;
}

// Plain hinges of one positive (score sp) against negatives s[0, n) (-inf: not a negative):
// adds 1 to g[b] for every violating b; returns (sum of the hinges, number violating).
template <typename T>
std::pair<double, int64_t> hinge_pass(const T* s, int64_t n, T sp, T margin, T* g) {
    constexpr int64_t W = kWidth<T>;
    const Vec<T> zero = {};
    const Vec<T> one = zero + T(1);
    Vec<T> sum = {}, num = {};
    int64_t b = 0;
    for (; b + W <= n; b += W) {
        Vec<T> x, grad;
        load(x, s + b);
        load(grad, g + b);
        const Vec<T> h = x - sp + margin;
        const auto violated = h > zero;
        const Vec<T> add = violated ? one : zero;
        sum += violated ? h : zero;
        num += add;
        store(g + b, grad + add);
    }
    double total = lane_sum<T>(sum), count = lane_sum<T>(num);
    for (; b < n; ++b) {
        const T h = s[b] - sp + margin;
        if (h > T(0)) {
            total += static_cast<double>(h);
            count += 1.0;
            g[b] += T(1);
        }
    }
    return {total, static_cast<int64_t>(count)};
}

// Softmax-weighted hinges of one positive: e[b] is negative b's weight exp((s_b - top) / T), 0
// where it violates no margin. Adds the normalised weight to g[b] for every violating b; returns
// the weighted hinge sum (0 if none violates) and whether any did.
template <typename T>
std::pair<double, bool> softmax_pass(const T* s, const T* e, int64_t n, T sp, T margin, T* g) {
    constexpr int64_t W = kWidth<T>;
    const Vec<T> zero = {};
    Vec<T> zv = {}, weighted = {};
    int64_t b = 0;
    for (; b + W <= n; b += W) {
        Vec<T> x, w;
        load(x, s + b);
        load(w, e + b);
        const Vec<T> h = x - sp + margin;
        const auto violated = h > zero;
        zv += violated ? w : zero;
        weighted += violated ? w * h : zero;
    }
    double z = lane_sum<T>(zv), total = lane_sum<T>(weighted);
    for (int64_t t = b; t < n; ++t) {
        const T h = s[t] - sp + margin;
        if (h > T(0)) {
            z += static_cast<double>(e[t]);
            total += static_cast<double>(e[t]) * static_cast<double>(h);
        }
    }
    if (z == 0.0) return {0.0, false};
    const T inv_z = static_cast<T>(1.0 / z);
    for (b = 0; b + W <= n; b += W) {
        Vec<T> x, w, grad;
        load(x, s + b);
        load(w, e + b);
        load(grad, g + b);
        const Vec<T> h = x - sp + margin;
        store(g + b, grad + ((h > zero) ? w * inv_z : zero));
    }
    for (; b < n; ++b) {
        const T h = s[b] - sp + margin;
        if (h > T(0)) g[b] += e[b] * inv_z;
    }
    return {total / z, true};
}

// The nonzeros of G's rows in one chunk of rows, in row order; row_nnz counts them per row.
template <typename T>
struct SparseSink {
    std::vector<int64_t> indices;
    std::vector<T> values;
    int64_t* row_nnz = nullptr;  // the current row's counter

    void append(int64_t j, T v) {
        if (v == T(0)) return;
        indices.push_back(j);
        values.push_back(v);
        ++*row_nnz;
    }
    void append_nonzeros(const T* g, int64_t n) {
        for (int64_t j = 0; j < n; ++j) append(j, g[j]);
    }
};

// Scratch for one thread, reused across rows; mines one row at a time.
template <typename T>
class RowMiner {
 public:
    RowMiner(int64_t cols, const ColumnSets& positives, const ColumnSets& exclude, const TripletOptions& options)
        : cols_(cols),
          positives_(positives),
          exclude_(exclude),
          options_(options),
          status_(cols, kCandidate),
          masked_(cols) {}

    // Mines row i of S (scores) into its grad row, which may be the same memory, or with a
    // sink appends the row's nonzeros to it instead (grow is then scratch); returns the row's loss
    // and triplet count.
    std::pair<double, int64_t> run(int64_t i, const T* scores, T* grow, SparseSink<T>* sink) {
        if (!copy_finite(scores, cols_, masked_.data()))
            throw std::invalid_argument("scores S = q @ c.T: row " + std::to_string(i) +
                                        " holds NaN or Inf (check q and c)");
        mark(i);
        const int64_t num_candidates = cols_ - static_cast<int64_t>(marked_.size());
        pos_score_.clear();
        for (const int64_t p : pos_) pos_score_.push_back(masked_[p]);
        for (const int64_t j : marked_) {
            masked_[j] = -std::numeric_limits<T>::infinity();  // no negative
            status_[j] = kCandidate;                           // clean for the next row
        }
        // from here on scores may be gone
        if (pos_.empty() || num_candidates == 0) {
            if (sink == nullptr) std::fill(grow, grow + cols_, T(0));
            return {0.0, 0};
        }
        const int64_t k = options_.num_negatives;
        if (k <= 0 || k >= num_candidates) {
            std::fill(grow, grow + cols_, T(0));
            const double loss = hinges(masked_.data(), cols_, grow);  // every candidate, over the row
            for (size_t a = 0; a < pos_.size(); ++a) grow[pos_[a]] = pos_grad_[a];
            if (sink != nullptr) sink->append_nonzeros(grow, cols_);
            return {loss, static_cast<int64_t>(pos_.size()) * num_candidates};
        }
        select_hardest(k);
        neg_grad_.assign(k, T(0));
        const double loss = hinges(neg_score_.data(), k, neg_grad_.data());
        if (sink != nullptr) {
            for (int64_t b = 0; b < k; ++b) sink->append(neg_col_[b], neg_grad_[b]);
            for (size_t a = 0; a < pos_.size(); ++a) sink->append(pos_[a], pos_grad_[a]);
        } else {
            std::fill(grow, grow + cols_, T(0));
            for (int64_t b = 0; b < k; ++b) grow[neg_col_[b]] = neg_grad_[b];
            for (size_t a = 0; a < pos_.size(); ++a) grow[pos_[a]] = pos_grad_[a];
        }
        return {loss, static_cast<int64_t>(pos_.size()) * k};
    }

 private:
    // Marks row i's excluded, then positive columns in status_ (which is all kCandidate between
    // rows); marked_: the columns marked, each once; pos_: the positive columns, each once.
    void mark(int64_t i) {
        marked_.clear();
        pos_.clear();
        const auto set = [&](int64_t j, Status status) {
            if (status_[j] == kCandidate) marked_.push_back(j);
            status_[j] = status;
        };
        if (exclude_.mask != nullptr) {
            const uint8_t* m = exclude_.mask + i * cols_;
            for (int64_t j = 0; j < cols_; ++j)
                if (m[j]) set(j, kExcluded);
        } else if (exclude_.indptr != nullptr) {
            for (int64_t e = exclude_.indptr[i]; e < exclude_.indptr[i + 1]; ++e) {
                const int64_t j = exclude_.indices[e];
                if (j < 0 || j >= cols_) throw_bad_column("exclude", i, j, cols_);
                set(j, kExcluded);
            }
        }
        const auto set_positive = [&](int64_t j) {
            if (status_[j] == kPositive) return;  // a duplicate id counts once
            set(j, kPositive);
            pos_.push_back(j);
        };
        if (positives_.mask != nullptr) {
            const uint8_t* m = positives_.mask + i * cols_;
            for (int64_t j = 0; j < cols_; ++j)
                if (m[j]) set_positive(j);
        } else if (positives_.indptr != nullptr) {
            for (int64_t e = positives_.indptr[i]; e < positives_.indptr[i + 1]; ++e) {
                const int64_t j = positives_.indices[e];
                if (j < 0 || j >= cols_) throw_bad_column("positives", i, j, cols_);
                set_positive(j);
            }
        }
    }

    // neg_col_ / neg_score_: the k hardest candidates (score descending, lower column first on
    // ties), in no particular (but a deterministic) order. Needs 0 < k < number of candidates.
    //
    // First a lower bound of the k-th highest score: split the columns into L residue classes
    // (j mod L, a few vectors wide) and take the k-th highest of the classes' maxima, k distinct
    // candidates. Only the candidates reaching the bound (about k to 2k of them) go to
    // nth_element.
    void select_hardest(int64_t k) {
        constexpr int64_t W = kWidth<T>;
        const T* s = masked_.data();
        const T none = -std::numeric_limits<T>::infinity();
        const int64_t lanes = W * std::max<int64_t>(1, (4 * k + W - 1) / W);
        const int64_t full = 4 * lanes <= cols_ ? cols_ / lanes * lanes : 0;  // columns in whole chunks
        T bound = none;  // every one of the k hardest scores is >= bound
        if (full > 0) {
            lane_max_.resize(lanes);
            for (int64_t r = 0; r < lanes; r += W) {
                Vec<T> m, x;
                load(m, s + r);
                for (int64_t j = lanes + r; j < full; j += lanes) {
                    load(x, s + j);
                    m = m > x ? m : x;
                }
                store(lane_max_.data() + r, m);
            }
            values_.clear();
            for (const T v : lane_max_)
                if (v > none) values_.push_back(v);
            for (int64_t j = full; j < cols_; ++j)
                if (s[j] > none) values_.push_back(s[j]);
            if (static_cast<int64_t>(values_.size()) >= k) bound = kth_highest(k);
        }
        // Every candidate >= bound (only the classes whose maximum reaches it can hold one), then
        // the k hardest of them by (score descending, column ascending).
        const auto harder = [](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        };
        pairs_.clear();
        const auto take = [&](int64_t j) {
            if (s[j] > none && s[j] >= bound) pairs_.emplace_back(s[j], j);
        };
        if (bound > none) {
            for (int64_t r = 0; r < lanes; ++r)
                if (lane_max_[r] >= bound)
                    for (int64_t j = r; j < full; j += lanes) take(j);
            for (int64_t j = full; j < cols_; ++j) take(j);
        } else {
            for (int64_t j = 0; j < cols_; ++j) take(j);
        }
        std::nth_element(pairs_.begin(), pairs_.begin() + (k - 1), pairs_.end(), harder);
        neg_score_.resize(k);
        neg_col_.resize(k);
        for (int64_t b = 0; b < k; ++b) {
            neg_score_[b] = pairs_[b].first;
            neg_col_[b] = pairs_[b].second;
        }
    }

    // The k-th highest of values_ (reordered): for small k a sorted buffer of the k highest seen
    // (few values beat its last once it is full), else nth_element.
    T kth_highest(int64_t k) {
        if (k > kSmallK) {
            std::nth_element(values_.begin(), values_.begin() + (k - 1), values_.end(), std::greater<T>());
            return values_[k - 1];
        }
        T top[kSmallK];
        int64_t size = 0;
        for (const T v : values_) {
            if (size == k && !(v > top[k - 1])) continue;
            int64_t at = size < k ? size++ : k - 1;
            for (; at > 0 && top[at - 1] < v; --at) top[at] = top[at - 1];
            top[at] = v;
        }
        return top[k - 1];
    }

    // The hinges of every positive against negatives s[0, n) (-inf entries are no negatives),
    // their grads added to g[0, n) and the positives' grads to pos_grad_; returns the row loss.
    double hinges(const T* s, int64_t n, T* g) {
        const T margin = static_cast<T>(options_.margin);
        const bool softmax = options_.temperature > 0;
        pos_grad_.assign(pos_.size(), T(0));
        if (softmax) softmax_weights(s, n);
        double loss = 0.0;
        for (size_t a = 0; a < pos_.size(); ++a) {
            if (softmax) {
                const auto [weighted, any] = softmax_pass(s, weight_.data(), n, pos_score_[a], margin, g);
                loss += weighted;
                pos_grad_[a] = any ? T(-1) : T(0);
            } else {
                const auto [sum, violated] = hinge_pass(s, n, pos_score_[a], margin, g);
                loss += sum;
                pos_grad_[a] = -static_cast<T>(violated);
            }
        }
        return loss;
    }

    // weight_[b] = exp((s_b - top) / temperature) for every negative that violates the margin of
    // some positive (the one of lowest score), 0 elsewhere. The top negative violates whenever any
    // does (the hinge is monotone in s_b), so a violating set's weights sum to at least 1.
    void softmax_weights(const T* s, int64_t n) {
        const T margin = static_cast<T>(options_.margin);
        const T temperature = static_cast<T>(options_.temperature);
        const T lowest_pos = *std::min_element(pos_score_.begin(), pos_score_.end());
        const T top = *std::max_element(s, s + n);
        weight_.resize(n);
        constexpr int64_t W = kWidth<T>;
        const Vec<T> zero = {};
        int64_t b = 0;
        for (; b + W <= n; b += W) {
            Vec<T> x;
            load(x, s + b);
            Vec<T> e = (x - top) / temperature;
            exp_nonpositive<T>(e);
            store(weight_.data() + b, (x - lowest_pos + margin > zero) ? e : zero);
        }
        for (; b < n; ++b)
            weight_[b] = s[b] - lowest_pos + margin > T(0) ? std::exp((s[b] - top) / temperature) : T(0);
    }

    const int64_t cols_;
    const ColumnSets& positives_;
    const ColumnSets& exclude_;
    const TripletOptions& options_;
    std::vector<uint8_t> status_;
    std::vector<T> masked_;
    std::vector<int64_t> marked_, pos_, neg_col_;
    std::vector<T> pos_score_, pos_grad_, neg_score_, neg_grad_, weight_, lane_max_, values_;
    std::vector<std::pair<T, int64_t>> pairs_;
};

}  // namespace

template <typename T>
void triplet_mine_cpu(const T* scores, int64_t rows, int64_t cols, const ColumnSets& positives,
                      const ColumnSets& exclude, const TripletOptions& options, T* loss, T* grad,
                      int64_t* count, int num_threads, SparseGrad<T>* sparse) {
    if (rows < 0 || cols < 0) throw std::invalid_argument("scores: negative shape");
    if (!(options.margin >= 0.0) || !std::isfinite(options.margin))
        throw std::invalid_argument("margin must be a finite number >= 0");
    if (!(options.temperature >= 0.0) || !std::isfinite(options.temperature))
        throw std::invalid_argument("softmax_temperature must be a finite number > 0");
    check_csr(positives, rows, "positives");
    check_csr(exclude, rows, "exclude");
    // sparse G: each chunk of rows appends to its own sink; then an exclusive scan over the rows'
    // counts places the chunks, in row order, into one CSR
    std::vector<SparseSink<T>> sinks(sparse != nullptr ? (rows + kRowsPerChunk - 1) / kRowsPerChunk : 0);
    std::vector<int64_t> row_nnz(sparse != nullptr ? rows : 0, 0);
    parallel_for(rows, kRowsPerChunk, num_threads, [&](int64_t begin, int64_t end) {
        RowMiner<T> miner(cols, positives, exclude, options);
        SparseSink<T>* sink = sparse != nullptr ? &sinks[begin / kRowsPerChunk] : nullptr;
        for (int64_t i = begin; i < end; ++i) {
            if (sink != nullptr) sink->row_nnz = &row_nnz[i];
            const auto [row_loss, row_count] = miner.run(i, scores + i * cols, grad + i * cols, sink);
            loss[i] = static_cast<T>(row_loss);
            count[i] = row_count;
        }
    });
    if (sparse == nullptr) return;
    sparse->indptr.assign(rows + 1, 0);
    for (int64_t i = 0; i < rows; ++i) sparse->indptr[i + 1] = sparse->indptr[i] + row_nnz[i];
    sparse->indices.resize(sparse->indptr[rows]);
    sparse->values.resize(sparse->indptr[rows]);
    parallel_for(static_cast<int64_t>(sinks.size()), 1, num_threads, [&](int64_t begin, int64_t end) {
        for (int64_t s = begin; s < end; ++s) {
            const int64_t at = sparse->indptr[s * kRowsPerChunk];
            std::copy(sinks[s].indices.begin(), sinks[s].indices.end(), sparse->indices.begin() + at);
            std::copy(sinks[s].values.begin(), sinks[s].values.end(), sparse->values.begin() + at);
        }
    });
}

template void triplet_mine_cpu<float>(const float*, int64_t, int64_t, const ColumnSets&, const ColumnSets&,
                                      const TripletOptions&, float*, float*, int64_t*, int, SparseGrad<float>*);
template void triplet_mine_cpu<double>(const double*, int64_t, int64_t, const ColumnSets&, const ColumnSets&,
                                       const TripletOptions&, double*, double*, int64_t*, int, SparseGrad<double>*);

}  // namespace ramen
