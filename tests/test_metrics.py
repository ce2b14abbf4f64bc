"""ramen.metrics: hand-computed cases, a plain per-row reference on random data, every input form
(id arrays, CSR scores, dense scores), filters, bad input, and the label-frequency breakdown."""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import scipy.sparse as sp

from ramen.metrics import decile_breakdown, evaluate, format_table, inv_propensity, label_deciles


def reference_metrics(pred_rows: list[list[int]], true_rows: list[set[int]], w: np.ndarray | None, K: int) -> dict:
    """The definitions read one query at a time (pyxclib's, written plainly)."""
    Q = len(true_rows)
    out = {m: np.zeros(K) for m in ("P", "nDCG", "R", "psp_num", "psp_den", "psn_num", "psn_den")}
    for ranked, truth in zip(pred_rows, true_rows):
        ranked = (list(ranked) + [-1] * K)[:K]
        best = sorted((w[l] for l in truth), reverse=True)[:K] if w is not None else []
        for k in range(1, K + 1):
            hits = [1.0 if (r >= 0 and r in truth) else 0.0 for r in ranked[:k]]
            out["P"][k - 1] += sum(hits) / k
            out["R"][k - 1] += sum(hits) / len(truth) if truth else 0.0
            idcg = sum(1 / math.log2(j + 2) for j in range(min(k, len(truth))))
            dcg = sum(h / math.log2(j + 2) for j, h in enumerate(hits))
            out["nDCG"][k - 1] += dcg / idcg if truth else 0.0
            if w is not None:
                gains = [h * w[r] for h, r in zip(hits, ranked[:k])]
                out["psp_num"][k - 1] += sum(gains) / k
                out["psp_den"][k - 1] += sum(best[:k]) / k
                if truth:
                    out["psn_num"][k - 1] += sum(g / math.log2(j + 2) for j, g in enumerate(gains)) / idcg
                    out["psn_den"][k - 1] += sum(b / math.log2(j + 2) for j, b in enumerate(best[:k])) / idcg
    res = {"P": out["P"] / Q, "nDCG": out["nDCG"] / Q, "R": out["R"] / Q}
    if w is not None:
        res["PSP"] = out["psp_num"] / out["psp_den"]
        res["PSnDCG"] = out["psn_num"] / out["psn_den"]
    return res


def rows_of(Y: sp.spmatrix) -> list[set[int]]:
    """Each row's true labels as pyxclib reads them: the columns whose value is not 0."""
    return [set(np.flatnonzero(row).tolist()) for row in Y.toarray()]


def assert_close(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=1e-12, err_msg=key)


# ---- hand-computed --------------------------------------------------------------------------

Y3 = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
W3 = np.array([1.0, 2.0, 3.0, 4.0])


def test_hand_computed() -> None:
    # row 0: truth {0, 2}, ranks 2 (hit), 1, pad; row 1: no truth; row 2: truth {1}, rank 1 (hit)
    pred = np.array([[2, 1, -1], [0, 1, 2], [1, -1, -1]])
    r = evaluate(pred, Y3, inv_propensity=W3, k=3)
    assert list(r) == ["P", "nDCG", "PSP", "PSnDCG", "R"]
    np.testing.assert_allclose(r["P"], [2 / 3, (0.5 + 0.5) / 3, (1 / 3 + 1 / 3) / 3])
    idcg2 = 1 + 1 / math.log2(3)
    np.testing.assert_allclose(r["nDCG"], [2 / 3, (1 / idcg2 + 1) / 3, (1 / idcg2 + 1) / 3])
    np.testing.assert_allclose(r["R"], [0.5, 0.5, 0.5])
    # PSP@1: (3 + 2) / (3 + 2); PSP@2: (3/2 + 2/2) / ((3+1)/2 + 2/2)
    np.testing.assert_allclose(r["PSP"], [1.0, 2.5 / 3, 2.5 / 3])
    ps2 = (3 / idcg2 + 2) / ((3 + 1 / math.log2(3)) / idcg2 + 2)
    np.testing.assert_allclose(r["PSnDCG"], [1.0, ps2, ps2])


