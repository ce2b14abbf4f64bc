"""Search throughput of a LabelIndex with and without a concurrent writer (issue 27's reader-writer lock).

Prints one JSON line per measurement: single-query searches on one thread (the latency path, where
a lock's fixed cost shows most), one batch call on one thread, and `--readers` threads each searching
single queries for `--seconds` while zero or one writer thread adds and removes labels: in the index
they search (what the lock costs them, plus the writer's use of the cores) or in a separate copy
(the writer's use of the cores alone, the floor on a machine with fewer cores than threads).
Runs against whatever `ramen` is on PYTHONPATH, so the same command times two trees:

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/index_concurrency.py --index /tmp/bench.idx [--no-writer-only]
"""
from __future__ import annotations

import argparse
import copy
import json
import threading
import time
from pathlib import Path

import numpy as np

from ramen._rwlock import RWLock
from ramen.index import LabelIndex


class TimedRWLock(RWLock):
    """The index's lock, also counting the seconds a writer holds it alone (searches wait then)."""

    __slots__ = ("held", "_since")

    def __init__(self) -> None:
        super().__init__()
        self.held, self._since = 0.0, 0.0

    def acquire_write(self) -> None:
        super().acquire_write()
        self._since = time.perf_counter()

    def release_write(self) -> None:
        self.held += time.perf_counter() - self._since
        super().release_write()


def low_rank(n: int, d: int, seed: int, rank: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d))
    z = rng.standard_normal((n, rank)) / np.arange(1, rank + 1) ** 0.5
    x = z @ basis + 0.1 * rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def single_queries(index: LabelIndex, q: np.ndarray, k: int, block: int = 250) -> float:
    """Queries/s of one-query calls on this thread: the best block of `block` queries (other jobs on
    the machine only ever slow a block down)."""
    best = 0.0
    for start in range(0, len(q), block):
        t = time.perf_counter()
        for row in q[start:start + block]:
            index.search(row, k, threads=1)
        best = max(best, min(block, len(q) - start) / (time.perf_counter() - t))
    return best


def single_query_cpu_us(index: LabelIndex, q: np.ndarray, k: int, block: int = 250) -> float:
    """This thread's CPU time per one-query call, in us, the median of blocks of `block` queries: much
    less disturbed by other jobs on the machine than wall-clock QPS."""
    per_block = []
    for start in range(0, len(q), block):
        t = time.thread_time()
        for row in q[start:start + block]:
            index.search(row, k, threads=1)
        per_block.append((time.thread_time() - t) / len(q[start:start + block]) * 1e6)
    return float(np.median(per_block))


def readers_qps(index: LabelIndex, q: np.ndarray, k: int, readers: int, seconds: float,
                writer: LabelIndex | None, pool: np.ndarray, first_id: int,
                pause: float = 0.05) -> tuple[float, int, float, float]:
    """(total queries/s of `readers` threads searching `index`, labels the writer added to `writer`,
    fraction of the time inside its add/remove calls, fraction holding the lock alone: the time
    searches of the same index wait for it) over `seconds`."""
    stop = threading.Event()
    counts = [0] * readers
    added = [0]
    busy = [0.0]

    def read(slot: int) -> None:
        i = slot
        while not stop.is_set():
            index.search(q[i % len(q)], k, threads=1)
            counts[slot] += 1
            i += readers

    def write() -> None:  # adds 100 labels, removes the 100 added before them, pauses `pause` s
        batch, step, live = 100, 0, []
        while not stop.is_set():
            rows = (np.arange(batch) + step * batch) % len(pool)
            ids = first_id + step * batch + np.arange(batch)
            t0 = time.perf_counter()
            writer.add(ids, pool[rows], threads=1)
            live.append(ids)
            if len(live) > 1:
                writer.remove(live.pop(0))
            busy[0] += time.perf_counter() - t0
            added[0] += batch
            step += 1
            stop.wait(pause)

    threads = [threading.Thread(target=read, args=(i,)) for i in range(readers)]
    if writer is not None:
        writer._lock = TimedRWLock()
        threads.append(threading.Thread(target=write))
    t = time.perf_counter()
    for th in threads:
        th.start()
    time.sleep(seconds)
    stop.set()
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    held = writer._lock.held / wall if writer is not None else 0.0
    return sum(counts) / wall, added[0], busy[0] / wall, held


