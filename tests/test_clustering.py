"""Balanced 2-means clustering for NGAME-style batches."""
import numpy as np
import pytest

from ramen import _C
from ramen.clustering import balanced_clusters, cluster_batches


def unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def reference_clusters(x: np.ndarray, size: int, seed: int, iters: int = 8,
                       early_stop: bool = True) -> tuple[list[np.ndarray], float]:
    """The kernel's algorithm in numpy, float64: (clusters left to right, the smallest gap between
    the last score of a first side and the next, so a test can tell its data leaves no near tie).
    Without `early_stop` every split runs all its rounds."""
    gaps = [np.inf]

    def split(rows: np.ndarray, key: int) -> list[np.ndarray]:
        m = len(rows)
        if m <= size:
            return [rows]
        first = size * (-(-m // size) // 2)
        a = _C.walk_draw(seed, key, 0, 1, m)
        b = _C.walk_draw(seed, key, 0, 2, m - 1)
        b += b >= a
        c1, c2 = x[rows[a]].astype(np.float64), x[rows[b]].astype(np.float64)
        last = None
        for r in range(iters):
            w = (c1.astype(np.float32) - c2.astype(np.float32)).astype(np.float64)
            score = x[rows].astype(np.float64) @ w
            rank = np.lexsort((rows, -score))  # score descending, ties to the lower row id
            side = np.zeros(m, bool)
            side[rank[:first]] = True
            gaps.append(score[rank[first - 1]] - score[rank[first]])
            if (early_stop and r > 0 and (side == last).all()) or r + 1 == iters:
                break
            last = side
            c1, c2 = (s / max(np.linalg.norm(s), 1e-12) for s in (x[rows[side]].astype(np.float64).sum(0),
                                                                   x[rows[~side]].astype(np.float64).sum(0)))
        return split(rows[side], 2 * key + 1) + split(rows[~side], 2 * key + 2)

    return split(np.arange(len(x)), 0), min(gaps)


@pytest.mark.parametrize("n,size,dim,seed", [(300, 8, 16, 0), (1000, 32, 8, 3), (257, 1, 4, 1), (64, 64, 16, 2),
                                             (65, 64, 16, 2), (2500, 100, 32, 14)])
def test_clusters_match_the_reference_for_any_thread_count(n, size, dim, seed):
    x = unit(n, dim, seed)
    want, gap = reference_clusters(x, size, seed)
    assert gap > 1e-5  # no near tie that float32 rounding could decide: the comparison below is exact
    every_round, _ = reference_clusters(x, size, seed, early_stop=False)  # stopping at a repeat changes nothing
    assert len(every_round) == len(want) and all(np.array_equal(a, b) for a, b in zip(every_round, want))
    for threads in (1, 2, 3):
        got = balanced_clusters(x, size, seed=seed, num_threads=threads)
        assert len(got) == len(want) and all(np.array_equal(g, w) for g, w in zip(got, want))


def test_clusters_of_adversarial_rows():
    """Identical rows (every score ties: the row ids decide), zero rows, one dimension, one row."""
    same = np.tile(unit(1, 8, 0), (50, 1))
    for x in (same, np.zeros((40, 8), np.float32), unit(33, 1, 1), unit(1, 8, 2)):
        clusters = [balanced_clusters(x, 4, seed=3, num_threads=t) for t in (1, 2)]
        assert all(np.array_equal(a, b) for a, b in zip(*clusters))
        assert sorted(np.concatenate(clusters[0])) == list(range(len(x)))
        assert sorted(map(len, clusters[0])) == sorted([4] * (len(x) // 4) + ([len(x) % 4] if len(x) % 4 else []))
    assert balanced_clusters(np.zeros((0, 8), np.float32), 4) == []
    tied, _ = reference_clusters(same, 4, 3)
    assert all(np.array_equal(a, b) for a, b in zip(balanced_clusters(same, 4, seed=3), tied))


def test_clusters_of_extreme_sizes_and_rows():
    """A cluster size past the row count (its count must not overflow), and finite rows so large
    that the scores overflow to NaN (they rank last: still a partition into whole clusters)."""
    x = unit(5, 4, 0)
    assert [list(c) for c in balanced_clusters(x, 2**63 - 1)] == [list(range(5))]
    huge = np.zeros((40, 2), np.float32)
    huge[::2, 0], huge[1::2, 0], huge[:, 1] = 3e38, -3e38, 1.0
    for threads in (1, 2):
        clusters = balanced_clusters(huge, 4, seed=1, num_threads=threads)
        assert sorted(np.concatenate(clusters)) == list(range(40)) and sorted(map(len, clusters)) == [4] * 10


def test_clusters_refuse_bad_input():
    x = unit(20, 4, 0)
    bad = x.copy()
    bad[13, 2] = np.nan
    with pytest.raises(ValueError, match="emb row 13 is not finite"):
        balanced_clusters(bad, 4)
    with pytest.raises(ValueError, match="emb must be 2-d"):
        balanced_clusters(x[0], 4)
    with pytest.raises(ValueError, match="iters"):
        balanced_clusters(x, 4, iters=0)
    with pytest.raises(ValueError, match="num_threads"):
        balanced_clusters(x, 4, num_threads=0)


def test_clusters_depend_on_the_seed():
    x = unit(400, 8, 0)
    a, b = balanced_clusters(x, 8, seed=0), balanced_clusters(x, 8, seed=1)
    assert any(not np.array_equal(p, q) for p, q in zip(a, b))
    assert all(np.array_equal(p, q) for p, q in zip(a, balanced_clusters(x, 8, seed=2**64)))  # seeds wrap at 2^64


@pytest.mark.parametrize("n,size", [(1, 4), (7, 8), (8, 8), (9, 8), (100, 8), (1000, 16), (37, 5), (2388, 128),
                                    (2388, 1), (5, 2)])
def test_clusters_partition_and_are_balanced(n, size):
    clusters = balanced_clusters(unit(n, 16, n), size, seed=0)
    flat = np.concatenate(clusters)
    assert sorted(flat) == list(range(n))
    sizes = sorted(len(c) for c in clusters)
    assert sizes == sorted([size] * (n // size) + ([n % size] if n % size else []))  # all full but one


def test_clusters_group_similar_vectors():
    rng = np.random.default_rng(0)
    centres = unit(8, 32, 1)
    labels = np.repeat(np.arange(8), 16)
    x = centres[labels] + 0.05 * rng.normal(size=(128, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    clusters = balanced_clusters(x, 16, seed=0)
    purity = np.mean([np.bincount(labels[c]).max() / len(c) for c in clusters])
    assert purity > 0.9


def test_cluster_batches_hold_whole_clusters_and_are_seeded():
    x = unit(200, 8, 3)
    ids = np.arange(1000, 1200)
    a = cluster_batches(x, ids, 8, 32, seed=5)
    b = cluster_batches(x, ids, 8, 32, seed=5)
    assert all((p == q).all() for p, q in zip(a, b))
    assert sorted(np.concatenate(a)) == list(ids)
    assert max(len(batch) for batch in a) <= 32


@pytest.mark.parametrize("cluster_size", [8, 32, 128, 200])
def test_cluster_batches_are_full(cluster_size):
    """Clusters of the batch size or of a divisor of it fill their batches: all but the last, which holds
    the one short cluster, are full (halving clusters of ~75 rows filled batches of 128 with
    one, so that an NGAME run at its final cluster size trained on batches 60% full)."""
    n, batch = 2388, 128
    batches = cluster_batches(unit(n, 16, 4), np.arange(n), cluster_size, batch, seed=1)
    sizes = [len(b) for b in batches]
    assert sorted(np.concatenate(batches)) == list(range(n))
    assert all(s == batch for s in sizes[:-1]) and len(batches) == -(-n // batch)  # the short cluster last


def test_bad_cluster_size():
    with pytest.raises(ValueError, match="cluster_size"):
        balanced_clusters(unit(4, 4, 0), 0)


@pytest.mark.parametrize("n,cluster_size,batch", [(300, 5, 32), (300, 12, 32), (300, 8, 32), (2388, 48, 128),
                                                  (2388, 128, 128), (1025, 128, 128), (3600, 8, 128), (20, 8, 32),
                                                  (300, 17, 32), (64, 16, 32)])
@pytest.mark.parametrize("drop_last", [True, False])
def test_an_epoch_of_cluster_batches_visits_every_full_batch(n, cluster_size, batch, drop_last):
    """An epoch visits every batch of whole clusters once, leaving out only a short last one under
    drop_last (as the shuffle leaves out its last queries; it used to take the shuffle's step count,
    dropping a random full batch, or half the queries where the cluster size does not divide the
    batch); the count a run's schedule makes before clustering is the one the batches give."""
    import scipy.sparse as sp

    from ramen.batching import BatchSampler
    from ramen.clustering import cluster_batch_count

    sampler = BatchSampler(sp.identity(n, format="csr"), {}, batch, seed=0, drop_last=drop_last)
    batches = cluster_batches(unit(n, 16, 2), sampler.pool, cluster_size, batch, seed=0)
    size = min(cluster_size, batch)
    per_batch = (batch // size) * size
    assert all(len(b) == per_batch for b in batches[:-1]) and 0 < len(batches[-1]) <= per_batch
    short = len(batches) > 1 and len(batches[-1]) < per_batch
    assert cluster_batch_count(n, cluster_size, batch) == (len(batches), short)
    sampler.set_batches(batches)
    steps = sampler.steps_per_epoch()
    assert steps == sampler.cluster_steps(cluster_size) == len(batches) - (drop_last and short)
    for epoch in (0, 3):
        seen = [sampler.batch(epoch, step).query_ids for step in range(steps)]
        flat = np.concatenate(seen)
        assert len(flat) == len(np.unique(flat))  # each query at most once an epoch
        expected = n - len(batches[-1]) if drop_last and short else n
        assert len(flat) == expected  # every query of every batch visited, the short one left out