def test_fewer_true_labels_than_k() -> None:
    Y = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 0]], dtype=np.float32))
    r = evaluate(np.array([[1, 0, 2, 3, 4]]), Y, k=5)
    np.testing.assert_allclose(r["P"], [1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    np.testing.assert_allclose(r["nDCG"], [1, 1, 1, 1, 1])  # ideal DCG over min(k, |y|) = 1 item
    np.testing.assert_allclose(r["R"], [1, 1, 1, 1, 1])
    r = evaluate(np.array([[0, 1]]), Y, k=3)  # hit at rank 2; a 2-column pred reads as padded
    np.testing.assert_allclose(r["P"], [0, 1 / 2, 1 / 3])
    np.testing.assert_allclose(r["nDCG"], [0, 1 / math.log2(3), 1 / math.log2(3)])


def test_rows_without_labels_count_as_zero() -> None:
    Y = sp.csr_matrix(np.array([[1, 0], [0, 0]], dtype=np.float32))
    r = evaluate(np.array([[0], [1]]), Y, inv_propensity=np.ones(2), k=1)
    assert r["P"][0] == 0.5 and r["nDCG"][0] == 0.5 and r["R"][0] == 0.5 and r["PSP"][0] == 1.0
    empty = evaluate(np.array([[0], [1]]), sp.csr_matrix((2, 2)), inv_propensity=np.ones(2), k=2)
    assert all(np.all(v == 0) for v in empty.values())  # no labels anywhere: zeros, not NaN


def test_padding_anywhere_is_a_miss() -> None:
    r = evaluate(np.array([[-1, 0, -1, 2]]), Y3[:1], k=4)
    np.testing.assert_allclose(r["P"], [0, 1 / 2, 1 / 3, 2 / 4])


def test_filter_on_ids_compacts_rows() -> None:
    pred = np.array([[3, 2, 0], [0, 1, 2], [0, 1, 3]])
    filt = np.array([[0, 3], [2, 0], [2, 2]])  # (2, 2) is not predicted: no effect
    r = evaluate(pred, Y3, k=2, filter=filt)
    # row 0 becomes [2, 0] (2 hits), row 2 becomes [1, 3] (hit at 1)
    np.testing.assert_allclose(r["P"], [(1 + 0 + 1) / 3, (1 + 0 + 0.5) / 3])
    assert_close(r, evaluate(np.array([[2, 0], [0, 1], [1, 3]]), Y3, k=2))


def test_filter_on_scores_lets_the_next_label_in() -> None:
    scores = sp.csr_matrix(np.array([[0.9, 0.1, 0.5, 0.95], [0, 0, 0, 0], [0.3, 0.2, 0, 0.8]]))
    r = evaluate(scores, Y3, k=2, filter=np.array([[0, 3], [2, 3]]))
    assert_close(r, evaluate(np.array([[0, 2], [-1, -1], [0, 1]]), Y3, k=2))


def test_scores_ids_and_dense_agree() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((40, 30))
    dense[dense < 0.5] = 0
    dense[3] = 0  # a row with no scores at all
    Y = sp.random(40, 30, density=0.1, format="csr", random_state=rng)
    ids = np.argsort(-dense, axis=1, kind="stable")[:, :5]
    ids[dense[np.arange(40)[:, None], ids] == 0] = -1  # CSR rows hold only stored scores
    w = inv_propensity(Y, 0.55, 1.5)
    from_ids = evaluate(ids, Y, inv_propensity=w, k=5)
    assert_close(evaluate(sp.csr_matrix(dense), Y, inv_propensity=w, k=5), from_ids)
    dense[dense == 0] = -1.0  # dense scores rank every label, ties to the lower id
    full_ids = np.argsort(-dense, axis=1, kind="stable")[:, :5]
    assert_close(evaluate(dense, Y, inv_propensity=w, k=5), evaluate(full_ids, Y, inv_propensity=w, k=5))
    filt = np.array([[0, full_ids[0, 0]], [5, full_ids[5, 2]]])
    assert_close(evaluate(dense, Y, k=5, filter=filt),
                 evaluate(np.argsort(-dense, axis=1, kind="stable")[:, :6], Y, k=5, filter=filt))


def test_score_ties_go_to_the_lower_label_id() -> None:
    scores = sp.csr_matrix(np.array([[0.5, 0.5, 0.5, 0.9]]))
    Y = sp.csr_matrix(np.array([[0, 1, 0, 0]], dtype=np.float32))
    np.testing.assert_allclose(evaluate(scores, Y, k=3)["P"], [0, 0, 1 / 3])  # order 3, 0, 1


# ---- against the per-row reference on random data -------------------------------------------

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_reference_on_random_data(seed: int) -> None:
    rng = np.random.default_rng(seed)
    Q, L, K = 300, 50, 7
    Y = sp.random(Q, L, density=0.06, format="csr", random_state=rng)
    Y.data[:] = 1
    train = sp.random(500, L, density=0.05, format="csr", random_state=rng)
    w = inv_propensity(train, 0.55, 1.5)
    pred = np.array([rng.permutation(L)[:K] for _ in range(Q)])
    pred[rng.random(pred.shape) < 0.1] = -1  # padding at random places
    pred[:, -2:][rng.random((Q, 2)) < 0.5] = -1
    got = evaluate(pred, Y, inv_propensity=w, k=K)
    assert_close(got, reference_metrics(pred.tolist(), rows_of(Y), w, K))
    filt = np.stack([rng.integers(0, Q, 400), rng.integers(0, L, 400)], axis=1)
    fkeys = set(map(tuple, filt.tolist()))
    filtered = [[p for p in row if p < 0 or (i, p) not in fkeys] for i, row in enumerate(pred.tolist())]
    assert_close(evaluate(pred, Y, inv_propensity=w, k=K, filter=filt), reference_metrics(filtered, rows_of(Y), w, K))


def test_reference_with_scores_matrix() -> None:
    rng = np.random.default_rng(5)
    Q, L, K = 200, 80, 5
    Y = sp.random(Q, L, density=0.05, format="csr", random_state=rng)
    S = sp.random(Q, L, density=0.2, format="csr", random_state=rng)
    S.data = rng.integers(1, 6, S.nnz).astype(np.float64)  # many ties
    ranked = []
    for i in range(Q):
        cols, vals = S.indices[S.indptr[i]:S.indptr[i + 1]], S.data[S.indptr[i]:S.indptr[i + 1]]
        ranked.append([c for _, c in sorted(zip(-vals, cols))][:K])
    w = inv_propensity(sp.random(300, L, density=0.05, format="csr", random_state=rng), 0.6, 2.6)
    assert_close(evaluate(S, Y, inv_propensity=w, k=K), reference_metrics(ranked, rows_of(Y), w, K))


@pytest.mark.parametrize("layout", ["uneven", "blocks"])
def test_row_ranking_paths(layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The CSR ranking takes a sort path for very uneven rows and a blocked path otherwise."""
    import ramen.metrics as metrics

    rng = np.random.default_rng(7)
    Q, L, K = 120, 600, 6
    counts = rng.integers(0, 12, Q)
    if layout == "uneven":
        counts[5] = 590  # one long row: the sort path
    else:
        monkeypatch.setattr(metrics, "_BLOCK_CELLS", 40)  # many small blocks
    rows = np.repeat(np.arange(Q), counts)
    cols = np.concatenate([rng.choice(L, c, replace=False) for c in counts])
    S = sp.csr_matrix((rng.integers(1, 4, len(cols)).astype(np.float32), (rows, cols)), shape=(Q, L))
    S.sort_indices()
    ranked = [[c for _, c in sorted(zip(-S.data[S.indptr[i]:S.indptr[i + 1]], S.indices[S.indptr[i]:S.indptr[i + 1]]))]
              for i in range(Q)]
    Y = sp.random(Q, L, density=0.02, format="csr", random_state=rng)
    w = rng.random(L) + 1
    assert_close(evaluate(S, Y, inv_propensity=w, k=K), reference_metrics(ranked, rows_of(Y), w, K))


def stored_out_of_order(S: sp.csr_matrix, rng: np.random.Generator, split: bool = False) -> sp.csr_matrix:
    """S with each row's entries stored in a random order; split: each score also stored as two
    duplicate entries of the same label that sum to it (scipy's meaning of a duplicate)."""
    S = S.tocsr()
    rows = np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))
    cols, vals = S.indices.copy(), S.data.copy()
    if split:
        part = rng.random(len(vals)) * vals
        rows, cols, vals = np.concatenate([rows, rows]), np.concatenate([cols, cols]), np.concatenate([part, vals - part])
    order = np.lexsort((rng.random(len(rows)), rows))  # by row, at random within a row
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=S.shape[0]))])
    return sp.csr_matrix((vals[order], cols[order], indptr), shape=S.shape)


