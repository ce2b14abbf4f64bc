"""Ranking metrics of extreme classification, as the XC repository's tools (pyxclib) define them.

For predictions ranked best first and k = 1..K, with Q test queries, y_i the true labels of query
i, hit_ij = [j-th prediction of i is in y_i] and w_l = 1/p_l the inverse propensity of label l:

    P@k      = mean_i  sum_{j<=k} hit_ij / k
    nDCG@k   = mean_i  DCG_i@k / IDCG_i@k,  DCG_i@k = sum_{j<=k} hit_ij / log2(j+1),
               IDCG_i@k = sum_{j<=min(k,|y_i|)} 1 / log2(j+1)
    R@k      = mean_i  sum_{j<=k} hit_ij / |y_i|
    PSP@k    = [mean_i sum_{j<=k} w_(ij) hit_ij / k]  /  [mean_i sum of the k largest w_l, l in y_i, / k]
    PSnDCG@k = the same ratio of dataset means with w-weighted DCG_i@k / IDCG_i@k (IDCG by counts)

A query without true labels counts as zero in every mean (it is not dropped); a ratio whose
denominator is zero (no query has a label) is reported as 0. Predictions are label ids, best first,
padded with -1; each id may appear once per row. Results are fractions (multiply by 100 for %).
"""
from __future__ import annotations

import math
import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["decile_breakdown", "evaluate", "format_table", "inv_propensity", "label_deciles"]


def inv_propensity(train_Y: sp.spmatrix, A: float, B: float) -> np.ndarray:
    """(L,) float64 inverse propensities 1/p_l = 1 + C (N_l + B)^-A, C = (ln N - 1)(B + 1)^A
    (Jain et al., 2016): N training points, N_l of them with label l (stored non-zero entries of
    train_Y, a sparse matrix: a stored zero is not a positive, as in `evaluate`'s true_Y).

    A >= 0, B > -1, both finite (ramen.json's rule). N >= 3: for N <= 2, ln N < 1 makes C < 0, so
    p_l > 1 and the weights fall below 1 as labels get rarer (below 0 for unseen ones); that is
    refused with a ValueError rather than clamped to C = 0, which would quietly turn PSP into plain
    P. A label without training positives needs B > 0 (or A = 0): (0 + B)^-A is undefined for B <= 0.
    """
    _check_propensity_constants(A, B)
    freq = _label_counts(train_Y).astype(np.float64)
    N = train_Y.shape[0]
    if N < 1:
        raise ValueError("train_Y has no rows: propensities need training points")
    if N < 3:
        raise ValueError(f"train_Y has {N} row{'s' if N > 1 else ''}: propensities need at least 3 training "
                         f"points (C = (ln N - 1)(B + 1)^A is negative for N <= 2, which weights rare labels below "
                         "frequent ones)")
    unseen = np.flatnonzero(freq == 0)
    if A > 0 and B <= 0 and len(unseen):
        raise ValueError(f"label {unseen[0]} has no training positives and B = {float(B)} <= 0: its weight "
                         f"(N_l + B)^-A is undefined ({len(unseen)} such labels); use B > 0")
    A, B = np.float64(A), np.float64(B)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named below
        C = (np.log(N) - 1.0) * (B + 1.0) ** A
        w = 1.0 + C * (freq + B) ** (-A)
    bad = np.flatnonzero(~np.isfinite(w))
    if len(bad):
        raise ValueError(f"the weight of label {bad[0]} is not finite ({w[bad[0]]}): (B + 1)^A or (N_l + B)^-A "
                         f"overflows float64 at A={float(A)}, B={float(B)}")
    return w


def _check_propensity_constants(A: object, B: object) -> None:
    """A >= 0 and B > -1, finite real numbers: otherwise the weights are NaN or negative, and only
    `evaluate` would say so, without naming A or B."""
    if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in (A, B)):
        raise TypeError(f"A and B must be real numbers, got A={A!r}, B={B!r}")
    if not (math.isfinite(A) and math.isfinite(B) and A >= 0 and B > -1):
        raise ValueError(f"propensity constants must be finite with A >= 0 and B > -1, got A={float(A)}, B={float(B)}")


