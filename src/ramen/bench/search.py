"""`search` suite: ramen.LabelIndex beside exact numpy top-k, faiss HNSW, hnswlib and usearch.

For each data set (labels x dim) and index it measures build time, memory per label, and, over a
sweep of expansion_search, recall@10 against exact search, single-query latency (one thread, p50
and p99) and batch QPS (all threads). Each index is reported at its operating point: the smallest
expansion_search reaching recall@10 >= 0.95 (recall comes from the batch search of a sweep), so
ratios ours/peer compare equal recall.

Data (uniform random vectors are avoided: no graph index reaches recall there, see the notes):
- lowrank: vectors near a 64-d subspace with a power-law spectrum plus noise, like text embeddings;
- planted: clusters of planted neighbours (random unit centres, geometric cluster sizes, mean 16);
- file: RAMEN_SEARCH_VECTORS=labels.npy[:queries.npy] adds a case from vectors on disk (e.g.
  encoder embeddings of label texts; queries default to 2,000 held-out labels).
Environment knobs for long runs: RAMEN_SEARCH_CASES (e.g. "lowrank-1000000x384,planted-100000x768"),
RAMEN_SEARCH_PEERS (subset of "numpy-exact,faiss-hnsw,hnswlib,usearch"; usearch runs as
LabelIndex(engine="usearch"), the engine ours replaced, with the same thin wrapper), RAMEN_SEARCH_VARIANTS (cases that
also run the dtype study, default "lowrank-100000x384"; "" for none).
Timing is interleaved query by query across the engines of a case, so that load from other
processes on a shared machine disturbs every engine alike; build times are not (load is printed).
"""
from __future__ import annotations

import gc
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from tqdm import tqdm

from ramen.bench.common import Row, import_peer
from ramen.index import (DEFAULT_CONNECTIVITY, DEFAULT_DTYPE, DEFAULT_EXPANSION_ADD, LabelIndex, _threads,
                         normalize)

SUITE = "search"
K = 10
TARGET = 0.95
EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256)
FULL_CASES = [("lowrank", 100_000, 384), ("planted", 100_000, 384), ("lowrank", 100_000, 768),
              ("planted", 100_000, 768), ("lowrank", 1_000_000, 384), ("planted", 1_000_000, 384),
              ("lowrank", 1_000_000, 768), ("planted", 1_000_000, 768)]
PEERS = ("numpy-exact", "faiss-hnsw", "hnswlib", "usearch")
GRAPH_PEERS = ("faiss-hnsw", "hnswlib", "usearch")
_PEER_MODULE = {"numpy-exact": "exact_topk", "faiss-hnsw": "faiss_hnsw", "hnswlib": "hnswlib_hnsw"}
# dtype study at 100K x 384: what the default was chosen from
VARIANTS = {"f32": dict(dtype="f32"), "i8": dict(dtype="i8"), "i8+rescore16": dict(dtype="i8", rescore=16),
            "i8+rescore32": dict(dtype="i8", rescore=32), "f16-c32": dict(dtype="f16", connectivity=32)}


# ---- data ----------------------------------------------------------------------------------------
def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def lowrank(n: int, dim: int, n_queries: int, seed: int = 0, rank: int = 64, decay: float = 1.0,
            noise: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n, dim) and queries near a `rank`-d subspace with spectrum i^-decay, plus noise."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T.astype(np.float32)  # (rank, dim)
    scale = (1.0 + np.arange(rank, dtype=np.float32)) ** -decay
    scale /= np.linalg.norm(scale)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for s in range(0, m, 65536):  # bounded temporaries at 1M x 768
            c = min(65536, m - s)
            z = rng.standard_normal((c, rank), dtype=np.float32) * scale
            out[s:s + c] = z @ basis + (noise / np.sqrt(dim)) * rng.standard_normal((c, dim), dtype=np.float32)
        return _unit(out)

    return draw(n), draw(n_queries)