def ranked_rows(S: sp.csr_matrix) -> list[list[int]]:
    """Each row's stored labels by score, best first, ties to the lower label id (the plain rule)."""
    S = S.tocsr()
    return [[c for _, c in sorted(zip(-S.data[S.indptr[i]:S.indptr[i + 1]], S.indices[S.indptr[i]:S.indptr[i + 1]]))]
            for i in range(S.shape[0])]


def test_a_label_stored_twice_in_a_score_row_counts_once() -> None:
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0]]))  # true labels {0, 2}; label 2 is stored twice below
    P = sp.csr_matrix((np.array([.9, .8]), np.array([2, 2]), np.array([0, 2])), shape=(1, 4))
    assert_close(evaluate(P, Y, k=2), reference_metrics([[2]], [{0, 2}], None, 2))  # P@2 = R@2 = 0.5
    rng = np.random.default_rng(11)
    Q, L, K = 150, 60, 5
    S = sp.random(Q, L, density=0.15, format="csr", random_state=rng)
    S.data = rng.integers(1, 5, S.nnz).astype(np.float64)
    Y = sp.random(Q, L, density=0.05, format="csr", random_state=rng)
    dup = stored_out_of_order(S, rng, split=True)
    data, indices, indptr = dup.data.copy(), dup.indices.copy(), dup.indptr.copy()
    w = rng.random(L) + 1
    assert_close(evaluate(dup, Y, inv_propensity=w, k=K), reference_metrics(ranked_rows(S), rows_of(Y), w, K))
    np.testing.assert_array_equal(dup.data, data)  # the caller's matrix is left as it was
    np.testing.assert_array_equal(dup.indices, indices)
    np.testing.assert_array_equal(dup.indptr, indptr)