def _in_row_order(indptr: np.ndarray, indices: np.ndarray) -> bool:
    """Whether each CSR row's column indices strictly increase (sorted, no duplicates): read from the
    arrays, not from scipy's cached flags, which go stale when the arrays are changed in place."""
    steps = np.diff(indices) > 0  # column ids: their differences fit the index dtype
    starts = indptr[1:-1]
    steps[starts[(starts > 0) & (starts < len(indices))] - 1] = True  # a row's first entry may be any
    return bool(steps.all())


def _canonical(m: sp.spmatrix) -> sp.csr_matrix:
    """m as CSR with each row's entries in column order and a label stored twice summed into one
    entry (scipy's meaning of a duplicate); on a copy when that changes anything, never in place."""
    c = sp.csr_matrix(m)
    if _in_row_order(c.indptr, c.indices):
        return c
    c = sp.csr_matrix((c.data.copy(), c.indices.copy(), c.indptr.copy()), shape=c.shape)  # fresh flags
    c.sum_duplicates()
    return c


def _check_count(value: object, name: str) -> int:
    """value as an int >= 1: numpy integers pass, bool and floats do not (they would fail later
    in numpy with a message that does not name the argument)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _as_labels(Y: object, name: str, rows: str) -> sp.csr_matrix:
    """Y as canonical CSR whose every stored entry is a label: a stored zero is not one (pyxclib reads
    the values), a label stored twice is one, a negative or NaN value is an error naming `name`; on a
    copy when that changes anything, never in place."""
    if not sp.issparse(Y):
        raise TypeError(f"{name} must be a scipy sparse matrix ({rows} x labels), got {type(Y).__name__}")
    t = _canonical(Y)
    bad = ~(t.data >= 0) if t.data.dtype != bool else np.zeros(0, bool)  # negative or NaN: not a relevance
    if bad.any():
        at = int(np.flatnonzero(bad)[0])
        row = int(np.searchsorted(t.indptr, at, side="right") - 1)
        raise ValueError(f"{name}: entry ({row}, {int(t.indices[at])}) is {t.data[at]!r}; a label is a positive "
                         f"entry and 0 is none, so negative or NaN values have no meaning here")
    if (t.data == 0).any():
        t = t.copy()
        t.eliminate_zeros()
    return t


def _as_truth(true_Y: object) -> sp.csr_matrix:
    return _as_labels(true_Y, "true_Y", "queries")


def _label_counts(train_Y: object) -> np.ndarray:
    """(L,) int64 training positives of each label: its stored non-zero entries in train_Y."""
    t = _as_labels(train_Y, "train_Y", "training points")
    return np.bincount(t.indices, minlength=t.shape[1]).astype(np.int64)


def _row_keys(indptr: np.ndarray, cols: np.ndarray, L: int) -> np.ndarray:
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return rows * L + cols.astype(np.int64)


def _filter_keys(filter: object, Q: int, L: int) -> np.ndarray | None:
    if filter is None:
        return None
    f = np.asarray(filter)
    if f.size == 0:
        return np.empty(0, np.int64)
    if f.ndim != 2 or f.shape[1] != 2 or not np.issubdtype(f.dtype, np.integer):
        raise ValueError(f"filter must be an (n, 2) integer array of (query, label) pairs, got {f.dtype} {f.shape}")
    if f.min() < 0 or f[:, 0].max() >= Q or f[:, 1].max() >= L:
        raise ValueError(f"filter pairs must lie in [0, {Q}) x [0, {L}) (queries x labels)")
    return np.unique(f[:, 0].astype(np.int64) * L + f[:, 1])


def _isin_sorted(keys: np.ndarray, sorted_keys: np.ndarray) -> np.ndarray:
    if len(sorted_keys) == 0:
        return np.zeros(keys.shape, dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return sorted_keys[pos] == keys


_BLOCK_CELLS = 1 << 22  # scores ranked at once when ranking rows of a CSR matrix


def _block_topk(S: np.ndarray, C: np.ndarray, k: int) -> np.ndarray:
    """(R, k) ids C of each row's k highest scores S (R, W), ties to the earlier position."""
    R, W = S.shape
    if W > k:
        kth = -np.partition(-S, k - 1, axis=1)[:, k - 1:k]  # the k-th highest score of each row
        greater = S > kth
        equal = S == kth
        chosen = greater | (equal & (np.cumsum(equal, axis=1) <= k - greater.sum(axis=1, keepdims=True)))
        pos = np.nonzero(chosen)[1].reshape(R, k)  # ascending positions
        S, C = np.take_along_axis(S, pos, axis=1), np.take_along_axis(C, pos, axis=1)
    order = np.argsort(-S, axis=1, kind="stable")
    return np.take_along_axis(C, order, axis=1).astype(np.int64)


