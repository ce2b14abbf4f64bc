"""ramen.graph against plain scipy/numpy references: walk visit counts against the exact expectation
from the transition matrix, top-k and self-loop rules, determinism across thread counts, pruning
against numpy, and every bad input the issue names."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from ramen import _C, graph

# ---- references -----------------------------------------------------------------------------


def csr_from_edges(rows, cols, shape, dtype=np.int32) -> sp.csr_matrix:
    """A CSR matrix that keeps duplicate entries (scipy's constructors would sum them)."""
    rows, cols = np.asarray(rows, dtype=np.int64), np.asarray(cols, dtype=np.int64)
    order = np.lexsort((cols, rows))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=shape[0]))])
    return sp.csr_matrix((np.ones(len(rows), np.float32), cols[order].astype(dtype), indptr.astype(dtype)), shape=shape)


def multiplicities(m: sp.csr_matrix) -> sp.csr_matrix:
    """Stored entries counted as edges (duplicates add up, values ignored)."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    return sp.csr_matrix((np.ones(m.nnz), (rows, m.indices)), shape=m.shape)


def effective_restart(r: float) -> float:
    """The kernels restart when a 24-bit uniform u = k / 2^24 is < float32(r)."""
    return float(np.ceil(np.float64(np.float32(r)) * 2**24) / 2**24)


def row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    deg = np.asarray(m.sum(axis=1)).ravel()
    return sp.diags(np.divide(1.0, deg, out=np.zeros_like(deg), where=deg > 0)) @ m


def iterate_walk(T: sp.csr_matrix, first: np.ndarray, restart: np.ndarray, r: float, L: int) -> np.ndarray:
    """Expected landings over L hops: pi_1 = first, pi_h = r * restart + (1 - r) * pi_(h-1) @ T."""
    pi, total = first, first.copy()
    for _ in range(L - 1):
        pi = r * restart + (1 - r) * (T.T @ pi)
        total += pi
    return total


def expected_rwr(adj: sp.csr_matrix, s: int, r: float, L: int) -> np.ndarray:
    """Expected landing counts of the unipartite walk from s; dangling nodes lead back to s."""
    A = multiplicities(adj)
    P = row_normalise(A).tolil()
    for d in np.flatnonzero(np.asarray(A.sum(axis=1)).ravel() == 0):
        P[d, s] = 1.0
    P = P.tocsr()
    e = np.zeros(adj.shape[0])
    e[s] = 1.0
    first = P.T @ e
    return iterate_walk(P, first, first, r, L)


def expected_bipartite(Y: sp.csr_matrix, s: int, r: float, L: int) -> np.ndarray:
    """Expected column landings of column -> row -> column walks from column s (empty columns lead to s)."""
    M = multiplicities(Y)
    T = (row_normalise(M.T.tocsr()) @ row_normalise(M)).tolil()
    for d in np.flatnonzero(np.asarray(M.sum(axis=0)).ravel() == 0):
        T[d, :] = 0
        T[d, s] = 1.0
    T = T.tocsr()
    e = np.zeros(Y.shape[1])
    e[s] = 1.0
    first = T.T @ e
    return iterate_walk(T, first, first, r, L)


def expected_from_row(E: sp.csr_matrix, i: int, r: float, L: int) -> np.ndarray:
    """Expected anchor landings of densify's walk from item i: restarts land on a uniform anchor of i."""
    M = multiplicities(E)
    T = row_normalise(M.T.tocsr()) @ row_normalise(M)
    first = np.asarray(row_normalise(M)[i].todense()).ravel()
    return iterate_walk(T, first, first, r, L)