def test_ties_go_to_the_lower_label_id_whatever_the_storage_order() -> None:
    Y = sp.csr_matrix(np.array([[0, 0, 1, 0]]))
    P = sp.csr_matrix((np.array([.5, .5]), np.array([2, 0]), np.array([0, 2])), shape=(1, 4))
    assert evaluate(P, Y, k=1)["P"][0] == 0.0  # label 0 wins the tie
    rng = np.random.default_rng(12)
    Q, L, K = 150, 60, 5
    S = sp.random(Q, L, density=0.2, format="csr", random_state=rng)
    S.data = rng.integers(1, 4, S.nnz).astype(np.float64)  # many ties
    Y = sp.random(Q, L, density=0.05, format="csr", random_state=rng)
    shuffled = stored_out_of_order(S, rng)
    indices = shuffled.indices.copy()
    assert_close(evaluate(shuffled, Y, k=K), reference_metrics(ranked_rows(S), rows_of(Y), None, K))
    np.testing.assert_array_equal(shuffled.indices, indices)  # sorted on a copy


@pytest.mark.parametrize("dtype", [np.uint8, np.uint64, np.int8, np.int64, np.float32])
@pytest.mark.parametrize("layout", ["uneven", "blocks"])
def test_integer_scores_rank_as_their_values(dtype: type, layout: str) -> None:
    rng = np.random.default_rng(13)
    Q, L, K = 50, 100, 4
    counts = rng.integers(0, 8, Q)
    counts[0] = L if layout == "uneven" else 8  # one full row: the sort path
    rows = np.repeat(np.arange(Q), counts)
    cols = np.concatenate([rng.choice(L, c, replace=False) for c in counts])
    low = -100 if np.issubdtype(dtype, np.signedinteger) else 0
    S = sp.csr_matrix((rng.integers(low, 100, len(cols)).astype(dtype), (rows, cols)), shape=(Q, L))
    Y = sp.random(Q, L, density=0.05, format="csr", random_state=rng)
    want = reference_metrics(ranked_rows(S.astype(np.float64)), rows_of(Y), None, K)
    assert_close(evaluate(S, Y, k=K), want)


def test_a_bool_score_matrix_is_refused_as_a_dense_bool_pred_is() -> None:
    with pytest.raises(ValueError, match="got dtype bool"):
        evaluate(np.array([[True, False, False, False]]), Y3[:1], k=1)
    with pytest.raises(ValueError, match="pred score matrix must hold real numbers .*got dtype bool"):
        evaluate(sp.csr_matrix(np.array([[True, False, True, False]])), Y3[:1], k=1)
    with pytest.raises(ValueError, match="got dtype complex128"):
        evaluate(sp.csr_matrix(np.array([[1j, 0, 1, 0]])), Y3[:1], k=1)


