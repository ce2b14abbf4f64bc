"""What one NGAME cluster refresh costs on the CPU: `ramen.clustering.cluster_batches` (the C++
balanced recursive 2-means, as `--cluster-batching` runs it on rank 0 at every refresh) on seeded
random unit vectors, on every core and on one, against a peer and a floor timed in the same run:
the numpy implementation it replaced (commit 2bd6325: the same splits, 8 rounds each, argsort
and gathers), and the matrix-vector passes over every vector that 8 rounds at each level of the
tree make (the kernel stops a split early once its assignment repeats, so it can go below it).
The encoding of the queries before it is the `encode` suite's cost.

    python benchmarks/cluster_cost.py --json benchmarks/results/cluster-cost.json
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

import numpy as np

ITERS = 8  # balanced_clusters' default


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def numpy_clusters(emb: np.ndarray, cluster_size: int, seed: int = 0, iters: int = ITERS) -> list[np.ndarray]:
    """The numpy implementation of ramen.clustering.balanced_clusters until commit 2bd6325 (the peer)."""
    rng = np.random.default_rng(seed)
    pending, done = [np.arange(len(emb))], []
    while pending:
        index = pending.pop()
        if len(index) <= cluster_size:
            done.append(index)
            continue
        first = cluster_size * (-(-len(index) // cluster_size) // 2)
        x = emb[index]
        a, b = rng.choice(len(index), size=2, replace=False)
        ca, cb = x[a].copy(), x[b].copy()
        order = None
        for _ in range(iters):
            order = np.argsort(-(x @ (ca - cb)), kind="stable")
            ca, cb = x[order[:first]].sum(0), x[order[first:]].sum(0)
            ca /= max(np.linalg.norm(ca), 1e-12)
            cb /= max(np.linalg.norm(cb), 1e-12)
        pending.extend([index[order[:first]], index[order[first:]]])
    return done


def floor_seconds(x: np.ndarray, cluster_size: int) -> float:
    """ITERS passes of x @ w over all rows at each level of a tree of clusters of `cluster_size`."""
    w = x[0] - x[1]
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        x @ w
        times.append(time.perf_counter() - t0)
    levels = math.ceil(math.log2(max(2, len(x) / cluster_size)))
    return ITERS * levels * float(np.median(times))


def main() -> None:
    from ramen.bench.common import cpu_model
    from ramen.clustering import balanced_clusters, cluster_batches

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[69_300, 693_000], help="queries clustered")
    ap.add_argument("--dim", type=int, default=384, help="embedding width (all-MiniLM-L6-v2: 384)")
    ap.add_argument("--cluster-sizes", type=int, nargs="+", default=[8, 128],
                    help="NGAME's first size and the last after four doublings")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    machine = {"cpu": cpu_model(), "cores": os.cpu_count(), "numpy": np.__version__, "python": platform.python_version()}
    print(f"machine: {machine}; dim {args.dim}, batch {args.batch_size}, iterations {ITERS}")
    rows = []
    for n in args.sizes:
        x = unit_vectors(n, args.dim, seed=0)
        ids = np.arange(n)
        for cs in args.cluster_sizes:
            t0 = time.perf_counter()
            batches = cluster_batches(x, ids, cs, args.batch_size, seed=0)
            seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            balanced_clusters(x, cs, seed=0, num_threads=1)
            one_core = time.perf_counter() - t0
            t0 = time.perf_counter()
            numpy_clusters(x, cs)
            peer = time.perf_counter() - t0
            floor = floor_seconds(x, cs)
            row = {"queries": n, "dim": args.dim, "cluster_size": cs, "batches": len(batches),
                   "seconds": round(seconds, 2), "seconds_one_thread": round(one_core, 2),
                   "numpy_seconds": round(peer, 2), "ratio_to_numpy": round(seconds / peer, 3),
                   "floor_seconds": round(floor, 2), "ratio_to_floor": round(seconds / floor, 2)}
            rows.append(row)
            print(f"  {n:>9,} queries, clusters of {cs:>3}: {seconds:6.1f} s ({one_core:.1f} s on one thread), "
                  f"numpy {peer:5.1f} s (ratio {seconds / peer:.3f}), floor {floor:5.1f} s (ratio {seconds / floor:.2f})",
                  flush=True)
    if args.json:
        out = {"command": "python benchmarks/cluster_cost.py " + " ".join(sys.argv[1:]), "machine": machine,
               "rows": rows}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