def _row_topk(indptr: np.ndarray, cols: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) columns of each CSR row's k highest scores (ties: the earlier entry, i.e. the lower
    column in a sorted row), -1 padded."""
    Q = len(indptr) - 1
    counts = np.diff(indptr)
    nnz = len(cols)
    width = max(int(counts.max(initial=0)), k)
    rows = np.repeat(np.arange(Q), counts)
    pos = np.arange(nnz) - np.repeat(indptr[:-1], counts)
    if Q * width > 4 * nnz + Q * k:  # very uneven rows: sort all entries by (row, rank of score)
        rank = np.empty(nnz, dtype=np.int64)
        rank[np.argsort(-scores, kind="stable")] = np.arange(nnz)
        order = np.argsort(rows * max(nnz, 1) + rank)
        keep = pos < k
        out = np.full((Q, k), -1, dtype=np.int64)
        out[rows[keep], pos[keep]] = cols[order][keep]
        return out
    out = np.empty((Q, k), dtype=np.int64)
    step = max(1, _BLOCK_CELLS // width)  # rows per block: bounded memory
    for r0 in range(0, Q, step):
        r1 = min(Q, r0 + step)
        lo, hi = indptr[r0], indptr[r1]
        S = np.full((r1 - r0, width), -np.inf, dtype=np.result_type(scores.dtype, np.float32))
        C = np.full((r1 - r0, width), -1, dtype=np.int64)
        S[rows[lo:hi] - r0, pos[lo:hi]] = scores[lo:hi]
        C[rows[lo:hi] - r0, pos[lo:hi]] = cols[lo:hi]
        out[r0:r1] = _block_topk(S, C, k)
    return out


def _ranked(pred: object, Q: int, L: int, k: int, fkeys: np.ndarray | None) -> np.ndarray:
    """(Q, k) int64 predicted label ids, best first, filtered pairs removed, -1 padded."""
    if sp.issparse(pred):
        if pred.shape != (Q, L):
            raise ValueError(f"pred score matrix has shape {pred.shape}, expected {(Q, L)} (queries x labels)")
        if pred.dtype.kind not in "iuf":  # as a dense pred of bool (or complex) is refused
            raise ValueError(f"pred score matrix must hold real numbers (it is ranked by score), got dtype {pred.dtype}")
        s = _canonical(pred)  # a label stored twice counts once; ties by position are ties by label id
        if np.isnan(s.data).any():
            raise ValueError("pred score matrix holds NaN scores")
        scores = s.data if s.dtype.kind == "f" else s.data.astype(np.float64)  # -scores of unsigned ints wraps
        indptr, cols = s.indptr.astype(np.int64), s.indices.astype(np.int64)
        if fkeys is not None and len(fkeys):
            keep = ~_isin_sorted(_row_keys(indptr, cols, L), fkeys)
            rows = np.repeat(np.arange(Q), np.diff(indptr))[keep]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=Q))])
            cols, scores = cols[keep], scores[keep]
        return _row_topk(indptr, cols, scores, k)
    p = np.asarray(pred)
    if p.ndim != 2 or p.shape[0] != Q:
        raise ValueError(f"pred must be a (queries, k) array of label ids or a CSR score matrix; got shape "
                         f"{p.shape} for {Q} queries")
    if np.issubdtype(p.dtype, np.floating):
        if p.shape != (Q, L):
            raise ValueError(f"a float pred is a dense score matrix and must have shape {(Q, L)}; label ids must "
                             "be integers")
        if np.isnan(p).any():
            raise ValueError("pred score matrix holds NaN scores")
        if fkeys is not None and len(fkeys):
            p = p.copy()
            p.ravel()[fkeys] = -np.inf  # keys are row * L + label: flat positions
        ids = np.broadcast_to(np.arange(L), p.shape)
        top = np.concatenate([_block_topk(p[r0:r0 + 4096], ids[r0:r0 + 4096], min(k, L)) for r0 in range(0, Q, 4096)]
                             or [np.empty((0, min(k, L)), np.int64)])
        return _ranked(top, Q, L, k, fkeys)  # ties: lower label id first
    if not np.issubdtype(p.dtype, np.integer):
        raise ValueError(f"pred must hold integer label ids (or be a CSR score matrix), got dtype {p.dtype}")
    p = p.astype(np.int64)
    if p.size and (p.min() < -1 or p.max() >= L):
        raise ValueError(f"pred label ids must lie in [0, {L}) or be -1 (padding), found {p.min()}..{p.max()}")
    srt = np.sort(p, axis=1)
    dup = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] >= 0)
    if dup.any():
        row = int(np.nonzero(dup.any(axis=1))[0][0])
        raise ValueError(f"pred row {row} lists a label id twice: each label may be predicted once per query")
    if fkeys is not None and len(fkeys):
        drop = (p >= 0) & _isin_sorted(np.arange(Q, dtype=np.int64)[:, None] * L + p, fkeys)
        order = np.argsort(drop, axis=1, kind="stable")
        p = np.where(np.take_along_axis(drop, order, axis=1), -1, np.take_along_axis(p, order, axis=1))
    if p.shape[1] >= k:
        return p[:, :k]
    return np.concatenate([p, np.full((Q, k - p.shape[1]), -1, np.int64)], axis=1)


def _hits(top: np.ndarray, truth: sp.csr_matrix) -> np.ndarray:
    """(Q, k) bool: whether each prediction is a true label of its query."""
    L = truth.shape[1]
    tkeys = _row_keys(truth.indptr, truth.indices, L)  # ascending: CSR with sorted indices
    keys = np.arange(top.shape[0], dtype=np.int64)[:, None] * L + top
    return (top >= 0) & _isin_sorted(keys, tkeys)


def _check_weights(inv_propensity: object, L: int) -> np.ndarray:
    """(L,) float64 weights: one finite, non-negative number per label, in an array of shape (L,)
    (a NaN or negative weight would make PSP NaN or negative without a word)."""
    w = np.asarray(inv_propensity)
    if w.dtype.kind not in "biuf":
        raise ValueError(f"inv_propensity must hold real numbers, got dtype {w.dtype}")
    if w.shape != (L,):  # not raveled: a 2-D array of L values is more likely a mistake than weights
        raise ValueError(f"inv_propensity must have shape ({L},), one value per label ({L}), got shape {w.shape}")
    w = w.astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(w) | (w < 0))
    if len(bad):
        raise ValueError(f"inv_propensity must be finite and non-negative; label {bad[0]} has {w[bad[0]]} "
                         f"({len(bad)} such labels)")
    return w


def _best_weights(truth: sp.csr_matrix, w: np.ndarray, k: int) -> np.ndarray:
    """(Q, k) each query's k largest true-label weights, descending, 0 padded: the best achievable."""
    best_ids = _row_topk(truth.indptr, truth.indices.astype(np.int64), w[truth.indices], k)
    return np.where(best_ids >= 0, w[np.maximum(best_ids, 0)], 0.0)


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def evaluate(pred: object, true_Y: sp.spmatrix, *, inv_propensity: np.ndarray | None = None, k: int = 5,
             filter: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """P, nDCG, R (and PSP, PSnDCG when `inv_propensity` (L,) is given) at k = 1..K, each a (K,) array.

    pred: (Q, m) int label ids best first, -1 padded (m < K reads as padded); or a (Q, L) CSR (or
    dense float) score matrix, ranked by score (a CSR of integers by their values; bool is refused,
    as a dense bool pred is), ties to the lower label id whatever order the CSR stores its entries
    in (a label stored twice in a row is one entry, their sum, as scipy reads it; the caller's
    matrix is not changed). true_Y: (Q, L) sparse, each stored non-zero entry a label (a stored 0
    is not one, as in pyxclib).
    filter: (n, 2) (query, label) pairs removed from the predictions before ranking and scoring.
    """
    k = _check_count(k, "k")
    truth = _as_truth(true_Y)
    Q, L = truth.shape
    if Q == 0:
        raise ValueError("true_Y has no rows: no query to evaluate (metrics are means over queries)")
    top = _ranked(pred, Q, L, k, _filter_keys(filter, Q, L))
    hits = _hits(top, truth)
    n_true = np.diff(truth.indptr).astype(np.float64)
    ks = np.arange(1, k + 1)
    disc = _discounts(k)
    idcg = np.cumsum(disc)[np.clip(np.minimum(n_true[:, None], ks) - 1, 0, None).astype(np.int64)]  # (Q, K)
    has = n_true[:, None] > 0
    cum_hits = np.cumsum(hits, axis=1)
    out = {
        "P": cum_hits.mean(axis=0) / ks,
        "nDCG": np.where(has, np.cumsum(hits * disc, axis=1) / idcg, 0.0).mean(axis=0),
        "R": (cum_hits / np.maximum(n_true, 1)[:, None]).mean(axis=0),
    }
    if inv_propensity is not None:
        w = _check_weights(inv_propensity, L)
        gained = np.where(hits, w[np.maximum(top, 0)], 0.0)
        best = _best_weights(truth, w, k)
        out["PSP"] = _safe_ratio(np.cumsum(gained, axis=1).mean(axis=0) / ks, np.cumsum(best, axis=1).mean(axis=0) / ks)
        ps_dcg = np.where(has, np.cumsum(gained * disc, axis=1) / idcg, 0.0).mean(axis=0)
        ps_best = np.where(has, np.cumsum(best * disc, axis=1) / idcg, 0.0).mean(axis=0)
        out["PSnDCG"] = _safe_ratio(ps_dcg, ps_best)
    order = ["P", "nDCG", "PSP", "PSnDCG", "R"]
    return {key: out[key] for key in order if key in out}


def label_deciles(train_Y: sp.spmatrix, n_bins: int = 10) -> np.ndarray:
    """(L,) bin of each label, 0 = head: labels sorted by training frequency (descending, ties by id)
    are cut so that each bin holds an equal share of the training positives; a label goes to the bin
    where its positives start, labels without training positives to the last bin. Positives: the
    stored non-zero entries of the sparse train_Y, as `inv_propensity` counts them."""
    return _bins(_label_counts(train_Y), _check_count(n_bins, "n_bins"))


def _bins(freq: np.ndarray, n_bins: int) -> np.ndarray:
    """(L,) bin of each label from its training positives `freq` (see `label_deciles`)."""
    order = np.lexsort((np.arange(len(freq)), -freq))
    start = np.concatenate([[0], np.cumsum(freq[order])[:-1]]) if len(freq) else np.zeros(0, np.int64)
    total = max(int(freq.sum()), 1)
    bins = np.empty(len(freq), dtype=np.int64)
    bins[order] = np.minimum(start * n_bins // total, n_bins - 1)
    bins[freq == 0] = n_bins - 1
    return bins


def decile_breakdown(pred: object, true_Y: sp.spmatrix, train_Y: sp.spmatrix, *,
                     inv_propensity: np.ndarray | None = None, k: int = 5, filter: np.ndarray | None = None,
                     n_bins: int = 10) -> dict[str, np.ndarray]:
    """Metrics by label-frequency bin (see `label_deciles`), head (0) to tail. Per bin: "labels",
    "train_share" (fraction of training positives), "test_positives"; "P" and "PSP" (n_bins, K): the
    bin's contribution to P@k / PSP@k (hits on the bin's labels; the bins sum to the overall value);
    "R" (n_bins, K): the fraction of the bin's test positives found in the top k. true_Y and the
    sparse train_Y are read as `evaluate` and `inv_propensity` read them (a stored 0 is no label)."""
    k, n_bins = _check_count(k, "k"), _check_count(n_bins, "n_bins")
    truth = _as_truth(true_Y)
    Q, L = truth.shape
    freq = _label_counts(train_Y)
    if len(freq) != L:
        raise ValueError(f"train_Y has {len(freq)} labels but true_Y has {L}")
    bins = _bins(freq, n_bins)
    top = _ranked(pred, Q, L, k, _filter_keys(filter, Q, L))
    hits = _hits(top, truth)
    top_bin = bins[np.maximum(top, 0)]
    ks = np.arange(1, k + 1)

    def per_bin(weights: np.ndarray | None) -> np.ndarray:
        """(bins, K) sums over queries of hits (times weights) on each bin's labels within the top k."""
        cols = [np.bincount(top_bin[hits[:, j], j], weights=None if weights is None else weights[hits[:, j], j],
                            minlength=n_bins) for j in range(k)]
        return np.cumsum(np.stack(cols, axis=1), axis=1)

    test_pos = np.bincount(bins[truth.indices], minlength=n_bins)
    hits_in = per_bin(None)
    out = {"labels": np.bincount(bins, minlength=n_bins),
           "train_share": np.bincount(bins, weights=freq, minlength=n_bins) / max(freq.sum(), 1),
           "test_positives": test_pos,
           "P": hits_in / (max(Q, 1) * ks),
           "R": hits_in / np.maximum(test_pos, 1)[:, None]}
    if inv_propensity is not None:
        w = _check_weights(inv_propensity, L)
        best = np.cumsum(_best_weights(truth, w, k), axis=1).sum(axis=0)  # (K,)
        out["PSP"] = _safe_ratio(per_bin(w[np.maximum(top, 0)]), np.broadcast_to(best, (n_bins, k)).copy())
    return out


def _check_ks(ks: list[int] | None, K: int) -> list[int]:
    """The k values a table shows: all of 1..K by default; each must be one of them (column k - 1
    is read, so a 0 would show the last column under "@0")."""
    if ks is None or len(ks) == 0:
        return list(range(1, K + 1))
    if any(isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or not 1 <= k <= K for k in ks):
        raise ValueError(f"ks must lie in 1..{K} (the k values of the result), got {ks!r}")
    return [int(k) for k in ks]


def format_table(result: dict[str, np.ndarray], *, ks: list[int] | None = None, digits: int = 2) -> str:
    """A printable table in percent: metrics x k for `evaluate`'s dict, bins x (metric@k) for
    `decile_breakdown`'s. ks: the k values to show, each in 1..K (default all)."""
    def pct(x: float) -> str:
        return f"{100 * x:.{digits}f}"

    if not isinstance(result, dict) or not result:
        raise ValueError("format_table: expected the metrics dict of evaluate or decile_breakdown, got "
                         f"{result!r:.60}")
    if "labels" in result:
        n_bins, K = result["P"].shape
        ks = _check_ks(ks, K)
        metrics = [m for m in ("P", "PSP", "R") if m in result]
        header = ["bin", "labels", "train %"] + [f"{m}@{k}" for m in metrics for k in ks]
        body = [[f"{b + 1}" + (" head" if b == 0 else " tail" if b == n_bins - 1 else ""), f"{result['labels'][b]:,}",
                 pct(result["train_share"][b])] + [pct(result[m][b, k - 1]) for m in metrics for k in ks]
                for b in range(n_bins)]
    else:
        K = len(next(iter(result.values())))
        ks = _check_ks(ks, K)
        header = ["metric"] + [f"@{k}" for k in ks]
        body = [[m] + [pct(v[k - 1]) for k in ks] for m, v in result.items()]
    widths = [max(len(r[c]) for r in [header, *body]) for c in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