def test_a_stored_zero_in_true_Y_is_not_a_label() -> None:
    Yz = sp.csr_matrix((np.array([1., 0.]), np.array([0, 3]), np.array([0, 2])), shape=(1, 4))
    assert evaluate(np.array([[3]]), Yz, k=1)["P"][0] == 0.0
    rng = np.random.default_rng(14)
    Q, L, K = 200, 40, 5
    Y = sp.random(Q, L, density=0.1, format="csr", random_state=rng)
    Y.data[rng.random(Y.nnz) < 0.4] = 0  # stored zeros: not labels
    data = Y.data.copy()
    pred = np.array([rng.permutation(L)[:K] for _ in range(Q)])
    w = rng.random(L) + 1
    want = reference_metrics(pred.tolist(), rows_of(Y), w, K)
    assert_close(evaluate(pred, Y, inv_propensity=w, k=K), want)
    assert_close(evaluate(pred, Y.tocoo(), inv_propensity=w, k=K), want)
    np.testing.assert_array_equal(Y.data, data)  # dropped on a copy
    d = decile_breakdown(pred, Y, Y, k=K)
    assert d["test_positives"].sum() == sum(map(len, rows_of(Y)))


def test_a_stored_zero_in_train_Y_is_not_a_positive() -> None:
    rng = np.random.default_rng(15)
    Q, L, K = 100, 30, 3
    train = sp.random(300, L, density=0.1, format="csr", random_state=rng)
    train.data[rng.random(train.nnz) < 0.5] = 0
    positives = (train.toarray() != 0).sum(axis=0)  # pyxclib's count (for 0/1 data)
    N, A, B = train.shape[0], 0.55, 1.5
    want = 1 + (math.log(N) - 1) * (B + 1) ** A * (positives + B) ** -A
    np.testing.assert_allclose(inv_propensity(train, A, B), want, rtol=1e-12)
    clean = train.copy()
    clean.eliminate_zeros()
    np.testing.assert_array_equal(label_deciles(train), label_deciles(clean))
    Y = sp.random(Q, L, density=0.1, format="csr", random_state=rng)
    pred = np.array([rng.permutation(L)[:K] for _ in range(Q)])
    w = inv_propensity(clean, A, B)
    got, ref = (decile_breakdown(pred, Y, t, inv_propensity=w, k=K) for t in (train, clean))
    assert_close(got, ref)
    assert got["train_share"].sum() == pytest.approx(1.0)


@pytest.mark.parametrize("call", [lambda t: inv_propensity(t, 0.55, 1.5), label_deciles,
                                  lambda t: decile_breakdown(np.array([[0]]), Y3[:1], t, k=1)])
def test_train_Y_must_be_sparse_everywhere(call) -> None:
    with pytest.raises(TypeError, match="train_Y must be a scipy sparse matrix .*got ndarray"):
        call(np.eye(4))
    with pytest.raises(TypeError, match="train_Y must be a scipy sparse matrix .*got list"):
        call([[1, 0, 0, 0]])


# ---- propensity -----------------------------------------------------------------------------

def test_inv_propensity_formula() -> None:
    train = sp.csr_matrix(np.array([[1, 1, 0], [1, 0, 0], [1, 0, 0], [0, 0, 0]], dtype=np.float32))
    A, B = 0.55, 1.5
    C = (math.log(4) - 1) * (B + 1) ** A
    want = [1 + C * (n + B) ** -A for n in (3, 1, 0)]
    np.testing.assert_allclose(inv_propensity(train, A, B), want)
    with pytest.raises(ValueError, match="no rows"):
        inv_propensity(sp.csr_matrix((0, 3)), A, B)


