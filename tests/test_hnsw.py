"""The HNSW kernels (ramen.hnsw over ramen._C): search against a Python reference on the same graph,
recall against exact search, graph invariants, determinism across thread counts, adversarial input."""
import heapq

import numpy as np
import pytest

from ramen import _C
from ramen.hnsw import HnswGraph


def unit(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def lowrank(rng: np.random.Generator, n: int, dim: int, rank: int = 12) -> np.ndarray:
    """Unit vectors near a low-dimensional subspace: like embeddings, where graph search reaches
    high recall (on uniform random vectors no graph index does)."""
    basis = rng.standard_normal((rank, dim))
    z = rng.standard_normal((n, rank)) / np.arange(1, rank + 1) ** 0.5
    x = z @ basis + 0.1 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def links(g: HnswGraph, v: int, level: int) -> np.ndarray:
    row = g.level0[v] if level == 0 else g.upper[g.upper_row[v] + level - 1]
    return row[1:1 + row[0]]


def reference_search(g: HnswGraph, q: np.ndarray, k: int, ef: int, alive: np.ndarray | None = None) -> list[int]:
    """The search as the paper writes it (greedy descent, then a beam of width max(ef, k) at level
    0), ties to the lower id, scored by the kernel's own dot product so both see the same numbers."""
    vec = g.vectors[: g.n].astype(np.float32)

    def dist(v: int) -> float:
        return -_C.dot(q, vec[v])

    def beam(starts: list[tuple[float, int]], width: int, level: int, alive_mask) -> list[tuple[float, int]]:
        seen = {v for _, v in starts}
        frontier = list(starts)
        heapq.heapify(frontier)
        found = sorted(s for s in starts if alive_mask is None or alive_mask[s[1]])[:width]
        while frontier:
            c = heapq.heappop(frontier)
            if len(found) >= width and found[-1] < c:
                break
            for v in links(g, c[1], level):
                v = int(v)
                if v in seen:
                    continue
                seen.add(v)
                cand = (dist(v), v)
                if len(found) < width or cand < found[-1]:
                    heapq.heappush(frontier, cand)
                    if alive_mask is None or alive_mask[v]:
                        found = sorted(found + [cand])[:width]
        return found

    node, top = g.entry
    cur = [(dist(node), node)]
    for level in range(top, 0, -1):
        cur = beam(cur, 1, level, None)[:1]
    return [v for _, v in beam(cur, max(ef, k), 0, alive)[:k]]


def exact_top(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :k]


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_recall_against_exact_search(dtype: str):
    rng = np.random.default_rng(0)
    x = lowrank(rng, 4200, 48)
    x, q = x[:4000], x[4000:]
    g = HnswGraph(48, dtype=dtype, m=8, ef_construction=64)
    g.add(x)
    truth = exact_top(x, q, 10)
    recalls = []
    for ef in (10, 64, 256):
        rows, scores = g.search(q, 10, ef)
        recalls.append(np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)]))
        np.testing.assert_allclose(scores, np.take_along_axis(q @ x.T, rows, axis=1), atol=2e-3 if dtype == "f16" else 1e-5)
        assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    assert recalls[0] <= recalls[1] <= recalls[2] and recalls[1] >= 0.95 and recalls[2] >= 0.99, recalls


def test_search_matches_the_reference_on_the_same_graph():
    rng = np.random.default_rng(1)
    x = unit(rng, 1500, 16)
    g = HnswGraph(16, dtype="f32", m=6, ef_construction=40, seed=3)
    g.add(x)
    q = unit(rng, 25, 16)
    alive = (rng.random(g.n) > 0.3).astype(np.uint8)
    for ef in (1, 7, 30):
        rows, _ = g.search(q, 5, ef, threads=1)
        rows_alive, _ = g.search(q, 5, ef, alive=alive, threads=2)
        for i in range(len(q)):
            assert rows[i].tolist() == reference_search(g, q[i], 5, ef), (ef, i)
            assert rows_alive[i].tolist() == reference_search(g, q[i], 5, ef, alive), (ef, i)


def test_graph_invariants_and_reachability():
    rng = np.random.default_rng(2)
    x = lowrank(rng, 3000, 24)
    g = HnswGraph(24, m=5, ef_construction=32)
    g.add(x[:1000])
    g.add(x[1000:])
    assert g.entry[1] == g.level[: g.n].max() and g.level[g.entry[0]] == g.entry[1]
    for v in range(g.n):
        for level in range(g.level[v] + 1):
            row = links(g, v, level)
            assert len(row) <= (g.m0 if level == 0 else g.m)
            assert len(set(row.tolist())) == len(row) and v not in row
            assert ((row >= 0) & (row < g.n)).all() and (g.level[row] >= level).all()
    reached, todo = {g.entry[0]}, [g.entry[0]]
    while todo:
        for w in links(g, todo.pop(), 0).tolist():
            if w not in reached:
                reached.add(w)
                todo.append(w)
    assert len(reached) == g.n  # every node can be found from the entry


def test_the_graph_does_not_depend_on_the_thread_count():
    rng = np.random.default_rng(3)
    x = unit(rng, 2500, 32)
    graphs = []
    for threads in (1, 2, 3):
        g = HnswGraph(32, m=6, ef_construction=30, seed=7)
        g.add(x[:700], threads=threads)
        g.add(x[700:], threads=threads)
        graphs.append(g.arrays())
    for other in graphs[1:]:
        for name, array in graphs[0].items():
            np.testing.assert_array_equal(array, other[name], err_msg=name)
    g = HnswGraph(32, m=6, ef_construction=30, seed=7)
    q = unit(rng, 50, 32)
    g.add(x, threads=2)
    np.testing.assert_array_equal(g.search(q, 10, 40, threads=1)[0], g.search(q, 10, 40, threads=2)[0])