def planted(n: int, dim: int, n_queries: int, seed: int = 0, mean_cluster: int = 16,
            spread: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Labels in clusters around random unit centres (geometric sizes); queries drawn from the clusters."""
    rng = np.random.default_rng(seed)
    sizes = rng.geometric(1.0 / mean_cluster, size=n)
    sizes = sizes[: np.searchsorted(np.cumsum(sizes), n) + 1]
    centres = _unit(rng.standard_normal((len(sizes), dim), dtype=np.float32))
    owner = np.repeat(np.arange(len(sizes)), sizes)[:n]

    def around(own: np.ndarray) -> np.ndarray:
        out = np.empty((len(own), dim), np.float32)
        for s in range(0, len(own), 65536):
            o = own[s:s + 65536]
            out[s:s + len(o)] = centres[o] + (spread / np.sqrt(dim)) * rng.standard_normal((len(o), dim), dtype=np.float32)
        return _unit(out)

    return around(owner), around(owner[rng.integers(0, n, n_queries)])


def from_file(spec: str, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vectors from RAMEN_SEARCH_VECTORS: "labels.npy" (queries held out) or "labels.npy:queries.npy"."""
    labels_path, _, queries_path = spec.partition(":")
    x = np.load(labels_path, mmap_mode="r")
    if queries_path:
        return normalize(x, x.shape[1], labels_path), normalize(np.load(queries_path), x.shape[1], queries_path)
    held = np.random.default_rng(seed).permutation(len(x))
    return normalize(x[np.sort(held[n_queries:])], x.shape[1], labels_path), normalize(x[held[:n_queries]], x.shape[1], labels_path)


def ground_truth(x: np.ndarray, q: np.ndarray, k: int = K, block: int = 1 << 17) -> np.ndarray:
    """Exact top-k ids (nq, k) by blocked float32 matmul, independent of ramen.index."""
    best_s = np.full((len(q), 0), -np.inf, np.float32)
    best_i = np.zeros((len(q), 0), np.int64)
    for s in range(0, len(x), block):
        sc = q @ x[s:s + block].T
        top = np.argpartition(-sc, k - 1, axis=1)[:, :k]
        best_s = np.concatenate([best_s, np.take_along_axis(sc, top, axis=1)], axis=1)
        best_i = np.concatenate([best_i, top + s], axis=1)
        keep = np.argpartition(-best_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(best_s, keep, axis=1), np.take_along_axis(best_i, keep, axis=1)
    return best_i


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k ids found (-1 padding never matches)."""
    hits = (found[:, :, None] == truth[:, None, :]).any(axis=2)
    return float(hits.sum() / truth.size)


# ---- engines -------------------------------------------------------------------------------------
class Ours:
    """ramen.LabelIndex behind the interface the peers share."""

    name = "ramen"

    def __init__(self, dim: int, **config: Any) -> None:
        self.index = LabelIndex(dim, **config)
        self.threads = 1

    def add(self, vectors: np.ndarray, threads: int) -> None:
        self.index.add(np.arange(len(vectors)), vectors, threads=threads)

    def set_expansion_search(self, ef: int) -> None:
        if not self.index.exact:
            self.index.expansion_search = ef

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.index.search(queries, k, threads=self.threads)

    def nbytes(self, folder: str) -> int:
        path = os.path.join(folder, "ramen.idx")
        self.index.save(path)
        return os.path.getsize(path)


class UsearchEngine(Ours):
    """LabelIndex on usearch (its engine before ramen's HNSW): the same wrapper, usearch's graph."""

    name = "usearch"

    def __init__(self, dim: int, **config: Any) -> None:
        super().__init__(dim, dtype=DEFAULT_DTYPE, engine="usearch", **config)


def build(engine: Any, x: np.ndarray) -> dict[str, Any]:
    """Builds `engine` on `x` with all threads: build time and saved size per label."""
    t0 = time.perf_counter()
    engine.add(x, _threads(None))
    build_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as folder:  # the saved index: what a server holds in memory
        bytes_per_label = engine.nbytes(folder) / len(x)
    return {"build_s": build_s, "bytes_per_label": bytes_per_label}


def sweep(engine: Any, q: np.ndarray, truth: np.ndarray, efs: tuple[int, ...]) -> list[tuple[int, float]]:
    """(expansion_search, recall@10) for growing ef, stopping once recall >= 0.995."""
    engine.set_threads(_threads(None))
    points = []
    for ef in efs:
        engine.set_expansion_search(ef)
        points.append((ef, recall(np.asarray(engine.search(q, K)[0]), truth)))
        if points[-1][1] >= 0.995:
            break
    return points


def operating_ef(points: list[tuple[int, float]]) -> tuple[int, float]:
    """The smallest ef reaching TARGET recall (else the most accurate point)."""
    ok = [p for p in points if p[1] >= TARGET]
    return ok[0] if ok else max(points, key=lambda p: p[1])


def time_interleaved(engines: dict[str, Any], q: np.ndarray, n_single: int, rounds: int = 3) -> dict[str, dict[str, float]]:
    """Batch QPS (all threads, best of `rounds`) and one-thread single-query p50/p99 of every
    engine, interleaved query by query so that load from other processes hits all engines alike."""
    threads = _threads(None)
    out = {name: {"qps": 0.0} for name in engines}
    lat = {name: [] for name in engines}
    names = list(engines)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            e = engines[name]
            e.set_threads(threads)
            e.search(q[:64], K)  # warm-up
            t0 = time.perf_counter()
            e.search(q, K)
            out[name]["qps"] = max(out[name]["qps"], len(q) / (time.perf_counter() - t0))
    for e in engines.values():
        e.set_threads(1)
    for i in tqdm(range(n_single), desc="  single queries", leave=False):
        for name in names[i % len(names):] + names[:i % len(names)]:
            t0 = time.perf_counter()
            engines[name].search(q[i], K)
            lat[name].append(time.perf_counter() - t0)
    for name in names:
        out[name]["p50_us"] = float(np.percentile(lat[name], 50) * 1e6)
        out[name]["p99_us"] = float(np.percentile(lat[name], 99) * 1e6)
    return out


def _peer_factory(name: str) -> Callable[..., Any] | None:
    if name == "usearch":
        return UsearchEngine
    try:
        module = import_peer(_PEER_MODULE[name])
    except ImportError as e:
        print(f"  peer {name} skipped: {e}", flush=True)
        return None
    return module.Index


def _cases(quick: bool) -> list[tuple[str, int, int]]:
    if quick:
        return [("lowrank", 20_000, 384)]
    wanted = os.environ.get("RAMEN_SEARCH_CASES")
    cases = FULL_CASES
    if wanted:
        names = {c.strip() for c in wanted.split(",") if c.strip()}
        cases = [c for c in FULL_CASES if f"{c[0]}-{c[1]}x{c[2]}" in names]
    if os.environ.get("RAMEN_SEARCH_VECTORS"):
        cases = [*cases, ("file", 0, 0)]
    return cases


def run(quick: bool) -> list[Row]:
    cases = _cases(quick)
    peers = [p for p in os.environ.get("RAMEN_SEARCH_PEERS", ",".join(PEERS)).split(",") if p]
    factories = {p: _peer_factory(p) for p in peers}
    default = dict(dtype=DEFAULT_DTYPE, connectivity=DEFAULT_CONNECTIVITY, expansion_add=DEFAULT_EXPANSION_ADD)
    efs = (16, 32, 64, 128) if quick else EFS
    n_queries, n_single = (1000, 300) if quick else (2000, 2000)
    variants_at = os.environ.get("RAMEN_SEARCH_VARIANTS", "lowrank-100000x384")
    rows: list[Row] = []
    for data, n, dim in cases:
        if data == "file":
            x, q = from_file(os.environ["RAMEN_SEARCH_VECTORS"], n_queries)
            n, dim = x.shape
        case = f"{data} {n // 1000}Kx{dim}"
        if data != "file":  # vectors from a file are in memory already: nothing to decide
            if not _fits(case, n, dim, factories):
                continue
            x, q = (lowrank if data == "lowrank" else planted)(n, dim, n_queries)
        print(f"{case}: exact ground truth ...", flush=True)
        truth = ground_truth(x, q)
        rows += _case_rows(case, x, q, truth, factories, default, efs, n_single,
                           with_variants=not quick and f"{data}-{n}x{dim}" in variants_at.split(","))
        del x, q, truth  # the case's engines went with _case_rows's frame
        gc.collect()
    return rows


def _fits(case: str, n: int, dim: int, factories: dict[str, Any]) -> bool:
    """Whether the case's indexes, held together for interleaved timing, fit in the memory
    available now (Linux /proc/meminfo; assumed to fit elsewhere); says so when they do not."""
    f32_engines = 1 + sum(make is not None and p != "usearch" for p, make in factories.items())  # + ramen-exact
    need = n * (8 * dim + (2 * dim + 160) + f32_engines * (4 * dim + 160))  # data and its copy, ours, f32 rows
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return True
    if need <= available:
        return True
    print(f"{case}: skipped: its indexes need about {need / 2**30:.1f} GiB, {available / 2**30:.1f} GiB are "
          "available (RAMEN_SEARCH_PEERS=... runs fewer peers beside ours)", flush=True)
    return False


def _case_rows(case: str, x: np.ndarray, q: np.ndarray, truth: np.ndarray,
               factories: dict[str, Any], default: dict[str, Any], efs: tuple[int, ...], n_single: int, *,
               with_variants: bool) -> list[Row]:
    """Builds, sweeps and times every engine of one case; its indexes are freed on return (held
    together they are the suite's peak memory: about 17 GB at 1M x 768)."""
    dim = x.shape[1]
    configs = {"ramen": default}
    if with_variants:
        configs.update({f"ramen[{v}]": {**default, **cfg} for v, cfg in VARIANTS.items()})
    makers: dict[str, Callable[[], Any]] = {name: (lambda cfg=cfg: Ours(dim, **cfg)) for name, cfg in configs.items()}
    makers["ramen-exact"] = lambda: Ours(dim, exact=True)
    for p, make in factories.items():
        if make is not None:
            makers[p] = lambda make=make: make(dim, connectivity=default["connectivity"],
                                                expansion_add=default["expansion_add"])
    engines, results = {}, {}
    for name, make in makers.items():
        engines[name] = make()
        results[name] = build(engines[name], x)
        exact = name in EXACT
        results[name]["sweep"] = [(0, recall(np.asarray(engines[name].search(q, K)[0]), truth))] if exact \
            else sweep(engines[name], q, truth, efs)
        results[name]["ef"], results[name]["recall"] = operating_ef(results[name]["sweep"])
        engines[name].set_expansion_search(results[name]["ef"])
        print(f"  {name}: build {results[name]['build_s']:.1f} s, {results[name]['bytes_per_label']:.0f} B/label, "
              f"ef {results[name]['ef']} recall {results[name]['recall']:.3f} (load {os.getloadavg()[0]:.2f})",
              flush=True)
    approx = {k: v for k, v in engines.items() if k not in EXACT}
    exact_engines = {k: v for k, v in engines.items() if k in EXACT}
    for group, n_lat in ((approx, n_single), (exact_engines, min(n_single, 100))):
        for name, t in time_interleaved(group, q, n_lat).items():
            results[name].update(t)
    for name in engines:
        r = results[name]
        print(f"  {name}: p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, QPS {r['qps']:.0f}", flush=True)
    return _rows(case, results, configs)


EXACT = ("ramen-exact", "numpy-exact")


def _rows(case: str, results: dict[str, dict[str, Any]], configs: dict[str, dict[str, Any]]) -> list[Row]:
    """Ours (and each variant) against every peer at its operating point (recall@10 >= TARGET)."""
    rows: list[Row] = []
    peer_names = ["numpy-exact" if "numpy-exact" in results else "ramen-exact"]
    peer_names += [n for n in results if n in GRAPH_PEERS]
    for ours in configs:
        o = results[ours]
        settings = {**configs[ours], "expansion_search": o["ef"], "sweep": [(e, round(r, 4)) for e, r in o["sweep"]]}
        first = True
        for peer in peer_names:
            p = results[peer]
            exact = peer in EXACT
            label = f"{case} {ours}" + ("" if exact else f" vs ef={p['ef']}")
            metrics = [("recall@10", o["recall"], p["recall"], "", "higher"),
                       ("p50 1-thread", o["p50_us"], p["p50_us"], "us", "lower"),
                       ("p99 1-thread", o["p99_us"], p["p99_us"], "us", "lower"),
                       ("QPS all threads", o["qps"], p["qps"], "q/s", "higher")]
            if not exact:
                metrics += [("build", o["build_s"], p["build_s"], "s", "lower"),
                            ("memory", o["bytes_per_label"], p["bytes_per_label"], "B/label", "lower")]
            elif first:
                metrics += [("build", o["build_s"], None, "s", "lower"),
                            ("memory", o["bytes_per_label"], None, "B/label", "lower")]
            for metric, ours_v, peer_v, unit, better in metrics:
                rows.append(Row(SUITE, label, metric, ours_v, peer_v, peer, unit, better,
                                settings if first and metric == "recall@10" else {}))
            first = False
    if "ramen-exact" in results and "numpy-exact" in results:
        a, b = results["ramen-exact"], results["numpy-exact"]
        rows.append(Row(SUITE, f"{case} ramen-exact", "QPS all threads", a["qps"], b["qps"], "numpy-exact", "q/s"))
        rows.append(Row(SUITE, f"{case} ramen-exact", "p50 1-thread", a["p50_us"], b["p50_us"], "numpy-exact", "us", "lower"))
        rows.append(Row(SUITE, f"{case} ramen-exact", "recall@10", a["recall"], b["recall"], "numpy-exact", ""))
    return rows