@pytest.mark.parametrize("A,B,error,message", [
    (0.55, -1, ValueError, r"A >= 0 and B > -1, got A=0.55, B=-1"),
    (0.55, -2.5, ValueError, r"A >= 0 and B > -1, got A=0.55, B=-2.5"),
    (-0.1, 1.5, ValueError, r"A >= 0 and B > -1, got A=-0.1, B=1.5"),
    (np.nan, 1.5, ValueError, r"finite with A >= 0 and B > -1, got A=nan"),
    (0.55, np.inf, ValueError, r"finite with A >= 0 and B > -1, got A=0.55, B=inf"),
    ("0.55", 1.5, TypeError, r"A and B must be real numbers, got A='0.55', B=1.5"),
    (0.55, True, TypeError, r"A and B must be real numbers, got A=0.55, B=True"),
])
def test_inv_propensity_checks_A_and_B(A, B, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        inv_propensity(sp.csr_matrix(np.eye(4)), A, B)


@pytest.mark.parametrize("N", [1, 2])
def test_inv_propensity_needs_three_training_rows(N: int) -> None:
    """For N <= 2, ln N - 1 < 0 makes C negative: weights below 1 that fall as a label gets rarer
    (negative for unseen labels, e.g. N = 1, B = 1.5: 1 - (2.5 / 1.5)^0.55 < 0). Refused, named."""
    train = sp.csr_matrix(np.eye(N, 3))
    with pytest.raises(ValueError, match=rf"train_Y has {N} rows?: .* at least 3 training points"):
        inv_propensity(train, 0.55, 1.5)
    train = sp.csr_matrix(np.eye(3))  # N = 3: ln 3 - 1 > 0, every weight >= 1
    C = (math.log(3) - 1) * 2.5 ** 0.55
    np.testing.assert_allclose(inv_propensity(train, 0.55, 1.5), [1 + C * 2.5 ** -0.55] * 3)


def test_inv_propensity_names_an_undefined_weight() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 1], [1, 0, 0], [0, 0, 1], [1, 0, 1]]))  # label 1 unseen
    with pytest.raises(ValueError, match=r"label 1 has no training positives and B = -0.5 <= 0"):
        inv_propensity(train, 0.55, -0.5)  # (0 - 0.5)^-0.55 is NaN
    with pytest.raises(ValueError, match=r"label 1 has no training positives and B = 0.0 <= 0"):
        inv_propensity(train, 0.55, 0.0)  # 0^-0.55 is inf
    seen = train[:, [0, 2]]  # B in (-1, 0] is fine where every label has a positive, and A = 0 anywhere
    C = (math.log(4) - 1) * 0.5 ** 0.55
    np.testing.assert_allclose(inv_propensity(seen, 0.55, -0.5), [1 + C * 2.5 ** -0.55, 1 + C * 2.5 ** -0.55])
    np.testing.assert_allclose(inv_propensity(train, 0.0, -0.5), [math.log(4)] * 3)
    with pytest.raises(ValueError, match=r"not finite .* A=1000000.0, B=0.01"):
        inv_propensity(train, 1e6, 0.01)  # (B + 1)^A overflows


# ---- bad input ------------------------------------------------------------------------------