def test_neighbours_that_arrive_together_still_link_to_each_other():
    """Tight clusters added contiguously (as labels of one product line often are): the insertion
    order is shuffled, so nodes of one cluster rarely share a batch and find each other."""
    rng = np.random.default_rng(6)
    centres = lowrank(rng, 400, 32)
    x = unit_rows(np.repeat(centres, 12, axis=0) + 0.05 * rng.standard_normal((4800, 32)))
    q = unit_rows(centres + 0.05 * rng.standard_normal(centres.shape))
    g = HnswGraph(32, m=8, ef_construction=64)
    g.add(x)
    rows, _ = g.search(q, 10, 32)
    truth = exact_top(x, q, 10)
    assert np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth)]) >= 0.95


def test_small_empty_duplicate_and_dead_graphs():
    rng = np.random.default_rng(4)
    g = HnswGraph(8)
    q = unit(rng, 3, 8)
    rows, scores = g.search(q, 4, 10)  # empty
    assert (rows == -1).all() and np.isneginf(scores).all()
    one = unit(rng, 1, 8)
    g.add(one)
    rows, scores = g.search(q, 4, 10)
    assert (rows[:, 0] == 0).all() and (rows[:, 1:] == -1).all() and np.isneginf(scores[:, 1:]).all()
    g = HnswGraph(8, m=4)
    g.add(np.repeat(one, 300, axis=0))  # every vector the same: every distance ties
    rows, scores = g.search(one, 10, 20)
    assert len(set(rows[0].tolist())) == 10 and np.allclose(scores, 1.0, atol=1e-3)
    dead = np.zeros(g.n, np.uint8)
    rows, scores = g.search(one, 10, 20, alive=dead)
    assert (rows == -1).all() and np.isneginf(scores).all()
    alive = dead.copy()
    alive[[5, 250]] = 1
    rows, _ = g.search(one, 3, 300, alive=alive)
    assert sorted(rows[0, :2].tolist()) == [5, 250] and rows[0, 2] == -1


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="dtype"):
        HnswGraph(8, dtype="i8")
    with pytest.raises(ValueError, match="m "):
        HnswGraph(8, m=1)
    with pytest.raises(ValueError, match="ef_construction"):
        HnswGraph(8, ef_construction=0)
    g = HnswGraph(8)
    g.add(unit(np.random.default_rng(5), 50, 8))
    with pytest.raises(ValueError, match="queries must be"):
        g.search(np.zeros((2, 7), np.float32), 3, 10)
    with pytest.raises(ValueError, match="k and ef"):
        g.search(np.zeros((2, 8), np.float32), 0, 10)
    with pytest.raises(ValueError, match="alive"):
        g.search(np.zeros((2, 8), np.float32), 3, 10, alive=np.ones(3, np.uint8))
    a = g.arrays()
    with pytest.raises(ValueError, match="entry"):
        _C.hnsw_search(a["vectors"].view(np.uint16), a["level0"], a["upper"], a["level"], a["upper_row"], m=g.m,
                       m0=g.m0, entry_node=50, entry_level=0, nodes=50, alive=None,
                       queries=np.zeros((1, 8), np.float32), k=1, ef=1, num_threads=1)
    a["level"] = a["level"].copy()

    def insert(level0=None, level=None, order=(48, 49)):
        entry = (g.entry[0], g.entry[1]) if g.entry[0] < 48 else (0, int(a["level"][0]))
        _C.hnsw_insert(a["vectors"].view(np.uint16), a["level0"].copy() if level0 is None else level0,
                       a["upper"].copy(), a["level"] if level is None else level, a["upper_row"], m=g.m, m0=g.m0,
                       entry_node=entry[0], entry_level=entry[1], begin=48, end=50,
                       order=np.array(order, np.int64), ef_construction=8, num_threads=1)

    bad_level = a["level"].copy()
    bad_level[49] = 70
    with pytest.raises(ValueError, match="level"):
        insert(level=bad_level)
    frozen = a["level0"].copy()
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        insert(level0=frozen)
    for order in ((48, 48), (48, 50), (49,)):
        with pytest.raises(ValueError, match="order"):
            insert(order=order)


@pytest.mark.parametrize("dtype", ["f32", "f16"])
def test_a_prepared_add_changes_nothing_a_search_reads_until_committed(dtype: str):
    """prepare_add writes only rows past the visible graph (the old nodes' changes come back), so a
    search during it sees the graph before the add; commit gives the graph a plain add builds."""
    rng = np.random.default_rng(11)
    x = lowrank(rng, 1500, 24)
    q = x[:40] + 0.05 * unit(rng, 40, 24)
    g, twin = HnswGraph(24, dtype=dtype, m=5, ef_construction=32), HnswGraph(24, dtype=dtype, m=5, ef_construction=32)
    for a, b in [(0, 700), (700, 900), (900, 1500)]:
        before = {k: np.array(v) for k, v in g.arrays().items()}
        hits = g.search(q, 10, 32)
        pending = g.prepare_add(x[a:b], threads=2)
        assert pending is not None and len(g) == a
        after_prepare = g.arrays()
        for name, arr in before.items():  # every row a search of the old graph reads is untouched
            np.testing.assert_array_equal(after_prepare[name], arr, err_msg=name)
        for got, want in zip(g.search(q, 10, 32), hits):
            np.testing.assert_array_equal(got, want)
        if a:
            assert len(pending.level0_nodes) > 0 and (pending.level0_nodes < a).all()  # reverse links held back
        g.commit(pending)
        twin.add(x[a:b], threads=1)
        for name, arr in twin.arrays().items():
            np.testing.assert_array_equal(g.arrays()[name], arr, err_msg=name)
    assert g.prepare_add(x[:0]) is None
