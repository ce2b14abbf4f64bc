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


def test_positives_all_makes_every_linked_column_positive(data):
    Y, _, _ = data
    rows = np.arange(10)
    sampled = sample_neighbours(Y, rows, np.random.default_rng(0))
    cols = np.arange(Y.shape[1])
    pos, excl = link_masks(Y, rows, sampled, cols, positives_all=True)
    assert (dense(pos, (10, len(cols))) == (Y[:10].toarray() > 0)).all()
    assert excl[1].numel() == 0


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
