"""Statistics, generation time (median of 3; once for "paper") and a bag-of-words oracle for each
preset of ramen.synthetic.

Usage: python benchmarks/synthetic_presets.py [--sizes tiny small medium paper] [--seed 0]
The oracle ranks labels by the cosine of TF-IDF vectors (IDF over label, train and test texts)
of each test query and label text; on "paper" it scores the first 5,000 test queries only.
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import scipy.sparse as sp

from ramen.datasets.synthetic import ANCHOR_SETS, SyntheticConfig, generate

ORACLE_QUERIES = 5000


def tfidf_rows(docs: list[str]) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows of whitespace-separated texts."""
    lengths = np.array([d.count(" ") + 1 for d in docs])
    vocab, ids = np.unique(np.array(" ".join(docs).split()), return_inverse=True)
    rows = np.repeat(np.arange(len(docs)), lengths)
    X = sp.csr_matrix((np.ones(len(ids), dtype=np.float32), (rows, ids)),
                      shape=(len(docs), len(vocab)))
    X.sum_duplicates()
    idf = np.log(len(docs) / np.bincount(X.indices, minlength=len(vocab))).astype(np.float32)
    X.data *= idf[X.indices]
    norm = np.sqrt(np.bincount(np.repeat(np.arange(len(docs)), np.diff(X.indptr)),
                               weights=X.data.astype(np.float64) ** 2, minlength=len(docs)))
    X.data /= np.repeat(np.maximum(norm, 1e-12), np.diff(X.indptr)).astype(np.float32)
    return X


def oracle(ds) -> tuple[float, float]:
    X = tfidf_rows(ds.label_texts + ds.train_texts + ds.test_texts)
    n_l, n_tr = len(ds.label_texts), len(ds.train_texts)
    n_q = min(len(ds.test_texts), ORACLE_QUERIES)
    labels_T = X[:n_l].T.tocsr()
    top = np.empty((n_q, 5), dtype=np.int64)
    chunk = max(1, 20_000_000 // n_l)
    for a in range(0, n_q, chunk):  # dense score blocks of about 20M entries
        b = min(a + chunk, n_q)
        scores = (X[n_l + n_tr + a: n_l + n_tr + b] @ labels_T).toarray()
        part = np.argpartition(-scores, 5, axis=1)[:, :5]
        order = np.lexsort((part, -np.take_along_axis(scores, part, axis=1)), axis=1)
        top[a:b] = np.take_along_axis(part, order, axis=1)
    Y = ds.test_Y[:n_q]
    hits = np.asarray(Y[np.repeat(np.arange(n_q), 5), top.ravel()]).reshape(n_q, 5)
    return float(hits[:, 0].mean()), float(hits.sum() / (5 * n_q))


def describe(size: str, seed: int) -> dict:
    config = SyntheticConfig.preset(size)
    times = []
    for _ in range(1 if size == "paper" else 3):  # median of 3 (one run at paper scale)
        t0 = time.perf_counter()
        ds, truth = generate(config, seed=seed)
        times.append(time.perf_counter() - t0)
    seconds = float(np.median(times))
    Y, full = ds.train_Y, truth.train_Y_full
    count = np.bincount(Y.indices, minlength=Y.shape[1])
    kept_rank = truth.label_rank[Y.indices]
    full_rank = truth.label_rank[full.indices]
    L = Y.shape[1]

    def miss(lo: float, hi: float) -> float:
        k = ((kept_rank > lo * L) & (kept_rank <= hi * L)).sum()
        f = ((full_rank > lo * L) & (full_rank <= hi * L)).sum()
        return 1 - k / f

    row = {"size": size, "seconds": seconds, "train": Y.shape[0], "test": ds.test_Y.shape[0],
           "labels": L, "labels/query": Y.nnz / Y.shape[0], "queries/label": Y.nnz / L,
           "labels <= 2 train queries": (count <= 2).mean(),
           "labels 0 train queries": (count == 0).mean(),
           "top label's train queries": int(count.max()),
           "missing (all)": 1 - Y.nnz / full.nnz, "missing (head 10%)": miss(0, 0.1),
           "missing (tail 50%)": miss(0.5, 1.0),
           "test labels/query": ds.test_Y.nnz / ds.test_Y.shape[0]}
    edges = 0
    for s in ANCHOR_SETS:
        a = ds.anchor_sets[s]
        edges += a.train_X_A.nnz + a.label_A.nnz + a.test_X_A.nnz
        row |= {f"{s} anchors": len(a.texts), f"{s} per query": a.train_X_A.nnz / Y.shape[0],
                f"{s} per label": a.label_A.nnz / L,
                f"{s} random edges": truth.random_edges[s]["train"].mean()}
    row["graph edges (all sets)"] = edges
    row["chance P@1"] = ds.test_Y.nnz / np.prod(ds.test_Y.shape)
    t0 = time.perf_counter()
    row["oracle P@1"], row["oracle P@5"] = oracle(ds)
    row["oracle seconds"] = time.perf_counter() - t0
    row["peak RSS GiB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "small", "medium", "paper"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, "
          f"load {os.getloadavg()}, numpy {np.__version__}")
    rows = [describe(size, args.seed) for size in args.sizes]
    print("| statistic | " + " | ".join(r["size"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for key in rows[0]:
        if key == "size":
            continue
        cells = [f"{r[key]:,}" if isinstance(r[key], (int, np.integer)) else f"{r[key]:.3g}"
                 for r in rows]
        print(f"| {key} | " + " | ".join(cells) + " |")
    print(f"load after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
