"""What one NGAME cluster refresh costs on the CPU: `ramen.clustering.cluster_batches` (balanced
recursive 2-means, as `--cluster-batching` runs it on rank 0 at every refresh) on seeded random unit
vectors, against a floor: the matrix-vector passes over every vector that its 8 iterations at each
of the tree's levels cannot avoid (timed on the same vectors in the same run). The encoding of the
queries before it is the `encode` suite's cost.

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


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    from ramen.clustering import cluster_batches

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
            floor = floor_seconds(x, cs)
            row = {"queries": n, "dim": args.dim, "cluster_size": cs, "batches": len(batches),
                   "seconds": round(seconds, 2), "floor_seconds": round(floor, 2),
                   "ratio_to_floor": round(seconds / floor, 2)}
            rows.append(row)
            print(f"  {n:>9,} queries, clusters of {cs:>3}: {seconds:6.1f} s, floor {floor:5.1f} s, "
                  f"ratio {seconds / floor:.2f}", flush=True)
    if args.json:
        out = {"command": "python benchmarks/cluster_cost.py " + " ".join(sys.argv[1:]), "machine": machine,
               "rows": rows}
        tmp = args.json + ".tmp"
        with open(tmp, "w") as f:
            json.dump(out, f, indent=1)
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