@pytest.mark.parametrize("pred,kwargs,message", [
    (np.array([[0, 4]]), {}, r"label ids must lie in \[0, 4\) or be -1"),
    (np.array([[0, -2]]), {}, r"label ids must lie in"),
    (np.array([[1, 1]]), {}, r"pred row 0 lists a label id twice"),
    (np.array([0, 1]), {}, r"\(queries, k\) array"),
    (np.zeros((2, 2), dtype=np.int64), {}, r"got shape \(2, 2\) for 1 queries"),
    (np.array([[0.0, 1.0]]), {}, r"dense score matrix and must have shape \(1, 4\)"),
    (np.array([["a", "b"]]), {}, r"integer label ids"),
    (sp.csr_matrix((1, 5)), {}, r"pred score matrix has shape \(1, 5\), expected \(1, 4\)"),
    (sp.csr_matrix(np.array([[np.nan, 1, 0, 0]])), {}, r"NaN scores"),
    (np.array([[0]]), {"k": 0}, r"k must be an integer >= 1, got 0"),
    (np.array([[0]]), {"filter": np.array([[0, 4]])}, r"filter pairs must lie in \[0, 1\) x \[0, 4\)"),
    (np.array([[0]]), {"filter": np.array([0, 1, 2])}, r"filter must be an \(n, 2\) integer array"),
    (np.array([[0]]), {"inv_propensity": np.ones(3)}, r"one value per label \(4\)"),
    (np.array([[0]]), {"inv_propensity": np.ones((2, 2))}, r"inv_propensity must have shape \(4,\).* got shape \(2, 2\)"),
    (np.array([[0]]), {"inv_propensity": np.ones((1, 4))}, r"inv_propensity must have shape \(4,\).* got shape \(1, 4\)"),
    (np.array([[0]]), {"inv_propensity": np.float64(1)}, r"inv_propensity must have shape \(4,\).* got shape \(\)"),
    (np.array([[0]]), {"inv_propensity": np.array([1, np.nan, 1, 1])}, r"inv_propensity must be finite .* label 1 has nan"),
    (np.array([[0]]), {"inv_propensity": np.array([1, 1, 1, -2.0])}, r"inv_propensity must be finite .* label 3 has -2"),
    (np.array([[0]]), {"inv_propensity": np.array([np.inf, 1, 1, 1])}, r"inv_propensity must be finite .* label 0 has inf"),
    (np.array([[0]]), {"inv_propensity": np.array(["1", "2", "3", "4"])}, r"inv_propensity must hold real numbers"),
    (np.array([[0]]), {"inv_propensity": np.ones(4, dtype=complex)}, r"inv_propensity must hold real numbers"),
    (np.array([[0]]), {"inv_propensity": [1, 2, None, 4]}, r"inv_propensity must hold real numbers"),
])
def test_bad_input(pred, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate(pred, Y3[:1], **kwargs)


@pytest.mark.parametrize("k", [2.0, True, np.True_, "2", None, -1])
def test_k_must_be_an_integer(k) -> None:
    for pred in (np.full((1, 4), .5), np.array([[0, 1]]), sp.csr_matrix(np.full((1, 4), .5))):
        with pytest.raises(ValueError, match=r"k must be an integer >= 1, got " + re.escape(repr(k))):
            evaluate(pred, Y3[:1], k=k)
    assert_close(evaluate(np.array([[0, 1]]), Y3[:1], k=np.int32(2)), evaluate(np.array([[0, 1]]), Y3[:1], k=2))


def test_decile_breakdown_checks_weights_too() -> None:
    with pytest.raises(ValueError, match=r"inv_propensity must be finite"):
        decile_breakdown(np.array([[0]]), Y3[:1], Y3, inv_propensity=np.array([1, 1, -1.0, 1]))
    with pytest.raises(ValueError, match=r"inv_propensity must have shape \(4,\)"):
        decile_breakdown(np.array([[0]]), Y3[:1], Y3, inv_propensity=np.ones((2, 2)))
    zero = evaluate(np.array([[0]]), Y3[:1], inv_propensity=np.zeros(4))  # zero weights: allowed, PSP 0
    assert np.all(zero["PSP"] == 0)


@pytest.mark.parametrize("kwargs,message", [
    ({"k": 0}, r"k must be an integer >= 1, got 0"),
    ({"k": 1.0}, r"k must be an integer >= 1, got 1.0"),
    ({"n_bins": 0}, r"n_bins must be an integer >= 1, got 0"),
    ({"n_bins": 2.0}, r"n_bins must be an integer >= 1, got 2.0"),
])
def test_decile_breakdown_names_a_bad_k_or_n_bins(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decile_breakdown(np.array([[0]]), Y3[:1], Y3, **kwargs)
    if "n_bins" in kwargs:
        with pytest.raises(ValueError, match=message):
            label_deciles(Y3, kwargs["n_bins"])


def test_truth_must_be_sparse() -> None:
    with pytest.raises(TypeError, match="true_Y must be a scipy sparse matrix"):
        evaluate(np.array([[0]]), np.eye(2))


# ---- label-frequency breakdown --------------------------------------------------------------

def test_label_deciles_equal_shares() -> None:
    freq = np.array([40, 30, 10, 10, 5, 5, 0, 0])  # 100 positives
    train = sp.csr_matrix((np.ones(freq.sum(), np.float32), (np.arange(freq.sum()), np.repeat(np.arange(8), freq))),
                          shape=(100, 8))
    bins = label_deciles(train, n_bins=5)  # 20 positives a bin: starts 0, 40, 70, 80, 90, 95
    np.testing.assert_array_equal(bins, [0, 2, 3, 4, 4, 4, 4, 4])
    np.testing.assert_array_equal(label_deciles(train, 10), [0, 4, 7, 8, 9, 9, 9, 9])


def test_breakdown_sums_to_the_totals() -> None:
    rng = np.random.default_rng(3)
    Q, L, K = 400, 120, 5
    train = sp.random(1000, L, density=0.03, format="csr", random_state=rng)
    Y = sp.random(Q, L, density=0.04, format="csr", random_state=rng)
    pred = np.array([rng.permutation(L)[:K] for _ in range(Q)])
    w = inv_propensity(train, 0.55, 1.5)
    total = evaluate(pred, Y, inv_propensity=w, k=K)
    d = decile_breakdown(pred, Y, train, inv_propensity=w, k=K)
    assert d["P"].shape == (10, K) and d["labels"].sum() == L
    np.testing.assert_allclose(d["P"].sum(axis=0), total["P"])
    np.testing.assert_allclose(d["PSP"].sum(axis=0), total["PSP"])
    np.testing.assert_allclose(d["train_share"].sum(), 1.0)
    assert d["test_positives"].sum() == Y.nnz
    # R per bin: the bin's test positives found in the top k, counted plainly
    bins = label_deciles(train)
    truth = rows_of(Y)
    for b in range(10):
        found = sum(1 for i in range(Q) for p in pred[i] if p in truth[i] and bins[p] == b)
        assert d["R"][b, -1] == pytest.approx(found / max(d["test_positives"][b], 1))


def test_format_table() -> None:
    r = evaluate(np.array([[2, 1, -1], [0, 1, 2], [1, -1, -1]]), Y3, inv_propensity=W3, k=3)
    table = format_table(r)
    lines = table.splitlines()
    assert lines[0].split() == ["metric", "@1", "@2", "@3"]
    assert lines[2].split() == ["P", "66.67", "33.33", "22.22"]
    assert format_table(r, ks=[1, 3], digits=1).splitlines()[2].split() == ["P", "66.7", "22.2"]
    d = decile_breakdown(np.array([[2, 1, -1], [0, 1, 2], [1, -1, -1]]), Y3, Y3, inv_propensity=W3, k=3, n_bins=2)
    dt = format_table(d, ks=[1])
    assert dt.splitlines()[0].split() == ["bin", "labels", "train", "%", "P@1", "PSP@1", "R@1"]
    assert len(dt.splitlines()) == 4


@pytest.mark.parametrize("ks", [[0], [3], [1, -1], [1.0], [True]])
def test_format_table_ks_must_lie_in_1_to_K(ks: list) -> None:
    r = evaluate(np.array([[0, 1]]), sp.csr_matrix(np.array([[1, 0]])), k=2)
    d = decile_breakdown(np.array([[0, 1]]), sp.csr_matrix(np.array([[1, 0]])), sp.csr_matrix(np.array([[1, 1]])),
                         k=2, n_bins=2)
    for result in (r, d):
        with pytest.raises(ValueError, match=r"ks must lie in 1\.\.2 \(the k values of the result\), got "
                                             + re.escape(repr(ks))):
            format_table(result, ks=ks)
    assert format_table(r, ks=[np.int64(2)]).splitlines()[0].split() == ["metric", "@2"]


@pytest.mark.parametrize("value", [-1.0, np.nan])
def test_a_negative_or_nan_label_value_is_an_error_naming_the_matrix_and_entry(value) -> None:
    """A negative or NaN entry of true_Y or train_Y counted as a label; it has no meaning as one."""
    bad = sp.csr_matrix((np.array([1.0, value]), np.array([0, 3]), np.array([0, 1, 2, 2])), shape=(3, 4))
    good = sp.csr_matrix(np.array([[1.0, 0, 0, 0], [0, 0, 0, 1.0], [0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"true_Y: entry \(1, 3\) is "):
        evaluate(np.array([[0], [3], [1]]), bad, k=1)
    with pytest.raises(ValueError, match=r"train_Y: entry \(1, 3\)"):
        inv_propensity(bad, 0.55, 1.5)
    with pytest.raises(ValueError, match=r"train_Y: entry \(1, 3\)"):
        label_deciles(bad)
    assert evaluate(np.array([[0], [3], [1]]), good, k=1)["P"][0] == 2 / 3
    # a label stored twice whose values cancel is no label, as scipy sums duplicates
    twice = sp.csr_matrix((np.array([1.0, -1.0]), np.array([2, 2]), np.array([0, 2])), shape=(1, 4))
    assert evaluate(np.array([[2]]), twice, k=1)["P"][0] == 0.0