def load_copy(args: argparse.Namespace, index: LabelIndex) -> LabelIndex:
    """A fresh copy of the index (the writer changes what it writes to)."""
    return LabelIndex.load(args.index) if args.index else copy.deepcopy(index)


def digits(name: str) -> int:
    return 5 if name.endswith("_fraction") or name == "single_1thread_cpu_us" else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=5, help="repetitions; the median is reported")
    parser.add_argument("--engine", default="ramen")
    parser.add_argument("--writer-pause", type=float, default=0.05, help="seconds between the writer's batches of 100")
    parser.add_argument("--index", help="a saved index to load (built and saved there first if missing), so that "
                                        "runs of two trees search the same graph")
    parser.add_argument("--no-writer-only", action="store_true",
                        help="skip the runs with a writer (a tree without the lock crashes there)")
    args = parser.parse_args()

    x = low_rank(args.labels, args.dim, 0)
    q = low_rank(args.queries, args.dim, 1)
    pool = low_rank(5000, args.dim, 2)
    t = time.perf_counter()
    if args.index and Path(args.index).exists():
        index = LabelIndex.load(args.index)
    else:
        index = LabelIndex(args.dim, engine=args.engine)
        index.add(np.arange(args.labels), x)
        if args.index:
            index.save(args.index)
    build_s = time.perf_counter() - t
    index.search(q, args.k)  # warm
    runs: dict[str, list[float]] = {"single_1thread_qps": [], "batch_1thread_qps": [], "readers_no_writer_qps": []}
    if not args.no_writer_only:
        runs["readers_one_writer_qps"] = []
    added = []
    for _ in range(args.rounds):  # interleaved, so that the machine's load hits every measurement alike
        runs["single_1thread_qps"].append(single_queries(index, q, args.k))
        runs.setdefault("single_1thread_cpu_us", []).append(single_query_cpu_us(index, q, args.k))
        t = time.perf_counter()
        index.search(q, args.k, threads=1)
        runs["batch_1thread_qps"].append(len(q) / (time.perf_counter() - t))
        if hasattr(index, "_lock"):  # this tree's lock: its own cost, one reader, no contention
            lock, t = index._lock, time.perf_counter()
            for _ in range(100000):
                lock.acquire_read()
                lock.release_read()
            runs.setdefault("lock_read_pair_us", []).append((time.perf_counter() - t) * 10)
        runs["readers_no_writer_qps"].append(readers_qps(index, q, args.k, args.readers, args.seconds, None,
                                                         pool, 10**9)[0])
        if not args.no_writer_only:
            for name, searched in (("readers_separate_writer_qps", index), ("readers_one_writer_qps", None)):
                written = load_copy(args, index)
                qps, n, busy, held = readers_qps(written if searched is None else searched, q, args.k, args.readers,
                                                 args.seconds, written, pool, 10**9 + 10**7 * len(added),
                                                 args.writer_pause)
                runs.setdefault(name, []).append(qps)
                if searched is None:
                    runs.setdefault("writer_busy_fraction", []).append(busy)
                    runs.setdefault("writer_exclusive_fraction", []).append(held)
                    added.append(n)
    out = {"labels": args.labels, "dim": args.dim, "engine": args.engine, "readers": args.readers,
           "writer_pause": args.writer_pause,
           "seconds": args.seconds, "rounds": args.rounds, "build_s": round(build_s, 2),
           **{name: round(float(np.median(v)), digits(name)) for name, v in runs.items()},
           "all": {name: [round(v, digits(name)) for v in vals] for name, vals in runs.items()}}
    if added:
        out["writer_labels_added_per_run"] = added
        out["one_writer_over_separate_writer"] = round(out["readers_one_writer_qps"] / out["readers_separate_writer_qps"], 3)
        out["one_writer_over_no_writer"] = round(out["readers_one_writer_qps"] / out["readers_no_writer_qps"], 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
