"""Paired A/B timings (this thread's CPU time, alternating blocks) of the two things issue 27 added
to a search, less disturbed by a busy machine than separate runs:

  kernel BASE_SO  the HNSW search kernel of this tree against another build's _C (e.g. the tree
                  before the change, built in /tmp/ramen-base), on the same graph, 200-query calls;
  lock            LabelIndex.search one query at a time with its readers-writer lock, and with the
                  lock swapped for a no-op (the no-op's two method calls remain: a slight understatement).

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/index_concurrency_ab.py kernel /tmp/ramen-base/src/ramen/_C.cpython-311-x86_64-linux-gnu.so --index /tmp/bench.idx
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/index_concurrency_ab.py lock --index /tmp/bench.idx
"""
from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

from ramen import _C
from ramen.index import LabelIndex


class _NoLock:
    def acquire_read(self) -> None:
        pass

    def release_read(self) -> None:
        pass


def paired(arms: dict, blocks: list, reps: int) -> dict:
    """us of CPU per query of each arm, alternating the order every block; and the median ratio B/A."""
    times = {name: [] for name in arms}
    for rep in range(reps):
        block = blocks[rep % len(blocks)]
        for name in (list(arms) if rep % 2 == 0 else list(arms)[::-1]):
            t = time.thread_time()
            arms[name](block)
            times[name].append((time.thread_time() - t) / len(block) * 1e6)
    a, b = (np.array(v) for v in times.values())
    r = b / a
    return {**{f"{k}_cpu_us": round(float(np.median(v)), 2) for k, v in times.items()},
            "ratio_median": round(float(np.median(r)), 3),
            "ratio_iqr": [round(float(np.percentile(r, 25)), 3), round(float(np.percentile(r, 75)), 3)]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["kernel", "lock"])
    parser.add_argument("base_so", nargs="?")
    parser.add_argument("--index", required=True, help="a saved ramen-engine index")
    parser.add_argument("--reps", type=int, default=300)
    args = parser.parse_args()
    index = LabelIndex.load(args.index)
    q = np.random.default_rng(1).standard_normal((2000, index.dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    if args.what == "kernel":
        spec = importlib.util.spec_from_file_location("base._C", args.base_so)
        base = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(base)
        g = index._graph

        def kernel(module):
            return lambda block: module.hnsw_search(
                g._vector_bits(), g.level0, g.upper, g.level, g.upper_row, m=g.m, m0=g.m0, entry_node=g.entry[0],
                entry_level=g.entry[1], nodes=g.n, alive=None, queries=block, k=10, ef=index.expansion_search,
                num_threads=1)

        arms = {"base": kernel(base), "this": kernel(_C)}
        for x, y in zip(arms["base"](q), arms["this"](q)):
            assert np.array_equal(x, y), "the two kernels disagree"
        out = paired(arms, [q[i:i + 200] for i in range(0, len(q), 200)], args.reps)
    else:
        lock = index._lock

        def search(with_lock: bool):
            def run(block):
                index._lock = lock if with_lock else _NoLock()
                for row in block:
                    index.search(row, 10, threads=1)
            return run

        out = paired({"no_lock": search(False), "lock": search(True)}, [q[i:i + 100] for i in range(0, len(q), 100)],
                     args.reps)
    print(out)


if __name__ == "__main__":
    main()
