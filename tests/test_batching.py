"""The batch sampler: positives are true links, every other in-batch true link is excluded."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ramen.batching import BatchSampler, Graphs, link_masks, sample_neighbours


def random_csr(rows: int, cols: int, density: float, seed: int) -> sp.csr_matrix:
    m = sp.random(rows, cols, density=density, format="csr", random_state=seed, dtype=np.float32)
    m.data[:] = 1
    return m


def dense(csr: tuple[torch.Tensor, torch.Tensor], shape: tuple[int, int]) -> np.ndarray:
    indptr, indices = (t.numpy() for t in csr)
    out = np.zeros(shape, dtype=int)
    for r in range(shape[0]):
        for c in indices[indptr[r]:indptr[r + 1]]:
            out[r, c] += 1
    return out


def check_masks(graph, rows, sampled, cols, pos, excl):
    """Reference: positive = the sampled column; exclude = every other linked in-batch column."""
    g = graph.toarray() > 0
    P = dense(pos, (len(rows), len(cols)))
    E = dense(excl, (len(rows), len(cols)))
    assert P.max(initial=0) <= 1 and E.max(initial=0) <= 1
    for r, row in enumerate(rows):
        for j, col in enumerate(cols):
            linked = g[row, col]
            is_pos = sampled[r] == col
            assert P[r, j] == is_pos
            assert E[r, j] == (linked and not is_pos)


@pytest.fixture
def data():
    Y = random_csr(60, 40, 0.08, 1).tolil()
    Y[5] = 0  # a query without labels is never sampled
    XA = random_csr(60, 50, 0.1, 2)
    LA = random_csr(40, 50, 0.1, 3).tolil()
    LA[7] = 0  # a label without anchors
    return Y.tocsr(), XA, LA.tocsr()


def test_sample_neighbours_draws_a_linked_column_or_minus_one(data):
    Y, _, _ = data
    rng = np.random.default_rng(0)
    rows = np.arange(Y.shape[0])
    for _ in range(5):
        picks = sample_neighbours(Y, rows, rng)
        for r, c in zip(rows, picks):
            assert (c == -1) == (Y[r].nnz == 0)
            if c >= 0:
                assert Y[r, c] != 0


def test_sample_neighbours_is_uniform():
    g = sp.csr_matrix(np.array([[1, 1, 1, 0, 1]], dtype=np.float32))
    picks = sample_neighbours(g, np.zeros(40000, dtype=np.int64), np.random.default_rng(1))
    counts = np.bincount(picks, minlength=5)
    assert counts[3] == 0
    assert np.allclose(counts[[0, 1, 2, 4]] / 40000, 0.25, atol=0.015)


def test_batches_match_reference_masks(data):
    Y, XA, LA = data
    sampler = BatchSampler(Y, {"h": Graphs(XA, LA)}, batch_size=16, seed=3)
    assert 5 not in sampler.pool
    for step in range(sampler.steps_per_epoch()):
        b = sampler.batch(0, step)
        assert len(b.query_ids) == 16 and 5 not in b.query_ids
        pos = dense(b.label_pos, (16, len(b.label_ids)))
        assert (pos.sum(1) == 1).all()  # every sampled query has a label
        sampled = b.label_ids[pos.argmax(1)]
        check_masks(Y, b.query_ids, sampled, b.label_ids, b.label_pos, b.label_excl)
        ab = b.anchors["h"]
        qpos = dense(ab.query_pos, (16, len(ab.ids)))
        q_sampled = np.where(qpos.sum(1) > 0, ab.ids[qpos.argmax(1)], -1)
        assert ((q_sampled >= 0) == (np.diff(XA.indptr)[b.query_ids] > 0)).all()
        check_masks(XA, b.query_ids, q_sampled, ab.ids, ab.query_pos, ab.query_excl)
        lpos = dense(ab.label_pos, (len(b.label_ids), len(ab.ids)))
        l_sampled = np.where(lpos.sum(1) > 0, ab.ids[lpos.argmax(1)], -1)
        check_masks(LA, b.label_ids, l_sampled, ab.ids, ab.label_pos, ab.label_excl)
        # every in-batch anchor was drawn by some query or label
        assert set(ab.ids) == set(q_sampled[q_sampled >= 0]) | set(l_sampled[l_sampled >= 0])


def test_batches_are_deterministic_and_epochs_differ(data):
    Y, XA, LA = data
    s1 = BatchSampler(Y, {"h": Graphs(XA, LA)}, batch_size=8, seed=7)
    s2 = BatchSampler(Y, {"h": Graphs(XA, LA)}, batch_size=8, seed=7)
    a, b = s1.batch(2, 3), s2.batch(2, 3)
    assert (a.query_ids == b.query_ids).all() and (a.label_ids == b.label_ids).all()
    assert all((x == y).all() for x, y in zip(a.anchors["h"].query_pos, b.anchors["h"].query_pos))
    assert not np.array_equal(s1.epoch_queries(0), s1.epoch_queries(1))


def test_missing_graph_side_gives_empty_masks(data):
    Y, XA, _ = data
    b = BatchSampler(Y, {"h": Graphs(XA, None)}, batch_size=8).batch(0, 0)
    assert b.anchors["h"].label_pos[1].numel() == 0
    assert b.anchors["h"].label_pos[0].shape[0] == len(b.label_ids) + 1


def test_rank_shards_partition_the_global_batch(data):
    Y, XA, LA = data
    full = BatchSampler(Y, {}, batch_size=12, seed=1).batch(0, 1)
    parts = [BatchSampler(Y, {}, batch_size=12, seed=1, rank=r, world=3).batch(0, 1) for r in range(3)]
    assert sorted(np.concatenate([p.query_ids for p in parts])) == sorted(full.query_ids)


def test_no_labelled_query_is_an_error():
    with pytest.raises(ValueError, match="no training query has a label"):
        BatchSampler(sp.csr_matrix((4, 3), dtype=np.float32), {}, batch_size=2)


def _link_masks_before(graph, rows, positives, columns):
    """link_masks as it was before issue 26 (a dense int64 table over every column, np.unique of
    column pairs): the reference the faster one must equal bit for bit."""
    def to_csr(pairs, n):
        pairs = np.unique(pairs.astype(np.int64), axis=1) if pairs.shape[1] else pairs.astype(np.int64)
        indptr = np.zeros(n + 1, dtype=np.int64)
        indptr[1:] = np.cumsum(np.bincount(pairs[0], minlength=n))
        return indptr, pairs[1]

    lookup = np.full(graph.shape[1], -1, dtype=np.int64)
    lookup[columns] = np.arange(len(columns))
    sub = graph[rows]
    local = lookup[sub.indices]
    row_of = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(sub.indptr))
    keep = local >= 0
    row_of, local = row_of[keep], local[keep]
    has = positives >= 0
    sampled = np.stack([np.nonzero(has)[0], lookup[positives[has]]])
    linked = np.stack([row_of, local])
    is_pos = local == np.where(has, lookup[np.maximum(positives, 0)], -1)[row_of]
    return to_csr(sampled, len(rows)), to_csr(linked[:, ~is_pos], len(rows))


@pytest.mark.parametrize("seed", range(6))
def test_link_masks_equal_the_reference_bit_for_bit(seed):
    """Random graphs (unsorted and repeated row ids, unsorted columns, columns repeated, rows
    without edges, positives missing): the same CSRs as the implementation before issue 26."""
    rng = np.random.default_rng(seed)
    graph = random_csr(80, 300, 0.05, seed)
    if seed % 2:
        graph.has_sorted_indices = False
        for r in range(graph.shape[0]):  # unsorted column ids within rows
            lo, hi = graph.indptr[r], graph.indptr[r + 1]
            graph.indices[lo:hi] = rng.permutation(graph.indices[lo:hi])
    rows = rng.integers(0, 80, 40)
    positives = sample_neighbours(graph, rows, rng)
    positives[rng.random(40) < 0.2] = -1
    columns = np.unique(np.concatenate([positives[positives >= 0], rng.integers(0, 300, 30)]))
    if seed >= 3:
        columns = rng.permutation(np.concatenate([columns, columns[:5]]))  # unsorted, with repeats
    got = link_masks(graph, rows, positives, columns)
    want = _link_masks_before(graph, rows, positives, columns)
    for g, w in zip(got, want):
        assert np.array_equal(g[0].numpy(), w[0]) and np.array_equal(g[1].numpy(), w[1])


def test_link_masks_cost_follows_the_batch_not_the_graph_width():
    """A graph of 50M columns (anchors) costs a batch a byte mask over them, not an int64 table
    (400 MB): the sampler's lookups scale with the batch (issue 26)."""
    import tracemalloc

    width = 50_000_000
    graph = sp.csr_matrix((np.ones(6, np.float32), ([0, 0, 1, 2, 2, 3], [5, 49_999_999, 7, 5, 8, 1000])),
                          shape=(4, width))
    rows = np.array([0, 1, 2, 3])
    positives = np.array([5, 7, 8, -1])
    tracemalloc.start()
    try:
        pos, excl = link_masks(graph, rows, positives, np.array([5, 7, 8, 49_999_999]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2 * width  # the old table took 8 bytes a column
    assert dense(pos, (4, 4)).tolist() == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert dense(excl, (4, 4)).tolist() == [[0, 0, 0, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]
