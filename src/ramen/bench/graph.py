"""Suite `graph`: random walks with restart and edge pruning, ours beside the numba / numpy peers.

Graphs are power-law item x anchor graphs generated on the fly (deterministic): the paper's
hyperlink-graph scale (~700K items, 2.5M anchors, 27M edges) and one 10x smaller (`--quick` runs
only the small one). The unipartite walk runs on the symmetric item-anchor adjacency, the
bipartite walk over the anchors (column -> item -> column). Throughput is hops per second per
core, ours / peer at equal threads; the peer's figure includes counting its landings into a CSR
matrix (the same output as ours) and, in a second row, its walk kernel alone. Pruning is reported
in GB/s of embedding reads beside the memory bandwidth measured in the same run.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import io
import os
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp

from ramen.bench.common import Row, import_peer, peak_rss_during, timeit

SUITE = "graph"
WALK_LENGTH, RESTART = 400, 0.8
MB = 1 << 20


@dataclasses.dataclass
class Scale:
    name: str
    items: int
    anchors: int
    edges: int  # before duplicates are removed (about 3% are)
    starts: int  # walks timed per configuration


FULL = Scale("hyperlink-scale", 700_000, 2_500_000, 27_700_000, 100_000)
SMALL = Scale("10x-smaller", 70_000, 250_000, 2_770_000, 20_000)
QUICK = dataclasses.replace(SMALL, starts=8_000)


def power_law_bipartite(items: int, anchors: int, edges: int, seed: int = 0) -> sp.csr_matrix:
    """An items x anchors CSR graph: lognormal item degrees (sigma 1.3, mean edges / items, so a
    long tail of items with 1-5 anchors), Zipf(0.75) anchor popularity over randomly permuted ids,
    duplicates removed. Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    weight = rng.lognormal(0.0, 1.3, items)
    degree = np.clip(np.round(weight * (edges / weight.sum())), 1, anchors // 4).astype(np.int64)
    u = rng.random(int(degree.sum()))
    rank = (anchors * (u * u) ** 2).astype(np.int64)  # density ~ rank^-0.75
    cols = rng.permutation(anchors)[np.minimum(rank, anchors - 1)]
    key = np.repeat(np.arange(items, dtype=np.int64), degree) * anchors + cols
    key.sort()
    key = key[np.r_[True, key[1:] != key[:-1]]]
    rows, cols = np.divmod(key, anchors)
    indptr = np.zeros(items + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=items), out=indptr[1:])
    return sp.csr_matrix((np.ones(len(cols), np.float32), cols.astype(np.int32), indptr.astype(np.int32)),
                         shape=(items, anchors))


def cached_power_law(scale: Scale) -> sp.csr_matrix:
    """power_law_bipartite at `scale`, generated once and cached in $TMPDIR (the A/B scripts' graph)."""
    import tempfile
    from pathlib import Path

    from ramen.files import temp_path

    # the generator's version and every size in the name: another shape or generator never reads it
    cache = Path(tempfile.gettempdir()) / f"ramen_power_law_v1_{scale.items}_{scale.anchors}_{scale.edges}.npz"
    if cache.exists():
        z = np.load(cache, allow_pickle=False)
        E = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        E.check_format(full_check=True)
        return E
    E = power_law_bipartite(scale.items, scale.anchors, scale.edges)
    tmp = temp_path(cache)
    np.savez(tmp, data=E.data, indices=E.indices, indptr=E.indptr, shape=np.array(E.shape))
    os.replace(tmp, cache)  # written whole or not at all
    return E


def item_anchor_adjacency(E: sp.csr_matrix) -> sp.csr_matrix:
    """The square, symmetric adjacency of the item-anchor graph: items first, then anchors."""
    A = sp.bmat([[None, E], [E.T, None]], format="csr")
    A.indices, A.indptr = A.indices.astype(np.int32), A.indptr.astype(np.int32)
    return A