def copies_of(m: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """k disjoint copies, block diagonal and with duplicates kept: walks from the copies of a node
    are independent samples (each start has its own random stream)."""
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    shift = np.repeat(np.arange(k), m.nnz)
    return csr_from_edges(np.tile(rows, k) + shift * m.shape[0], np.tile(m.indices, k) + shift * m.shape[1],
                          (k * m.shape[0], k * m.shape[1]))


def per_copy(result: sp.csr_matrix, k: int, n_rows: int, n_cols: int) -> np.ndarray:
    """(k, n_rows, n_cols) landings of each copy's walks, from a result over k block copies."""
    dense = np.zeros((k, n_rows, n_cols))
    coo = result.tocoo()
    copy = coo.row // n_rows
    assert np.all(coo.col // n_cols == copy), "a walk left its copy of the graph"
    dense[copy, coo.row % n_rows, coo.col % n_cols] = coo.data
    return dense


def assert_matches_expectation(samples: np.ndarray, expected: np.ndarray, L: int, z: float = 5.0) -> None:
    """Mean landing frequency within z standard errors of the exact one, the error estimated from
    the k samples (floored by sqrt(expected count), so that rare landings no sample saw still pass)."""
    k = samples.shape[0]
    freq = samples / L
    mean = freq.mean(axis=0)
    sd = np.maximum(freq.std(axis=0, ddof=1), np.sqrt(expected) / L)
    tol = z * sd / np.sqrt(k) + 1e-12
    worst = np.max(np.abs(mean - expected / L) / tol)
    assert worst <= 1.0, f"visit frequency off by {worst * z:.2f} standard errors"


def small_graph() -> sp.csr_matrix:
    """10 nodes: a self-loop, a duplicate edge, a dangling node (8) and an isolated node (9)."""
    rng = np.random.default_rng(7)
    rows = list(rng.integers(0, 8, 24)) + [3, 1, 1, 5]
    cols = list(rng.integers(0, 9, 24)) + [3, 2, 2, 8]
    return csr_from_edges(rows, cols, (10, 10))


def small_bipartite() -> sp.csr_matrix:
    """7 rows x 6 columns: an empty row (6), an empty column (5), a duplicate entry."""
    rows = [0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 5, 0]
    cols = [0, 1, 1, 2, 3, 0, 3, 4, 4, 1, 2, 4, 1]
    return csr_from_edges(rows, cols, (7, 6))


def random_graph(n: int, avg_degree: float, seed: int, square: bool = True, cols: int | None = None) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    cols = n if square else cols
    m = int(n * avg_degree)
    return csr_from_edges(rng.integers(0, n, m), rng.integers(0, cols, m), (n, cols))


# ---- RNG ---------------------------------------------------------------------------------------


def test_philox_known_answers() -> None:
    # Random123's kat_vectors for philox4x32 with 10 rounds
    assert _C.philox4x32([0, 0, 0, 0], [0, 0]) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)
    assert _C.philox4x32([0xFFFFFFFF] * 4, [0xFFFFFFFF] * 2) == (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)
    assert _C.philox4x32([0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344], [0xA4093822, 0x299F31D0]) == (
        0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)


@pytest.mark.parametrize("p", [0.8, 0.3, 1.0, 1e-7, 0.5 + 2**-25, float(np.nextafter(np.float32(1), 0))])
def test_restart_test_equals_uniform_float_comparison(p: float) -> None:
    # the kernels compare integers: (word >> 8) < ceil(float32(p) * 2^24), exactly uniform01(word) < p
    words = np.concatenate([np.random.default_rng(0).integers(0, 2**32, 200_000, dtype=np.uint32),
                            np.arange(0, 2**32, 2**24 - 255, dtype=np.uint32)]).astype(np.uint32)
    u, restart = _C.uniform01(words, p)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert np.array_equal(u, (words >> 8).astype(np.float32) * np.float32(2**-24))
    assert np.array_equal(restart, u < np.float32(p))
    threshold = int(np.ceil(np.float64(np.float32(p)) * 2**24))
    edge = np.array([(threshold - 1) << 8, threshold << 8 if threshold < 2**24 else 2**32 - 1], dtype=np.uint32)
    assert _C.uniform01(edge, p)[1].tolist() == [True, threshold >= 2**24]


class HopWords:
    """The kernels' random draws for one (seed, start, hop), from the scalar Philox: restart from
    word 0 of block 0, the edge choice from word 1 (retries: blocks 1, 3, 5, ...)."""

    def __init__(self, seed: int, start: int, hop: int) -> None:
        self.seed, self.start, self.hop = seed, start, hop

    def block(self, b: int) -> tuple[int, ...]:
        return _C.philox4x32([self.hop, self.start & 0xFFFFFFFF, self.start >> 32, b],
                             [self.seed & 0xFFFFFFFF, self.seed >> 32])

    def restart(self, r: float) -> bool:
        threshold = int(np.ceil(np.float64(np.float32(r)) * 2**24))
        return (self.block(0)[0] >> 8) < threshold

    def choose(self, deg: int, which: int = 1) -> int:
        """Lemire's bounded draw: first word `which` of block 0, then the retry stream (blocks which,
        which + 2, ...); ranges of 2^32 or more draw 64-bit words from the retry stream only."""
        deg = int(deg)
        retry = (w for b in range(which, 1 << 20, 2) for w in self.block(b))
        if deg < 2**32:
            x, bits = self.block(0)[which], 32
        else:
            x, bits = next(retry) | next(retry) << 32, 64
        threshold = (2**bits - deg) % deg
        while (x * deg) % 2**bits < threshold:
            x = next(retry) if bits == 32 else next(retry) | next(retry) << 32
        return (x * deg) >> bits


def reference_walk(adj: sp.csr_matrix, s: int, L: int, r: float, seed: int) -> np.ndarray:
    """The unipartite walk from s replayed in Python with the kernels' random draws: landing counts."""
    counts = np.zeros(adj.shape[0])
    cur = s
    for h in range(L):
        words = HopWords(seed, s, h)
        if h == 0 or words.restart(r):
            cur = s
        lo, hi = adj.indptr[cur], adj.indptr[cur + 1]
        cur = s if hi == lo else adj.indices[lo + words.choose(hi - lo)]
        counts[cur] += 1
    return counts


def test_walks_replay_the_documented_random_draws() -> None:
    # the vectorised Philox of the kernels equals the scalar one, keyed by (seed, start, hop); a
    # degree near 2^31 is not needed to reach Lemire's retry path: see test_lemire_retry_path
    adj = random_graph(70, 3, seed=4)
    starts = [0, 5, 69, 33] + list(range(6, 70, 7))  # more starts than one 16-lane register
    seed = 0x123456789ABCDEF
    out = graph.random_walk_with_restart(adj, starts, walk_length=25, restart_prob=0.6, seed=seed).toarray()
    for row, s in enumerate(starts):
        assert np.array_equal(out[row], reference_walk(adj, s, 25, 0.6, seed)), s


@pytest.mark.parametrize("deg", [1, 2, 3, 1000, 3 * 2**30, 2**32 - 1, 2**32, 2**32 + 5, 3 * 2**61])
def test_edge_choice_matches_reference_on_rare_paths(deg: int) -> None:
    # 3 * 2^30 rejects the first word with probability 1/4; 2^32 and beyond take 64-bit draws
    words = [HopWords(0xDEADBEEF, s, h) for s in (0, 1, 2**33 + 7) for h in range(40)]
    ours = [_C.walk_draw(seed=w.seed, start=w.start, hop=w.hop, which=2, range=deg) for w in words]
    assert ours == [w.choose(deg, which=2) for w in words]
    assert all(0 <= x < deg for x in ours)
    if deg == 3 * 2**30:  # the retry path was taken
        assert any((w.block(0)[2] * deg) % 2**32 < (2**32 - deg) % deg for w in words)


# ---- walks against their definitions ---------------------------------------------------------


@pytest.mark.parametrize("r, L", [(0.8, 30), (0.3, 12), (1.0, 5)])
def test_rwr_visit_frequencies_match_transition_matrix(r: float, L: int) -> None:
    adj, k = small_graph(), 3000
    n = adj.shape[0]
    result = graph.random_walk_with_restart(copies_of(adj, k), walk_length=L, restart_prob=r, seed=3)
    samples = per_copy(result, k, n, n)
    assert np.all(samples.sum(axis=2) == L)
    expected = np.stack([expected_rwr(adj, s, effective_restart(r), L) for s in range(n)])
    assert_matches_expectation(samples, expected, L)
    # the same test has power: a 10% different restart probability fails it
    wrong = np.stack([expected_rwr(adj, s, effective_restart(r) * 0.9, L) for s in range(n)])
    if r < 1.0:
        with pytest.raises(AssertionError):
            assert_matches_expectation(samples, wrong, L)


def test_rwr_single_hop_is_one_uniform_out_edge() -> None:
    adj, k = small_graph(), 4000
    samples = per_copy(graph.random_walk_with_restart(copies_of(adj, k), walk_length=1), k, 10, 10)
    expected = np.stack([expected_rwr(adj, s, 1.0, 1) for s in range(10)])
    assert np.allclose(expected[3, 3], 2 / 3)  # node 3: a self-loop stored twice, one edge to node 1
    assert_matches_expectation(samples, expected, 1)


def test_bipartite_visit_frequencies_match_definition() -> None:
    Y, k, L, r = small_bipartite(), 3000, 25, 0.8
    rows, cols = Y.shape
    result = graph.bipartite_walk(copies_of(Y, k), walk_length=L, restart_prob=r,
                                  self_loops=False, seed=5)
    samples = per_copy(result, k, cols, cols)
    assert np.all(samples.sum(axis=2) == L)
    assert np.all(samples[:, 5, 5] == L)  # an empty column only ever lands on itself
    expected = np.stack([expected_bipartite(Y, s, effective_restart(r), L) for s in range(cols)])
    assert_matches_expectation(samples, expected, L)
    wrong = np.stack([expected_bipartite(Y, s, effective_restart(0.7), L) for s in range(cols)])
    with pytest.raises(AssertionError):
        assert_matches_expectation(samples, wrong, L)


def test_densify_walk_matches_definition() -> None:
    E, k, L, r = small_bipartite(), 3000, 25, 0.8
    rows, cols = E.shape
    big = copies_of(E, k)
    bt = sp.csr_matrix((np.ones(big.nnz, bool), big.indices, big.indptr), shape=big.shape).tocsc()
    out = _C.bipartite_walk(big.indptr, big.indices, bt.indptr.astype(np.int32), bt.indices.astype(np.int32),
                            big.shape[0], big.shape[1], np.arange(big.shape[0], dtype=np.int64),
                            starts_are_rows=True, keep_extra=False, walk_length=L, restart_prob=r, top_k=0, seed=9,
                            num_threads=2, progress=None)
    counts = sp.csr_matrix((out[2], out[1], out[0]), shape=big.shape)
    samples = per_copy(counts, k, rows, cols)
    assert np.all(samples[:, 6].sum(axis=1) == 0)  # an item without anchors never lands
    assert np.all(samples[:, :6].sum(axis=2) == L)
    expected = np.stack([expected_from_row(E, i, effective_restart(r), L) for i in range(rows)])
    assert_matches_expectation(samples, expected, L)


def test_densify_keeps_originals_and_adds_top_k_by_frequency() -> None:
    rng = np.random.default_rng(2)
    rows, cols = rng.integers(0, 300, 900), rng.integers(0, 200, 900)
    E = csr_from_edges(np.r_[rows, 0, 0], np.r_[cols, 7, 7], (300, 200))  # with a duplicate edge
    L, k = 50, 4
    D = graph.densify(E, walk_length=L, top_k=k, seed=1)
    counts = _raw_densify_counts(E, L, seed=1)
    assert D.shape == E.shape and D.dtype == np.float32
    gained = 0
    for i in range(E.shape[0]):
        c = counts[i]
        originals = np.unique(E.indices[E.indptr[i]:E.indptr[i + 1]])
        new = np.setdiff1d(np.flatnonzero(c), originals)  # the top k is ranked among new anchors only
        ties = np.array([tie_hash(1, i, int(a)) & (2**39 - 1) for a in new], dtype=np.uint64)
        order = new[np.lexsort((new, ties, -c[new]))][:k]
        gained += len(order)
        expect_cols = np.union1d(order, originals)
        row = D[i]
        assert np.array_equal(row.indices, expect_cols), i
        assert np.allclose(row.data, np.maximum(c[expect_cols], 1) / L)
    assert (E.astype(bool) > D.astype(bool)).nnz == 0  # walks only add edges
    assert gained > 0.5 * k * E.shape[0]  # most items gain edges, whatever their degree


def mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 31)


