// CPU kernel of the fused triplet scoring (see triplet.h): one pass per row, rows spread over
// threads. Per row: mark positive and excluded columns, select the hardest candidates (a sorted
// insertion buffer for small k, nth_element otherwise; never a full sort), then the hinges, the
// loss and the row of grad, all while the row is in cache.
#include "triplet.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "parallel.h"

namespace ramen {
namespace {

enum Status : uint8_t { kCandidate = 0, kPositive = 1, kExcluded = 2 };

// Up to this many negatives are selected with a sorted insertion buffer, beyond with nth_element.
constexpr int64_t kInsertionMaxK = 16;
constexpr int64_t kRowsPerChunk = 8;

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

template <typename T>
bool all_finite(const T* x, int64_t n) {
    bool ok = true;
    for (int64_t j = 0; j < n; ++j) ok &= std::isfinite(x[j]);
    return ok;
}

// Scratch for one thread, reused across rows; mines one row at a time.
template <typename T>
class RowMiner {
 public:
    RowMiner(int64_t cols, const ColumnSets& positives, const ColumnSets& exclude, const TripletOptions& options)
        : cols_(cols), positives_(positives), exclude_(exclude), options_(options), status_(cols) {}

    // Mines row i of S (scores) into its grad row, which may be the same memory; returns the
    // row's loss and triplet count.
    std::pair<double, int64_t> run(int64_t i, const T* scores, T* grow) {
        row_.assign(scores, scores + cols_);
        const T* srow = row_.data();
        if (!all_finite(srow, cols_))
            throw std::invalid_argument("scores S = q @ c.T: row " + std::to_string(i) +
                                        " holds NaN or Inf (check q and c)");
        std::fill(grow, grow + cols_, T(0));
        mark(i);
        if (pos_.empty()) return {0.0, 0};
        select(srow);
        if (neg_col_.empty()) return {0.0, 0};
        const double loss = options_.temperature > 0 ? softmax_hinges(srow, grow) : hinges(srow, grow);
        for (size_t b = 0; b < neg_col_.size(); ++b) grow[neg_col_[b]] = neg_grad_[b];
        return {loss, static_cast<int64_t>(pos_.size() * neg_col_.size())};
    }

 private:
    // status_ of every column of row i, and pos_: its positive columns, each once.
    void mark(int64_t i) {
        if (exclude_.mask != nullptr) {
            const uint8_t* m = exclude_.mask + i * cols_;
            for (int64_t j = 0; j < cols_; ++j) status_[j] = m[j] ? kExcluded : kCandidate;
        } else {
            std::fill(status_.begin(), status_.end(), kCandidate);
            if (exclude_.indptr != nullptr)
                for (int64_t e = exclude_.indptr[i]; e < exclude_.indptr[i + 1]; ++e) {
                    const int64_t j = exclude_.indices[e];
                    if (j < 0 || j >= cols_) throw_bad_column("exclude", i, j, cols_);
                    status_[j] = kExcluded;
                }
        }
        pos_.clear();
        if (positives_.mask != nullptr) {
            const uint8_t* m = positives_.mask + i * cols_;
            for (int64_t j = 0; j < cols_; ++j)
                if (m[j]) {
                    status_[j] = kPositive;
                    pos_.push_back(j);
                }
        } else if (positives_.indptr != nullptr) {
            for (int64_t e = positives_.indptr[i]; e < positives_.indptr[i + 1]; ++e) {
                const int64_t j = positives_.indices[e];
                if (j < 0 || j >= cols_) throw_bad_column("positives", i, j, cols_);
                if (status_[j] == kPositive) continue;  // a duplicate id counts once
                status_[j] = kPositive;
                pos_.push_back(j);
            }
        }
    }

    // neg_col_ / neg_score_: the hardest candidates (score descending, lower column first).
    void select(const T* srow) {
        int64_t num_candidates = 0;
        for (int64_t j = 0; j < cols_; ++j) num_candidates += status_[j] == kCandidate;
        const int64_t k = options_.num_negatives;
        neg_col_.clear();
        neg_score_.clear();
        if (k <= 0 || k >= num_candidates) {
            for (int64_t j = 0; j < cols_; ++j)
                if (status_[j] == kCandidate) {
                    neg_col_.push_back(j);
                    neg_score_.push_back(srow[j]);
                }
        } else if (k <= kInsertionMaxK) {
            select_by_insertion(srow, k);
        } else {
            select_by_nth_element(srow, k);
        }
        neg_grad_.assign(neg_col_.size(), T(0));
    }

    // A buffer kept sorted by (score descending, column ascending). Columns arrive in increasing
    // order, so a newcomer goes after every equal score already held and never displaces a tie.
    void select_by_insertion(const T* srow, int64_t k) {
        neg_col_.resize(k);
        neg_score_.resize(k);
        int64_t size = 0;
        for (int64_t j = 0; j < cols_; ++j) {
            if (status_[j] != kCandidate) continue;
            const T s = srow[j];
            if (size == k && !(s > neg_score_[k - 1])) continue;
            int64_t at = size < k ? size : k - 1;  // the slot freed (or the new last one)
            while (at > 0 && neg_score_[at - 1] < s) {
                neg_score_[at] = neg_score_[at - 1];
                neg_col_[at] = neg_col_[at - 1];
                --at;
            }
            neg_score_[at] = s;
            neg_col_[at] = j;
            if (size < k) ++size;
        }
    }