def read_bandwidth(threads: int, nbytes: int) -> float:
    """GB/s of reading a large float32 array with `threads` numpy sums (they release the GIL)."""
    data = np.ones(nbytes // 4, dtype=np.float32)
    parts = np.array_split(data, threads)
    with ThreadPoolExecutor(threads) as pool:
        seconds = timeit(lambda: list(pool.map(np.sum, parts)), repeat=5, warmup=1)
    return nbytes / seconds / 1e9


def memory_latency_ns(nbytes: int, steps: int) -> float:
    """ns per dependent load over a random cycle through `nbytes` (numba pointer chase)."""
    import numba

    @numba.njit
    def walk(nxt: np.ndarray, steps: int) -> int:
        i = 0
        for _ in range(steps):
            i = nxt[i]
        return i

    n_log2 = int(np.log2(nbytes // 8))
    n = 1 << n_log2
    nxt = (np.arange(n, dtype=np.uint64) * np.uint64(6364136223846793005) + np.uint64(1442695040888963407)) \
        & np.uint64(n - 1)
    nxt = nxt.astype(np.int64)
    walk(nxt, 1000)
    t = time.perf_counter()
    walk(nxt, steps)
    return (time.perf_counter() - t) / steps * 1e9


def _release_free_memory() -> None:
    """Hands freed heap memory back to the OS (glibc), so that peak-RSS growth counts new memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _measured_peak(fn):
    _release_free_memory()
    return peak_rss_during(fn)


def timed(fn, repeat: int, warmup: int = 1) -> tuple[float, float]:
    """Median wall seconds and median process CPU seconds (all threads) of `fn` over `repeat` runs.

    CPU time counts only while our threads run, so it stays meaningful on a shared, loaded machine."""
    for _ in range(warmup):
        fn()
    walls, cpus = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return float(np.median(walls)), float(np.median(cpus))


def _hops_row(case: str, metric: str, hops: int, threads: int, ours_s: float, peer_s: float | None,
              peer_name: str, settings: dict) -> Row:
    per_core = lambda s: hops / s / threads  # noqa: E731
    return Row(SUITE, case, metric, per_core(ours_s), None if peer_s is None else per_core(peer_s), peer_name,
               "hops/s/core", "higher", settings)


def _walk_rows(scale: Scale, E: sp.csr_matrix, A: sp.csr_matrix, thread_counts: list[int], quick: bool) -> list[Row]:
    import numba

    from ramen import graph

    peer = import_peer("numba_walk")
    rng = np.random.default_rng(1)
    rows: list[Row] = []
    Et = E.T.tocsr()
    cases = {
        "unipartite": (rng.choice(A.shape[0], scale.starts, replace=False).astype(np.int64),
                       lambda st, t, **kw: graph.random_walk_with_restart(A, st, num_threads=t, **kw),
                       lambda st: peer.walk_landings(A.indptr, A.indices, st, WALK_LENGTH, RESTART),
                       A.shape[0]),
        "bipartite": (rng.choice(E.shape[1], scale.starts, replace=False).astype(np.int64),
                      lambda st, t, **kw: graph.bipartite_walk(E, st, num_threads=t, self_loops=False, **kw),
                      lambda st: peer.bipartite_landings(E.indptr, E.indices, Et.indptr, Et.indices, st,
                                                         WALK_LENGTH, RESTART),
                      E.shape[1]),
    }
    for walk, (starts, ours, peer_walk, num_cols) in cases.items():
        hops = len(starts) * WALK_LENGTH
        peer_walk(starts[:64])  # compile
        times: dict[int, float] = {}
        cpu_times: dict[int, float] = {}
        for t in thread_counts:
            numba.set_num_threads(t)
            settings = {"graph": scale.name, "threads": t, "starts": len(starts), "walk_length": WALK_LENGTH,
                        "restart_prob": RESTART, "nodes": A.shape[0] if walk == "unipartite" else E.shape[1]}
            ours_s, ours_cpu = timed(lambda: ours(starts, t, progress=False), repeat=2 if quick else 3)
            times[t], cpu_times[t] = ours_s, ours_cpu
            out, peak = _measured_peak(lambda: ours(starts, t, progress=False))
            peer_s, peer_cpu = timed(lambda: peer_walk(starts), repeat=1 if quick or walk == "bipartite" else 2,
                                     warmup=0)
            landings = peer_walk(starts)
            count_s, count_cpu = timed(lambda: peer.count_landings(landings, num_cols), repeat=1, warmup=0)
            del landings
            case = f"{walk} {scale.name}"
            rows.append(_hops_row(case, f"walk+count, {t} thread(s)", hops, t, ours_s, peer_s + count_s,
                                  "numba walk + scipy count",
                                  {**settings, "ours_s": round(ours_s, 3), "peer_s": round(peer_s + count_s, 3)}))
            rows.append(_hops_row(case, f"vs peer walk kernel only, {t} thread(s)", hops, t, ours_s, peer_s,
                                  "numba walk only", settings))
            # per CPU-second: the same comparison, immune to other load on the machine
            rows.append(_hops_row(case, f"walk+count per CPU-second, {t} thread(s)", hops, 1, ours_cpu,
                                  peer_cpu + count_cpu, "numba walk + scipy count", settings))
            rows.append(_hops_row(case, f"vs peer walk kernel only per CPU-second, {t} thread(s)", hops, 1, ours_cpu,
                                  peer_cpu, "numba walk only", settings))
            transposed = E.nnz * 4 + E.shape[1] * 4 if walk == "bipartite" else 0
            budget = out.data.nbytes + out.indices.nbytes + out.indptr.nbytes + transposed + 64 * MB * t
            rows.append(Row(SUITE, case, f"peak memory growth, {t} thread(s)", peak / MB, budget / MB,
                            "budget: output + transpose + 64MB/thread", "MB", "lower",
                            {"output_MB": round((out.data.nbytes + out.indices.nbytes + out.indptr.nbytes) / MB, 1),
                             "nnz": out.nnz}))
        if len(thread_counts) > 1:
            t1, tn = thread_counts[0], thread_counts[-1]
            rows.append(Row(SUITE, f"{walk} {scale.name}", f"speed-up {t1} -> {tn} threads (wall)",
                            times[t1] / times[tn], None, "", "x", "higher", {"threads": tn}))
            # total CPU time per hop with tn threads over 1: 1.0 means no contention between threads,
            # i.e. a speed-up of tn on an otherwise idle machine with tn free cores
            rows.append(Row(SUITE, f"{walk} {scale.name}", f"CPU time {tn} threads / {t1} thread",
                            cpu_times[tn] / cpu_times[t1], None, "", "x", "lower", {"threads": tn}))
        # top-10 rows (the XC group's setting) and the cost of the progress bar
        t = thread_counts[-1]
        top_s = timeit(lambda: ours(starts, t, top_k=10, progress=False), repeat=1 if quick else 3, warmup=0)
        rows.append(_hops_row(f"{walk} {scale.name}", f"top_k=10, {t} thread(s)", hops, t, top_s, None, "",
                              {"threads": t}))
        with contextlib.redirect_stderr(io.StringIO()):
            bar_s, bar_cpu = timed(lambda: ours(starts, t, progress=True), repeat=2 if quick else 3, warmup=0)
        rows.append(Row(SUITE, f"{walk} {scale.name}", f"time with tqdm bar / without, {t} thread(s)", bar_s,
                        times[t], "no bar", "s", "lower", {"threads": t}))
        rows.append(Row(SUITE, f"{walk} {scale.name}", f"CPU time with tqdm bar / without, {t} thread(s)", bar_cpu,
                        cpu_times[t], "no bar", "s", "lower", {"threads": t}))
    return rows


def _densify_rows(scale: Scale, E: sp.csr_matrix, threads: int) -> list[Row]:
    from ramen import graph

    t0 = time.perf_counter()
    D = graph.densify(E, num_threads=threads, progress=False)
    seconds = time.perf_counter() - t0
    added = np.diff(D.indptr) - np.diff(E.indptr)
    return [Row(SUITE, f"densify {scale.name}", f"time, {threads} thread(s)", seconds, None, "", "s", "lower",
                {"items": E.shape[0], "hops": E.shape[0] * WALK_LENGTH, "edges_in": E.nnz, "edges_out": D.nnz,
                 "items_gaining_edges": int((added > 0).sum()), "mean_added": round(float(added.mean()), 2)})]


def gather_bandwidth(C: np.ndarray, rows: np.ndarray, batch: int = 1 << 16) -> float:
    """GB/s of numpy copying C[rows] (batch by batch): the same random row reads as pruning, one thread."""
    buf = np.empty((batch, C.shape[1]), dtype=C.dtype)

    def gather() -> None:
        for b in range(0, len(rows), batch):
            part = rows[b:b + batch]
            np.take(C, part, axis=0, out=buf[:len(part)])

    return len(rows) * C.shape[1] * C.itemsize / timeit(gather, repeat=2, warmup=1) / 1e9


def random_embeddings(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """(n, dim) float16 uniform in [-0.5, 0.5), drawn in blocks: the pruning benchmarks' embeddings."""
    out = np.empty((n, dim), dtype=np.float16)
    for b in range(0, n, 1 << 16):
        out[b:b + (1 << 16)] = rng.random((min(1 << 16, n - b), dim), dtype=np.float32) - 0.5
    return out


def _prune_rows(E: sp.csr_matrix, name: str, thread_counts: list[int], bandwidth: dict[int, float],
                quick: bool, dim: int = 384) -> list[Row]:
    from ramen import graph

    rng = np.random.default_rng(2)
    R, C = random_embeddings(E.shape[0], dim, rng), random_embeddings(E.shape[1], dim, rng)
    moved = E.nnz * dim * 2 + E.shape[0] * dim * 2 + E.nnz * 5  # column rows per edge, row rows, indices + mask
    rows = []
    gathered = min(E.nnz, 1_000_000)
    floor = gather_bandwidth(C, E.indices[:gathered])
    rows.append(Row(SUITE, f"prune {name}", "numpy gather of the same column rows, 1 thread", floor, bandwidth[1],
                    "numpy sum bandwidth", "GB/s", "higher", {"rows_gathered": gathered}))
    for t in thread_counts:
        kernel_s, kernel_cpu = timed(lambda: graph.prune_edges(E, R, C, 0.0, num_threads=t, check_finite=False),
                                     repeat=2 if quick else 3)
        full_s = timeit(lambda: graph.prune_edges(E, R, C, 0.0, num_threads=t), repeat=1, warmup=0)
        settings = {"edges": E.nnz, "dim": dim, "dtype": "float16", "threads": t,
                    "bytes_read_GB": round(moved / 1e9, 2)}
        rows.append(Row(SUITE, f"prune {name}", f"GB/s vs read bandwidth, {t} thread(s)", moved / kernel_s / 1e9,
                        bandwidth[t], "numpy sum bandwidth", "GB/s", "higher", settings))
        rows.append(Row(SUITE, f"prune {name}", f"GB/s per CPU-second, {t} thread(s)", moved / kernel_cpu / 1e9,
                        bandwidth[1], "numpy sum bandwidth, 1 thread", "GB/s", "higher", settings))
        rows += _prune_order_rows(E, R, C, name, t, moved, repeat=2 if quick else 3)
        if t == 1:
            rows.append(Row(SUITE, f"prune {name}", "GB/s vs numpy gather of the same rows, 1 thread",
                            moved / kernel_s / 1e9, floor, "numpy gather", "GB/s", "higher", settings))
        rows.append(Row(SUITE, f"prune {name}", f"time incl. NaN check, {t} thread(s)", full_s, kernel_s,
                        "without check", "s", "lower", settings))
    peer = import_peer("numba_walk")
    sub = E[: max(1, E.shape[0] // (50 if quick else 200))]
    peer_s = timeit(lambda: peer.prune_edges(sub, R[: sub.shape[0]], C), repeat=1, warmup=0)
    ours_1 = timeit(lambda: graph.prune_edges(sub, R[: sub.shape[0]], C, num_threads=1, check_finite=False), repeat=3)
    rows.append(Row(SUITE, f"prune {name}", "edges/s, 1 thread", sub.nnz / ours_1, sub.nnz / peer_s,
                    "numpy batched einsum", "edges/s", "higher", {"edges": sub.nnz, "dim": dim}))
    return rows


def _prune_order_rows(E: sp.csr_matrix, R: np.ndarray, C: np.ndarray, name: str, threads: int, moved: int,
                      repeat: int) -> list[Row]:
    """The two edge orders forced, bucket beside CSR, and the order that "auto" (the default) chose."""
    from ramen import graph

    speed = {}
    for order in ("csr", "bucket"):
        wall, _ = timed(lambda: graph.prune_edges(E, R, C, 0.0, num_threads=threads, check_finite=False,
                                                  edge_order=order), repeat=repeat)
        speed[order] = moved / wall / 1e9
    chosen = [graph.prune_edges_ordered(E, R, C, 0.0, num_threads=threads, check_finite=False)[1]
              for _ in range(repeat)]
    settings = {"edges": E.nnz, "threads": threads, "auto_chose": ",".join(chosen)}
    return [Row(SUITE, f"prune {name}", f"GB/s, bucket order / CSR order, {threads} thread(s)", speed["bucket"],
                speed["csr"], "CSR order", "GB/s", "higher", settings)]


def run(quick: bool) -> list[Row]:
    from ramen._build import load_C
    _C = load_C()

    cores = _C.hardware_threads()
    thread_counts = sorted({1, cores})
    load = os.getloadavg()
    nbytes = (256 if quick else 1024) * MB
    bandwidth = {t: read_bandwidth(t, nbytes) for t in thread_counts}
    latency = memory_latency_ns(nbytes, 2_000_000 if quick else 20_000_000)
    rows = [Row(SUITE, "machine", f"read bandwidth, {t} thread(s)", bandwidth[t], None, "", "GB/s", "higher",
                {"bytes": nbytes}) for t in thread_counts]
    rows.append(Row(SUITE, "machine", "dependent-load latency", latency, None, "", "ns", "lower", {"bytes": nbytes}))
    rows.append(Row(SUITE, "machine", "load average at start (1 min)", load[0], None, "", "", "lower",
                    {"cores": cores, "load_5min": round(load[1], 2)}))
    for scale in [QUICK] if quick else [SMALL, FULL]:
        E = power_law_bipartite(scale.items, scale.anchors, scale.edges)
        A = item_anchor_adjacency(E)
        rows += _walk_rows(scale, E, A, thread_counts, quick)
        if not quick:
            rows += _densify_rows(scale, E, cores)
        del A
        if quick or scale is FULL:
            rows += _prune_rows(E, scale.name, thread_counts, bandwidth, quick)
    return rows