def tie_hash(seed: int, item: int, anchor: int) -> int:
    """densify's order among equally visited anchors (SplitMix64 finaliser of seed, item, anchor)."""
    return mix64(seed ^ mix64((item + 0x9E3779B97F4A7C15 * (anchor + 1)) & (2**64 - 1)))


def test_densify_ties_do_not_favour_low_ids() -> None:
    # where equally visited new anchors straddle the top-k cut, the chosen ones are not simply the
    # lowest ids (they would be every time under a lower-id rule)
    E = random_graph(400, 4, seed=9, square=False, cols=300)
    k, lowest, cut_ties = 3, 0, 0
    for seed in range(3):
        counts = _raw_densify_counts(E, 400, seed=seed)
        D = graph.densify(E, top_k=k, seed=seed)
        for i in range(E.shape[0]):
            new = np.setdiff1d(np.flatnonzero(counts[i]), E.indices[E.indptr[i]:E.indptr[i + 1]])
            if len(new) <= k:
                continue
            c = counts[i, new]
            cut = np.sort(c)[::-1][k - 1]
            tied, room = new[c == cut], k - int((c > cut).sum())
            if len(tied) <= room:
                continue
            chosen = np.intersect1d(D[i].indices, tied)
            assert len(chosen) == room
            cut_ties += 1
            lowest += bool(np.array_equal(chosen, tied[:room]))
    assert cut_ties > 100
    assert lowest < 0.5 * cut_ties


def _raw_densify_counts(E: sp.csr_matrix, L: int, seed: int) -> np.ndarray:
    indptr, indices = E.indptr.astype(np.int32), E.indices.astype(np.int32)
    t = sp.csr_matrix((np.ones(E.nnz, bool), indices, indptr), shape=E.shape).tocsc()
    out = _C.bipartite_walk(indptr, indices, t.indptr.astype(np.int32), t.indices.astype(np.int32), E.shape[0],
                            E.shape[1], np.arange(E.shape[0], dtype=np.int64), starts_are_rows=True,
                            keep_extra=False, walk_length=L, restart_prob=0.8, top_k=0, seed=seed, num_threads=1,
                            progress=None)
    return sp.csr_matrix((out[2], out[1], out[0]), shape=E.shape).toarray()


# ---- top-k, self-loops, determinism ------------------------------------------------------------


