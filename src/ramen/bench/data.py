"""Suite `data`: reading and writing XC sparse text files, dataset archives, and evaluation.

The matrix mimics a G-LF graph file at the RAMEN paper's scale (693K rows, 2.46M columns, ~39
entries a row: 27M entries) with float32 weights in (0, 1), the costly case for a float parser.
Peer: `benchmarks/peers/xc_text_parse.py`, the line-by-line Python reader/writer XC code uses.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ramen.bench.common import Row, import_peer, peak_rss_during, timeit

SUITE = "data"


def random_graph(rows: int, cols: int, per_row: float, seed: int = 0) -> sp.csr_matrix:
    """(rows, cols) CSR, Poisson(per_row) distinct columns a row, float32 weights in (0, 1)."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(per_row, rows)
    row_ids = np.repeat(np.arange(rows), counts)
    m = sp.csr_matrix((np.ones(len(row_ids), np.float32), (row_ids, rng.integers(0, cols, len(row_ids)))),
                      shape=(rows, cols))
    m.sum_duplicates()
    m.data = rng.random(m.nnz, dtype=np.float32) * 0.999 + 0.001
    return m


def _text_rows(m: sp.csr_matrix, path: Path, quick: bool, peer) -> list[Row]:
    from ramen._build import load_C
    _C = load_C()
    from ramen.datasets import read_sparse, write_sparse

    nnz = m.nnz
    settings = {"rows": m.shape[0], "cols": m.shape[1], "nnz": nnz, "threads": _C.hardware_threads()}
    repeat = 3 if quick else 2
    peer_path = path.with_name("peer_" + path.name)

    t_write = timeit(lambda: write_sparse(path, m), repeat=repeat)
    t_peer_write = timeit(lambda: peer.write_sparse_file(m, str(peer_path)), repeat=1, warmup=0)
    settings["file_MB"] = round(path.stat().st_size / 2**20, 1)
    back, peak = peak_rss_during(lambda: read_sparse(path))
    assert (back != m).nnz == 0, "read_sparse does not give back the written matrix"
    ref = peer.read_sparse_file(str(path))
    assert (ref != back).nnz == 0, "the peer reads a different matrix"
    del back, ref
    t_read = timeit(lambda: read_sparse(path), repeat=repeat)
    t_read1 = timeit(lambda: read_sparse(path, num_threads=1), repeat=repeat)
    t_peer_read = timeit(lambda: peer.read_sparse_file(str(path)), repeat=1, warmup=0)
    peer_path.unlink(missing_ok=True)

    def row(case: str, ours: float, peer_value: float, extra: dict | None = None) -> Row:
        return Row(SUITE, case, "throughput", nnz / ours / 1e6, nnz / peer_value / 1e6, "python line split",
                   "M nnz/s", "higher", {**settings, **(extra or {})})

    return [row("read_sparse (all threads)", t_read, t_peer_read, {"peak_MB": round(peak / 2**20)}),
            row("read_sparse (1 thread)", t_read1, t_peer_read, {"threads": 1}),
            row("write_sparse", t_write, t_peer_write)]


def _dataset_rows(m: sp.csr_matrix, tmp: Path) -> list[Row]:
    from ramen.datasets import AnchorSet, Dataset, load_xc, save_xc

    n = m.shape[0]
    labels = min(n, 50_000)
    ds = Dataset([f"query {i}" for i in range(n)], ["t"], [f"label {i}" for i in range(labels)],
                 m[:, :labels], sp.csr_matrix((1, labels), dtype=np.float32),
                 anchor_sets={"graph": AnchorSet([f"a{i}" for i in range(m.shape[1])], m,
                                                 sp.csr_matrix((labels, m.shape[1]), dtype=np.float32))})
    save_xc(ds, tmp / "ds", progress=False)
    save_xc(ds, tmp / "ds.npz")
    t_text = timeit(lambda: load_xc(tmp / "ds"), repeat=2)
    t_npz = timeit(lambda: load_xc(tmp / "ds.npz"), repeat=2)
    return [Row(SUITE, "load_xc .npz vs text dir", "seconds", t_npz, t_text, "ramen text dir", "s", "lower",
                {"nnz": ds.train_Y.nnz + m.nnz, "texts": n + labels + m.shape[1]})]


def _evaluate_rows(quick: bool) -> list[Row]:
    from ramen.metrics import evaluate, inv_propensity

    rng = np.random.default_rng(1)
    Q, L, m = (20_000, 312_330, 100) if quick else (177_515, 312_330, 100)
    truth = random_graph(Q, L, 2.11, seed=2)
    w = inv_propensity(random_graph(50_000, L, 2.11, seed=3), 0.55, 1.5)
    ids = (rng.integers(0, L, (Q, 1)) + np.arange(m) * 997) % L
    scores = sp.csr_matrix((rng.random(Q * m, dtype=np.float32), ids.ravel(), np.arange(0, Q * m + 1, m)), shape=(Q, L))
    scores.sort_indices()
    t_ids = timeit(lambda: evaluate(ids[:, :5], truth, inv_propensity=w, k=5), repeat=3)
    t_csr = timeit(lambda: evaluate(scores, truth, inv_propensity=w, k=5), repeat=3)
    settings = {"queries": Q, "labels": L, "k": 5}
    return [Row(SUITE, "evaluate (Q x 5 ids)", "seconds", t_ids, None, "", "s", "lower", settings),
            Row(SUITE, f"evaluate (CSR, {m} scores a row)", "seconds", t_csr, None, "", "s", "lower", settings)]


def run(quick: bool) -> list[Row]:
    peer = import_peer("xc_text_parse")
    rows, cols, per_row = (25_000, 2_458_399, 38.9) if quick else (693_082, 2_458_399, 38.9)
    m = random_graph(rows, cols, per_row)
    with tempfile.TemporaryDirectory(prefix="ramen-bench-data-") as tmp:
        tmp_path = Path(tmp)
        out = _text_rows(m, tmp_path / "graph_trn_X_Y.txt", quick, peer)
        out += _dataset_rows(m if quick else m[:200_000], tmp_path)
    return out + _evaluate_rows(quick)
