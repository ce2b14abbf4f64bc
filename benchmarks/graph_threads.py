"""Thread scaling of the graph kernels at the hyperlink scale (27M edges), 1 thread against all:
read bandwidth, pruning (GB/s of the bytes the graph suite counts), the transpose that the
bipartite walks build, and both walks.

    PYTHONPATH=src python benchmarks/graph_threads.py [--pause PATTERN] [--repeat 2]

On a shared machine, `--pause PATTERN` stops the processes whose command line matches PATTERN
(pgrep -f) for the timed part only, and resumes them afterwards, even on error: the numbers are
then an idle machine's. The graph is generated once and cached in $TMPDIR (as benchmarks/prune_ab.py).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator

import numpy as np

from ramen import _C, graph
from ramen.bench.graph import FULL, cached_power_law, item_anchor_adjacency, random_embeddings, read_bandwidth


@contextlib.contextmanager
def paused(pattern: str | None) -> Iterator[list[int]]:
    """SIGSTOP the processes matching `pattern` (none when None) for the duration; SIGCONT after."""
    found = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True).stdout.split() if pattern else []
    pids = [int(p) for p in found if int(p) not in (os.getpid(), os.getppid())]  # not us or our launcher
    for p in pids:
        os.kill(p, signal.SIGSTOP)
    try:
        time.sleep(2 if pids else 0)
        yield pids
    finally:
        for p in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)


def wall(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pause", help="pgrep -f pattern of processes to stop while timing")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    E = cached_power_law(FULL)
    A = item_anchor_adjacency(E)
    rng = np.random.default_rng(2)
    R, C = random_embeddings(E.shape[0], 384, rng), random_embeddings(E.shape[1], 384, rng)
    moved = E.nnz * 384 * 2 + E.shape[0] * 384 * 2 + E.nnz * 5  # as the graph suite counts
    starts = np.random.default_rng(0).choice(A.shape[0], 100_000, replace=False)
    col_starts = np.random.default_rng(0).choice(E.shape[1], 50_000, replace=False)
    ip, ix = E.indptr.astype(np.int32), E.indices.astype(np.int32)
    threads = sorted({1, _C.hardware_threads()})
    graph.prune_edges(E, R, C, 0.0, num_threads=threads[-1], check_finite=False)  # pages in
    print(f"{E.shape[0]:,} items x {E.shape[1]:,} anchors, {E.nnz:,} edges; {_C.hardware_threads()} hardware threads")
    with paused(args.pause) as pids:
        print(f"paused {len(pids)} processes; load average {os.getloadavg()[0]:.2f}")
        for _ in range(args.repeat):
            print("read bandwidth: " + ", ".join(f"{t} thread(s) {read_bandwidth(t, 1 << 30):.2f} GB/s"
                                                 for t in threads))
            for t in threads:
                p = wall(lambda: graph.prune_edges(E, R, C, 0.0, num_threads=t, check_finite=False))
                tr = wall(lambda: _C.transpose_structure(ip, ix, E.shape[0], E.shape[1], num_threads=t))
                u = wall(lambda: graph.random_walk_with_restart(A, starts, walk_length=400, restart_prob=0.8,
                                                                num_threads=t, seed=0))
                b = wall(lambda: graph.bipartite_walk(E, col_starts, walk_length=400, restart_prob=0.8,
                                                      num_threads=t, seed=0))
                print(f"{t} thread(s): prune {p:.2f} s = {moved / p / 1e9:.2f} GB/s; transpose {tr:.3f} s; "
                      f"unipartite walk {len(starts) * 400 / u / 1e6:.1f} M hops/s; "
                      f"bipartite walk (incl. transpose) {len(col_starts) * 400 / b / 1e6:.1f} M hops/s", flush=True)


if __name__ == "__main__":
    main()