def reference_top_k(full: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's k largest counts, ties to the lower id, rows sorted by id."""
    rows, cols, vals = [], [], []
    for i in range(full.shape[0]):
        idx, c = full.indices[full.indptr[i]:full.indptr[i + 1]], full.data[full.indptr[i]:full.indptr[i + 1]]
        keep = np.sort(idx[np.lexsort((idx, -c))][:k])
        rows += [i] * len(keep)
        cols += list(keep)
        vals += list(full[i, keep].toarray().ravel())
    return sp.csr_matrix((vals, (rows, cols)), shape=full.shape)


def test_top_k_ties_go_to_lower_id() -> None:
    adj = random_graph(400, 8, seed=11)
    full = graph.random_walk_with_restart(adj, walk_length=15, seed=4)
    top = graph.random_walk_with_restart(adj, walk_length=15, seed=4, top_k=3)
    ref = reference_top_k(full, 3)
    assert np.array_equal(top.indptr, ref.indptr) and np.array_equal(top.indices, ref.indices)
    assert np.array_equal(top.data, ref.data)
    # the case is not vacuous: many rows have a tie between their 3rd and 4th largest counts
    ties = 0
    for i in range(400):
        c = np.sort(full.data[full.indptr[i]:full.indptr[i + 1]])[::-1]
        ties += len(c) > 3 and c[2] == c[3]
    assert ties > 50


def test_bipartite_self_loops_survive_top_k() -> None:
    Y = random_graph(300, 4, seed=12, square=False, cols=150)
    full = graph.bipartite_walk(Y, walk_length=30, seed=2, self_loops=False)
    top = graph.bipartite_walk(Y, walk_length=30, seed=2, top_k=1, self_loops=True)
    no_loops = graph.bipartite_walk(Y, walk_length=30, seed=2, top_k=1, self_loops=False)
    assert np.array_equal(no_loops.toarray(), reference_top_k(full, 1).toarray())
    expect = reference_top_k(full, 1).tolil()
    for s in range(Y.shape[1]):
        expect[s, s] = max(full[s, s], 1.0)
    assert np.array_equal(top.toarray(), expect.toarray())
    assert np.all(top.diagonal() >= 1)
    assert (np.diff(top.indptr) == 2).sum() > 0  # some starts kept themselves beside a different top 1


@pytest.mark.parametrize("kind", ["rwr", "bipartite", "densify", "prune"])
def test_same_output_for_any_thread_count(kind: str) -> None:
    adj = random_graph(9000, 4, seed=21)
    emb = np.random.default_rng(0).standard_normal((9000, 48)).astype(np.float16)
    run = {
        "rwr": lambda t: graph.random_walk_with_restart(adj, walk_length=2000, top_k=20, seed=8, num_threads=t),
        "bipartite": lambda t: graph.bipartite_walk(adj[:, :6000], walk_length=300, seed=8, num_threads=t),
        "densify": lambda t: graph.densify(adj[:, :6000], walk_length=300, seed=8, num_threads=t),
        "prune": lambda t: graph.prune_edges(adj, emb, emb, 0.1, num_threads=t),
    }[kind]
    base = run(1)
    assert base.nnz > 0
    for t in (2, 3, 7):
        other = run(t)
        assert np.array_equal(base.indptr, other.indptr)
        assert np.array_equal(base.indices, other.indices)
        assert np.array_equal(base.data, other.data)


@pytest.mark.parametrize("rows_mode", [None, False, True])
def test_same_output_for_any_batching(rows_mode) -> None:
    # batches of 1, 37 and 100 starts cut chunks (64 starts) and lane groups anywhere; with up to 7
    # threads, every batch's rows must land at the same place
    adj = random_graph(700, 4, seed=3)
    starts = np.random.default_rng(2).integers(0, 700, 500)
    t = sp.csr_matrix((np.ones(adj.nnz, bool), adj.indices, adj.indptr), shape=adj.shape).tocsc()

    def run(threads: int, batch: int):
        common = dict(walk_length=60, restart_prob=0.7, top_k=5, seed=3, num_threads=threads, progress=None,
                      batch_starts=batch)
        if rows_mode is None:
            return _C.random_walk_with_restart(adj.indptr, adj.indices, 700, starts, **common)
        return _C.bipartite_walk(adj.indptr, adj.indices, t.indptr.astype(np.int32), t.indices.astype(np.int32),
                                 700, 700, starts, starts_are_rows=rows_mode, keep_extra=True, **common)

    base = run(1, 0)
    assert len(base[1]) > 500
    for threads, batch in [(1, 1), (2, 37), (3, 100), (7, 37), (7, 1)]:
        out = run(threads, batch)
        for a, b in zip(base, out):
            assert np.array_equal(a, b), (threads, batch)


def test_seed_changes_walks_and_int64_indices_match_int32() -> None:
    adj = random_graph(500, 5, seed=3)
    a = graph.random_walk_with_restart(adj, walk_length=40, seed=1)
    b = graph.random_walk_with_restart(adj, walk_length=40, seed=2)
    assert (a != b).nnz > 0
    wide = adj.copy()  # scipy's constructor would downcast int64 indices that fit in int32
    wide.indices, wide.indptr = adj.indices.astype(np.int64), adj.indptr.astype(np.int64)
    c = graph.random_walk_with_restart(wide, walk_length=40, seed=1)
    assert np.array_equal(a.indices, c.indices) and np.array_equal(a.data, c.data)
    mixed = sp.csr_matrix(adj)
    mixed.indptr = adj.indptr.astype(np.int64)  # mixed index dtypes are unified, not rejected
    assert np.array_equal(graph.random_walk_with_restart(mixed, walk_length=40, seed=1).data, a.data)


def test_starts_subset_and_repeats() -> None:
    adj = random_graph(300, 4, seed=5)
    full = graph.random_walk_with_restart(adj, walk_length=50)
    sub = graph.random_walk_with_restart(adj, [7, 3, 7], walk_length=50)
    assert sub.shape == (3, 300)
    for r, s in enumerate([7, 3, 7]):
        assert np.array_equal(sub[r].toarray(), full[s].toarray())


# ---- adversarial graphs ----------------------------------------------------------------------


def test_empty_graphs() -> None:
    assert graph.random_walk_with_restart(sp.csr_matrix((0, 0))).shape == (0, 0)
    out = graph.random_walk_with_restart(sp.csr_matrix((4, 4)), walk_length=9)
    assert np.array_equal(out.toarray(), 9 * np.eye(4))  # isolated starts land on themselves
    assert np.array_equal(graph.bipartite_walk(sp.csr_matrix((0, 3)), walk_length=2).toarray(), 2 * np.eye(3))
    assert graph.densify(sp.csr_matrix((3, 0))).shape == (3, 0)
    assert graph.densify(sp.csr_matrix((3, 5))).nnz == 0
    assert graph.prune_edges(sp.csr_matrix((3, 5)), np.zeros((3, 4)), np.zeros((5, 4))).nnz == 0
    assert graph.random_walk_with_restart(sp.csr_matrix((4, 4)), starts=[]).shape == (0, 4)


def test_isolated_start_and_self_loop_only() -> None:
    adj = csr_from_edges([0, 1], [0, 0], (3, 3))  # 0: self-loop only; 1 -> 0; 2 isolated
    out = graph.random_walk_with_restart(adj, walk_length=20, restart_prob=0.5).toarray()
    assert out[0, 0] == 20 and out[2, 2] == 20
    assert out[1, 0] + out[1, 1] == 20 and out[1, 0] > 0  # 1 -> 0 -> 0 ... or back to 1 on restart


def test_node_of_degree_one_million() -> None:
    n = 1_000_001  # node 0 links to every other node, and every other node back to 0
    rows = np.concatenate([np.zeros(n - 1, np.int64), np.arange(1, n)])
    cols = np.concatenate([np.arange(1, n), np.zeros(n - 1, np.int64)])
    adj = csr_from_edges(rows, cols, (n, n))
    landed = np.concatenate([graph.random_walk_with_restart(adj, [0], walk_length=400, seed=s).indices
                             for s in range(40)])
    leaves = landed[landed > 0]
    # from 0 every hop lands on a leaf, uniform over a million: a chi-square test over 10 bins of ids
    counts = np.bincount((leaves - 1) * 10 // (n - 1), minlength=10)
    chi2 = ((counts - counts.mean()) ** 2 / counts.mean()).sum()
    assert chi2 < 30, counts  # 9 degrees of freedom: p < 0.001
    out = graph.random_walk_with_restart(adj, [0, 5], walk_length=400, restart_prob=0.5, seed=1)
    assert out[1, 0] > 0 and out.sum() == 800


def test_duplicate_edges_weigh_as_parallel_edges() -> None:
    adj = csr_from_edges([0, 0, 0, 0], [1, 1, 1, 2], (3, 3))  # 0 -> 1 three times, 0 -> 2 once
    out = graph.random_walk_with_restart(copies_of(adj, 4000), walk_length=1, restart_prob=1.0)
    counts = per_copy(out, 4000, 3, 3)[:, 0].sum(axis=0)
    assert abs(counts[1] / 4000 - 0.75) < 5 * np.sqrt(0.75 * 0.25 / 4000)


def test_progress_bar_and_callback_errors() -> None:
    adj = random_graph(200, 3, seed=1)
    out = graph.random_walk_with_restart(adj, walk_length=10, progress=True)
    assert out.shape == (200, 200)

    seen: list[int] = []
    _C.random_walk_with_restart(adj.indptr, adj.indices, 200, np.arange(200, dtype=np.int64), walk_length=10,
                                restart_prob=0.8, top_k=0, seed=0, num_threads=2, progress=seen.append,
                                batch_starts=64)
    assert seen == [64, 128, 192, 200]  # one report per batch of starts

    def stop(done: int) -> None:
        raise KeyError("stop")

    with pytest.raises(KeyError):
        _C.random_walk_with_restart(adj.indptr, adj.indices, 200, np.arange(200, dtype=np.int64), walk_length=10,
                                    restart_prob=0.8, top_k=0, seed=0, num_threads=2, progress=stop)


# ---- bad input -------------------------------------------------------------------------------


def corrupted(m: sp.csr_matrix, field: str, index: int, value: int) -> sp.csr_matrix:
    m = m.copy()
    getattr(m, field)[index] = value
    return m


@pytest.mark.parametrize("bad, match", [
    (lambda a: a[:, :5], "adj must be square"),
    (lambda a: corrupted(a, "indices", 3, 10), "adj.indices holds column 10 \\(entry 3\\)"),
    (lambda a: corrupted(a, "indices", 0, -1), "adj.indices holds column -1 \\(entry 0\\)"),
    (lambda a: corrupted(a, "indptr", 2, 0), "adj.indptr decreases"),
    (lambda a: corrupted(a, "indptr", 1, -3), "adj.indptr decreases"),
    (lambda a: corrupted(a, "indptr", 0, 1), "adj.indptr must start at 0"),
    (lambda a: corrupted(a, "indptr", 10, 10**6), "adj.indptr ends at"),
])
def test_bad_adjacency(bad, match: str) -> None:
    adj = random_graph(10, 3, seed=0)
    with pytest.raises(ValueError, match=match):
        graph.random_walk_with_restart(bad(adj))


@pytest.mark.parametrize("kwargs, match", [
    ({"restart_prob": 0.0}, "restart_prob"), ({"restart_prob": -0.2}, "restart_prob"),
    ({"restart_prob": 1.5}, "restart_prob"), ({"restart_prob": float("nan")}, "restart_prob"),
    ({"walk_length": 0}, "walk_length"), ({"walk_length": -3}, "walk_length"), ({"walk_length": 2.5}, "walk_length"),
    ({"walk_length": 2**24 + 1}, "walk_length"), ({"top_k": 0}, "top_k"), ({"seed": -1}, "seed"),
    ({"num_threads": 0}, "num_threads"), ({"starts": [0, 10]}, "starts holds node 10"),
    ({"starts": [-1]}, "starts holds node -1"), ({"starts": [0.5]}, "starts"), ({"starts": [[0]]}, "starts"),
])
def test_bad_walk_arguments(kwargs: dict, match: str) -> None:
    adj = random_graph(10, 3, seed=0)
    with pytest.raises(ValueError, match=match):
        graph.random_walk_with_restart(adj, **kwargs)
    if "starts" not in kwargs:
        with pytest.raises(ValueError, match=match):
            graph.bipartite_walk(adj, **kwargs)


def test_bad_bipartite_and_densify_inputs() -> None:
    Y = random_graph(10, 3, seed=0, square=False, cols=6)
    with pytest.raises(ValueError, match="Y.indices holds column 6"):
        graph.bipartite_walk(corrupted(Y, "indices", 0, 6))
    with pytest.raises(ValueError, match="starts holds node 6"):
        graph.bipartite_walk(Y, [6])
    with pytest.raises(ValueError, match="E.indptr decreases"):
        graph.densify(corrupted(Y, "indptr", 3, 0))
    with pytest.raises(ValueError, match="top_k"):
        graph.densify(Y, top_k=0)
    with pytest.raises(TypeError, match="adj must be a scipy sparse matrix"):
        graph.random_walk_with_restart(np.eye(3))


# ---- pruning ---------------------------------------------------------------------------------


def unit_rows(n: int, dim: int, seed: int, dtype) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(dtype)


def assert_kept_as_numpy(out: sp.csr_matrix, E: sp.csr_matrix, R: np.ndarray, C: np.ndarray,
                         threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Checks the edges `prune_edges` kept (E.data numbers the edges 1..nnz) against float64 numpy;
    returns each edge's row and whether it was kept."""
    edge_rows = np.repeat(np.arange(E.shape[0]), np.diff(E.indptr))
    score = (R[edge_rows].astype(np.float64) * C[E.indices].astype(np.float64)).sum(axis=1)
    # float32 accumulation: only edges within its rounding error of the threshold may differ
    clear = np.abs(score - threshold) > 4 * R.shape[1] * 6e-8
    assert clear.mean() > 0.99
    ours = np.zeros(E.nnz, bool)
    ours[out.data.astype(np.int64) - 1] = True
    assert np.array_equal(ours[clear], (score > threshold)[clear])
    return edge_rows, ours


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("dim", [1, 7, 16, 100, 384])
def test_prune_matches_numpy(dtype, dim: int) -> None:
    rng = np.random.default_rng(dim)
    rows = np.sort(rng.integers(0, 550, 3600))  # rows 550.. are empty
    cols = rng.integers(0, 900, 3600)
    E = csr_from_edges(np.r_[rows, 0, 0], np.r_[cols, 5, 5], (600, 900))  # with a duplicate edge
    E.data = np.arange(1, E.nnz + 1, dtype=np.float32)  # values name the edges
    R, C = unit_rows(600, dim, 1, dtype), unit_rows(900, dim, 2, dtype)
    threshold = 0.05
    out = graph.prune_edges(E, R, C, threshold)
    edge_rows, ours = assert_kept_as_numpy(out, E, R, C, threshold)
    assert out.shape == E.shape and out.dtype == E.dtype
    assert np.array_equal(out.indices, E.indices[ours])  # values and columns of the kept edges, in order
    assert np.array_equal(np.diff(out.indptr), np.bincount(edge_rows[ours], minlength=600))


@pytest.mark.parametrize("edge_order", ["csr", "bucket"])
@pytest.mark.parametrize("threads", [1, 2, 3])
def test_prune_over_many_blocks_and_column_buckets(threads: int, edge_order: str) -> None:
    """Edges visited block by block, in CSR or column-bucket order: every edge still gets its own verdict."""
    rng = np.random.default_rng(7)
    n_rows, n_cols, dim = 3000, 20_000, 128  # f16 rows of 256 bytes: 1,024 columns per bucket, 20 buckets
    rows = np.r_[np.sort(rng.integers(0, n_rows - 500, 150_000)), np.full(40_000, n_rows - 1)]  # a huge last row
    cols = np.r_[rng.integers(0, n_cols, 150_000), rng.integers(0, n_cols, 40_000)]
    E = csr_from_edges(rows, cols, (n_rows, n_cols))
    E.data = np.arange(1, E.nnz + 1, dtype=np.float32)
    R, C = unit_rows(n_rows, dim, 3, np.float16), unit_rows(n_cols, dim, 4, np.float16)
    out = graph.prune_edges(E, R, C, 0.02, num_threads=threads, edge_order=edge_order)
    assert_kept_as_numpy(out, E, R, C, 0.02)
    reference = graph.prune_edges(E, R, C, 0.02, num_threads=1)
    assert all(np.array_equal(getattr(out, a), getattr(reference, a)) for a in ("indptr", "indices", "data"))


def test_prune_auto_order_trial_keeps_every_verdict() -> None:
    """From 4M edges, "auto" scores the first edges in timed trial blocks of both orders, then the
    rest in the faster: the output is the forced orders' and numpy's whichever it picks."""
    rng = np.random.default_rng(11)
    n_rows, n_cols, nnz = 30_000, 200_000, (1 << 22) + 4321
    indptr = np.r_[0, np.sort(rng.integers(0, nnz + 1, n_rows - 1)), nnz].astype(np.int64)  # empty rows too
    E = sp.csr_matrix((np.arange(1, nnz + 1, dtype=np.float32), rng.integers(0, n_cols, nnz).astype(np.int32),
                       indptr), shape=(n_rows, n_cols))
    R, C = unit_rows(n_rows, 8, 5, np.float16), unit_rows(n_cols, 8, 6, np.float16)
    out, used = graph.prune_edges_ordered(E, R, C, 0.02, num_threads=2)
    assert used in ("csr", "bucket")
    assert_kept_as_numpy(out, E, R, C, 0.02)
    for order in ("csr", "bucket"):
        forced, forced_used = graph.prune_edges_ordered(E, R, C, 0.02, num_threads=1, edge_order=order)
        assert forced_used == order
        assert all(np.array_equal(getattr(out, a), getattr(forced, a)) for a in ("indptr", "indices", "data"))
    small = random_graph(50, 4, seed=3, square=False, cols=40)
    assert graph.prune_edges_ordered(small, R[:50], C[:40])[1] == "csr"  # too few edges to time: CSR order
    with pytest.raises(ValueError, match="edge_order must be one of"):
        graph.prune_edges(small, R[:50], C[:40], edge_order="random")


@pytest.mark.parametrize("data_dtype", [np.float32, np.float64, np.int8, np.int16, np.int64, bool, np.complex128])
@pytest.mark.parametrize("index_dtype", [np.int32, np.int64])
def test_prune_output_keeps_data_type_and_values(data_dtype, index_dtype) -> None:
    """The kept edges are copied in C++ for data of 1 to 8 bytes (numpy otherwise): same values,
    same dtype, in row order, whatever the thread count; nothing kept gives an empty matrix."""
    rng = np.random.default_rng(5)
    rows = np.r_[np.sort(rng.integers(0, 40_000, 200_000)), np.full(50_000, 41_000)]  # chunks of rows, a huge row
    cols = rng.integers(0, 3000, len(rows))
    R, C = unit_rows(42_000, 8, 1, np.float32), unit_rows(3000, 8, 2, np.float32)
    clear = np.abs((R[rows].astype(np.float64) * C[cols]).sum(axis=1) - 0.3) > 1e-5  # no float32 rounding decides
    E = csr_from_edges(rows[clear], cols[clear], (42_000, 3000))
    E.data = rng.integers(-100, 100, E.nnz).astype(data_dtype)
    E.indptr, E.indices = E.indptr.astype(index_dtype), E.indices.astype(index_dtype)
    edge_rows = np.repeat(np.arange(E.shape[0]), np.diff(E.indptr))
    keep = (R[edge_rows].astype(np.float64) * C[E.indices]).sum(axis=1) > 0.3
    for threads in (1, 2, 3):
        out = graph.prune_edges(E, R, C, 0.3, num_threads=threads)
        assert out.dtype == E.dtype and out.nnz == keep.sum()
        assert np.array_equal(out.data, E.data[keep]) and np.array_equal(out.indices, E.indices[keep])
        assert np.array_equal(np.diff(out.indptr), np.bincount(edge_rows[keep], minlength=E.shape[0]))
    none_kept = graph.prune_edges(E, R, C, 2.0)
    assert none_kept.nnz == 0 and none_kept.shape == E.shape and none_kept.dtype == E.dtype


def test_compact_edges_checks_its_buffers() -> None:
    E = random_graph(20, 3, seed=0, square=False, cols=30)
    keep, new_indptr = np.ones(E.nnz, np.uint8), E.indptr.astype(np.int64)
    with pytest.raises(ValueError, match="keep must be 1-d"):
        _C.compact_edges(E.indptr, E.indices, 20, 30, keep[:-1], new_indptr, E.data, num_threads=1)
    with pytest.raises(ValueError, match="new_indptr must be 1-d"):
        _C.compact_edges(E.indptr, E.indices, 20, 30, keep, new_indptr[:-1], E.data, num_threads=1)
    for bad in (new_indptr + 1, new_indptr[::-1].copy(), new_indptr * 2):  # offset start, decreasing, past the end
        with pytest.raises(ValueError, match="new_indptr must start at 0, never decrease"):
            _C.compact_edges(E.indptr, E.indices, 20, 30, keep, bad, E.data, num_threads=1)
    with pytest.raises(ValueError, match="data must be a contiguous 1-d array"):
        _C.compact_edges(E.indptr, E.indices, 20, 30, keep, new_indptr, E.data[:-1], num_threads=1)
    with pytest.raises(ValueError, match="itemsize must be 0, 1, 2, 4 or 8"):
        _C.compact_edges(E.indptr, E.indices, 20, 30, keep, new_indptr, E.data.astype(np.complex128), num_threads=1)
    indices, data = _C.compact_edges(E.indptr, E.indices, 20, 30, keep, new_indptr, None, num_threads=2)
    assert data is None and np.array_equal(indices, E.indices)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_prune_threshold_is_strict(dtype) -> None:
    # small integers: dot products are exact, some equal to the threshold
    R = np.array([[1, 0], [1, 1]], dtype)
    C = np.array([[1, 0], [0, 1], [2, 0], [-1, 1]], dtype)
    E = sp.csr_matrix(np.ones((2, 4), np.float32))
    out = graph.prune_edges(E, R, C, threshold=1.0)  # scores: [1 0 2 -1], [1 1 2 0]
    assert out.toarray().tolist() == [[0, 0, 1, 0], [0, 0, 1, 0]]
    assert graph.prune_edges(E, R, C, threshold=0.0).toarray().tolist() == [[1, 0, 1, 0], [1, 1, 1, 0]]


@pytest.mark.parametrize("dim", list(range(1, 70)) + [127, 128, 129, 384])
def test_vector_dot_products(dim: int) -> None:
    rng = np.random.default_rng(dim)
    a, b = rng.standard_normal(dim).astype(np.float32), rng.standard_normal(dim).astype(np.float32)
    assert np.isclose(_C.dot(a, b), float(a.astype(np.float64) @ b), rtol=1e-5, atol=1e-5)
    h, k = a.astype(np.float16), b.astype(np.float16)
    assert np.isclose(_C.dot(h.view(np.uint16), k.view(np.uint16)), float(h.astype(np.float64) @ k), rtol=1e-5,
                      atol=1e-5)


def test_prune_input_conversions() -> None:
    E = random_graph(50, 4, seed=3, square=False, cols=40)
    R, C = unit_rows(50, 8, 1, np.float64), unit_rows(40, 8, 2, np.float64)
    ref = graph.prune_edges(E, R.astype(np.float32), C.astype(np.float32))
    assert np.array_equal(graph.prune_edges(E, R, C).toarray(), ref.toarray())  # float64 -> float32
    mixed = graph.prune_edges(E, R.astype(np.float16), C.astype(np.float32))  # mixed -> float32
    assert mixed.shape == E.shape
    assert np.array_equal(graph.prune_edges(E.tocoo(), R, C).toarray(), ref.toarray())


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_bad_pruning_inputs(dtype) -> None:
    E = random_graph(20, 3, seed=0, square=False, cols=30)
    R, C = unit_rows(20, 8, 1, dtype), unit_rows(30, 8, 2, dtype)
    with pytest.raises(ValueError, match="row_emb has 19 rows but E has 20 rows"):
        graph.prune_edges(E, R[:19], C)
    with pytest.raises(ValueError, match="col_emb has 31 rows but E has 30 columns"):
        graph.prune_edges(E, R, np.vstack([C, C[:1]]))
    with pytest.raises(ValueError, match="differ in dimension"):
        graph.prune_edges(E, R, C[:, :4])
    with pytest.raises(ValueError, match="row_emb must be 2-d"):
        graph.prune_edges(E, R[0], C)
    with pytest.raises(ValueError, match="col_emb must be float16, float32 or float64"):
        graph.prune_edges(E, R, C.astype(np.int32))
    with pytest.raises(ValueError, match="threshold"):
        graph.prune_edges(E, R, C, threshold=float("nan"))
    bad = R.copy()
    bad[7, 3] = np.nan
    with pytest.raises(ValueError, match="row_emb has NaN or infinite values \\(first in row 7\\)"):
        graph.prune_edges(E, bad, C)
    bad = C.copy()
    bad[29, 0] = np.inf
    with pytest.raises(ValueError, match="col_emb has NaN or infinite values \\(first in row 29\\)"):
        graph.prune_edges(E, R, bad)
    with pytest.raises(ValueError, match="E.indices holds column 30"):
        graph.prune_edges(corrupted(E, "indices", 0, 30), R, C)
    # with the check off, NaN scores keep nothing (NaN > t is false) instead of raising
    bad = R.copy()
    bad[:] = np.nan
    assert graph.prune_edges(E, bad, C, check_finite=False).nnz == 0


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_non_finite_scan_reports_the_first_bad_row(dtype) -> None:
    emb = np.ones((100_000, 8), dtype)  # several scan chunks of 2^15 rows
    assert _C.first_non_finite(emb.view(np.uint16) if dtype == np.float16 else emb, num_threads=3) == -1
    emb[90_000, 7] = -np.inf
    emb[70_001, 0] = np.nan
    emb[70_001, 3] = np.inf
    for threads in (1, 2, 7):
        bits = emb.view(np.uint16) if dtype == np.float16 else emb
        assert _C.first_non_finite(bits, num_threads=threads) == 70_001
    emb[5, 5] = np.finfo(dtype).max  # large but finite values pass
    assert _C.first_non_finite(emb[:70_000].view(np.uint16) if dtype == np.float16 else emb[:70_000],
                               num_threads=2) == -1


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_transpose_structure_matches_scipy(dtype) -> None:
    rng = np.random.default_rng(0)
    m = csr_from_edges(np.r_[rng.integers(0, 40, 300), 3, 3], np.r_[rng.integers(0, 25, 300), 7, 7], (50, 30))
    m.indptr, m.indices = m.indptr.astype(dtype), m.indices.astype(dtype)  # scipy would downcast int64
    ref = sp.csr_matrix((np.ones(m.nnz), m.indices, m.indptr), shape=m.shape).tocsc()  # keeps duplicates
    for threads in (1, 2, 3, 8, 64, 0):  # 0: every hardware thread; ranges are capped at 8
        t_indptr, t_indices = _C.transpose_structure(m.indptr, m.indices, 50, 30, num_threads=threads)
        assert t_indptr.dtype == dtype and t_indices.dtype == dtype
        assert np.array_equal(t_indptr, ref.indptr) and np.array_equal(t_indices, ref.indices)


@pytest.mark.parametrize("shape", [(0, 0), (0, 5), (5, 0), (6, 1), (3, 2), (200, 9)])
def test_transpose_structure_degenerate_shapes_any_threads(shape) -> None:
    rows, cols = shape
    rng = np.random.default_rng(1)
    n = 0 if 0 in shape else 3 * rows
    r, c = np.sort(rng.integers(0, max(rows, 1), n)), rng.integers(0, max(cols, 1), n)
    if rows == 200:  # one column holding almost every edge (a huge degree), next to empty columns
        c[: n - 5] = 4
    m = csr_from_edges(r, c, shape)
    ref = sp.csr_matrix((np.ones(m.nnz), m.indices, m.indptr), shape=shape).tocsc()
    for threads in (1, 2, 5, 8):
        t_indptr, t_indices = _C.transpose_structure(m.indptr.astype(np.int64), m.indices.astype(np.int64),
                                                     rows, cols, num_threads=threads)
        assert np.array_equal(t_indptr, ref.indptr) and np.array_equal(t_indices, ref.indices)


def column_blocks(C: np.ndarray, sizes: list[int], seed: int):
    """C's rows as (ids, embeddings) blocks of `sizes`, the ids in a random order."""
    order = np.random.default_rng(seed).permutation(len(C))
    start = 0
    for size in sizes:
        ids = order[start:start + size]
        start += size
        yield ids, C[ids]


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
@pytest.mark.parametrize("sizes", [[900], [1, 899], [300, 0, 300, 300], [100] * 9])
def test_prune_by_column_blocks_equals_prune_edges(dtype, sizes: list[int]) -> None:
    """Two graphs over the same 900 columns, their column embeddings given in blocks of shuffled ids:
    the graphs `prune_edges` gives with every column at once, bit for bit (parallel edges, empty rows
    and empty columns included)."""
    rng = np.random.default_rng(len(sizes))
    rows = np.sort(rng.integers(0, 550, 5000))  # rows 550.. are empty
    cols = rng.integers(0, 800, 5000)  # columns 800.. are empty
    Q = csr_from_edges(np.r_[rows, 0, 0], np.r_[cols, 5, 5], (600, 900))  # with a parallel edge
    Q.data = np.arange(1, Q.nnz + 1, dtype=np.float32)
    L = random_graph(70, 30, seed=2, square=False, cols=900)
    L.indptr, L.indices = L.indptr.astype(np.int64), L.indices.astype(np.int64)
    RQ, RL, C = unit_rows(600, 24, 1, dtype), unit_rows(70, 24, 2, dtype), unit_rows(900, 24, 3, dtype)
    out = graph.prune_edges_by_column_blocks([(Q, RQ), (L, RL)], column_blocks(C, sizes, 4), threshold=0.05)
    for got, (E, R) in zip(out, [(Q, RQ), (L, RL)]):
        want = graph.prune_edges(E, R, C, threshold=0.05)
        assert got.shape == want.shape and got.dtype == want.dtype
        assert all(np.array_equal(getattr(got, a), getattr(want, a)) for a in ("indptr", "indices", "data"))
    assert out[0].nnz > 0 and out[0].nnz < Q.nnz  # some kept, some dropped
    assert graph.prune_edges_by_column_blocks([], column_blocks(C, [900], 0)) == []


def test_prune_by_column_blocks_rejects_bad_blocks() -> None:
    E = random_graph(20, 3, seed=0, square=False, cols=30)
    R, C = unit_rows(20, 8, 1, np.float32), unit_rows(30, 8, 2, np.float32)

    def prune(blocks, graphs=None):
        return graph.prune_edges_by_column_blocks(graphs or [(E, R)], blocks)

    with pytest.raises(ValueError, match="left out 10 of 30 columns \\(first: 20\\)"):
        prune([(np.arange(20), C[:20])])
    with pytest.raises(ValueError, match="column block 1 repeats a column"):
        prune([(np.arange(20), C[:20]), (np.arange(19, 30), C[19:])])
    with pytest.raises(ValueError, match="column block 0 repeats a column"):
        prune([(np.r_[np.arange(30), 3], C[np.r_[np.arange(30), 3]])])
    with pytest.raises(ValueError, match="column block 0 holds column 30, outside \\[0, 30\\)"):
        prune([(np.arange(1, 31), C)])
    with pytest.raises(ValueError, match="column block 0: 30 ids but embeddings of shape \\(29, 8\\)"):
        prune([(np.arange(30), C[:29])])
    with pytest.raises(ValueError, match="ids must be a 1-d integer array"):
        prune([(np.arange(30.0), C)])
    with pytest.raises(ValueError, match="graphs\\[1\\] has 31 columns, graphs\\[0\\] has 30"):
        prune([(np.arange(30), C)], [(E, R), (random_graph(5, 2, seed=1, square=False, cols=31), R[:5])])
    with pytest.raises(ValueError, match="graphs\\[0\\]: row embeddings of shape \\(19, 8\\) for a graph of 20 rows"):
        prune([(np.arange(30), C)], [(E, R[:19])])
    bad = C.copy()
    bad[12, 1] = np.nan
    with pytest.raises(ValueError, match="column block 1: the embedding of column 12 has NaN"):
        prune([(np.arange(10), bad[:10]), (np.arange(10, 30), bad[10:])])
    bad = R.astype(np.float64)
    bad[3, 0] = np.inf
    with pytest.raises(ValueError, match="graphs\\[0\\]: the row embeddings have NaN or infinite values \\(first in row 3\\)"):
        prune([(np.arange(30), C)], [(E, bad)])