    void select_by_nth_element(const T* srow, int64_t k) {
        pairs_.clear();
        for (int64_t j = 0; j < cols_; ++j)
            if (status_[j] == kCandidate) pairs_.emplace_back(srow[j], j);
        const auto harder = [](const std::pair<T, int64_t>& a, const std::pair<T, int64_t>& b) {
            return a.first > b.first || (a.first == b.first && a.second < b.second);
        };
        std::nth_element(pairs_.begin(), pairs_.begin() + (k - 1), pairs_.end(), harder);
        for (int64_t b = 0; b < k; ++b) {
            neg_score_.push_back(pairs_[b].first);
            neg_col_.push_back(pairs_[b].second);
        }
    }

    // Plain hinges: every violating (p, n) adds h to the loss, +1 to grad[n] and -1 to grad[p].
    double hinges(const T* srow, T* grow) {
        const T margin = static_cast<T>(options_.margin);
        const int64_t num_neg = static_cast<int64_t>(neg_col_.size());
        const T* ns = neg_score_.data();
        T* ng = neg_grad_.data();
        double loss = 0.0;
        for (const int64_t p : pos_) {
            const T sp = srow[p];
            double sum = 0.0;
            int64_t violated = 0;
            for (int64_t b = 0; b < num_neg; ++b) {
                const T h = ns[b] - sp + margin;
                const bool v = h > T(0);
                sum += v ? static_cast<double>(h) : 0.0;
                violated += v;
                ng[b] += v ? T(1) : T(0);
            }
            grow[p] = -static_cast<T>(violated);
            loss += sum;
        }
        return loss;
    }

    // Softmax-weighted hinges: for each p the violating negatives share a weight of 1 in
    // proportion to exp(S_in / temperature). The row's highest negative violates whenever any
    // does (h is monotone in S_in), so exponents relative to it never overflow and Z >= 1.
    double softmax_hinges(const T* srow, T* grow) {
        const T margin = static_cast<T>(options_.margin);
        const T temperature = static_cast<T>(options_.temperature);
        const int64_t num_neg = static_cast<int64_t>(neg_col_.size());
        const T* ns = neg_score_.data();
        T* ng = neg_grad_.data();
        const T top = *std::max_element(neg_score_.begin(), neg_score_.end());
        weight_.resize(num_neg);
        for (int64_t b = 0; b < num_neg; ++b) weight_[b] = std::exp((ns[b] - top) / temperature);
        const T* e = weight_.data();
        double loss = 0.0;
        for (const int64_t p : pos_) {
            const T sp = srow[p];
            double z = 0.0, weighted = 0.0;
            for (int64_t b = 0; b < num_neg; ++b) {
                const T h = ns[b] - sp + margin;
                if (h > T(0)) {
                    z += static_cast<double>(e[b]);
                    weighted += static_cast<double>(e[b]) * static_cast<double>(h);
                }
            }
            if (z == 0.0) continue;
            const double inv_z = 1.0 / z;
            for (int64_t b = 0; b < num_neg; ++b) {
                const T h = ns[b] - sp + margin;
                if (h > T(0)) ng[b] += static_cast<T>(static_cast<double>(e[b]) * inv_z);
            }
            grow[p] = T(-1);
            loss += weighted * inv_z;
        }
        return loss;
    }

    const int64_t cols_;
    const ColumnSets& positives_;
    const ColumnSets& exclude_;
    const TripletOptions& options_;
    std::vector<uint8_t> status_;
    std::vector<int64_t> pos_;
    std::vector<int64_t> neg_col_;
    std::vector<T> row_, neg_score_, neg_grad_, weight_;
    std::vector<std::pair<T, int64_t>> pairs_;
};

}  // namespace

template <typename T>
void triplet_mine_cpu(const T* scores, int64_t rows, int64_t cols, const ColumnSets& positives,
                      const ColumnSets& exclude, const TripletOptions& options, T* loss, T* grad,
                      int64_t* count, int num_threads) {
    if (rows < 0 || cols < 0) throw std::invalid_argument("scores: negative shape");
    if (!(options.margin >= 0.0) || !std::isfinite(options.margin))
        throw std::invalid_argument("margin must be a finite number >= 0");
    if (!(options.temperature >= 0.0) || !std::isfinite(options.temperature))
        throw std::invalid_argument("softmax_temperature must be a finite number > 0");
    check_csr(positives, rows, "positives");
    check_csr(exclude, rows, "exclude");
    parallel_for(rows, kRowsPerChunk, num_threads, [&](int64_t begin, int64_t end) {
        RowMiner<T> miner(cols, positives, exclude, options);
        for (int64_t i = begin; i < end; ++i) {
            const auto [row_loss, row_count] = miner.run(i, scores + i * cols, grad + i * cols);
            loss[i] = static_cast<T>(row_loss);
            count[i] = row_count;
        }
    });
}

template void triplet_mine_cpu<float>(const float*, int64_t, int64_t, const ColumnSets&, const ColumnSets&,
                                      const TripletOptions&, float*, float*, int64_t*, int);
template void triplet_mine_cpu<double>(const double*, int64_t, int64_t, const ColumnSets&, const ColumnSets&,
                                       const TripletOptions&, double*, double*, int64_t*, int);

}  // namespace ramen
