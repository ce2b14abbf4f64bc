"""Label index: top-k cosine search over label vectors, approximate (HNSW) or exact (matmul).

Vectors are L2-normalised on `add` and on `search`, so scores are cosine similarities whatever
the input norms. Labels carry int64 ids chosen by the caller (the label ids of the data set);
results are `(ids, scores)` of shape (n_queries, k), best first, padded with id -1 and score -inf
when fewer than k labels are indexed.

Internally each added vector gets a row; graph nodes are rows, never label ids, so removing a
label and adding the same id again is a fresh insertion. Removed rows stay in the graph as
tombstones (traversed, never returned) and in the file until the index is rebuilt.

Two graph engines: "ramen" (the default for f32/f16: ramen.hnsw, our C++ HNSW, whose graph does
not depend on the thread count and which was faster than usearch, faiss and hnswlib at equal
recall in benchmarks/results/search.md) and "usearch" (also i8; a graph built with several
threads can differ from run to run). Both score by inner product on the normalised vectors (the
cosine, at less cost); usearch's i8 uses its cosine kernel. Search over a given graph is
deterministic whatever the thread count.

Threads: any number of threads may search one index while others add or remove labels, and a
search sees the index before or after each change, never part of one. Changes run one at a time.
With the ramen engine an add links its labels while searches go on (rows no search reads, see
ramen.hnsw), and only its last step, copying the changed links in and making the labels visible,
keeps searches out, behind a readers-writer lock; a remove (a tombstone) is that step alone. The
usearch engine changes its graph in place, so searches wait for its whole add or remove.
"""
from __future__ import annotations

import copy
import json
import math
import mmap
import os
import tempfile
import threading
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ramen._arrays import grow_rows
from ramen._rwlock import RWLock
from ramen.index_file import (DTYPES, ENGINES, FORMAT, FORMAT_VERSION, INT32_MAX, MAGIC, NP_DTYPE, header_crc,
                              load_hnsw, pad, read_header, section, span, usearch_version, verify_sections,
                              write_section)
from ramen.memory import GB, available_bytes
from ramen.usearch_file import check_usearch_file


# Defaults chosen by the `search` benchmark (benchmarks/results/search.md).
DEFAULT_DTYPE = "f16"
DEFAULT_CONNECTIVITY = 16
DEFAULT_EXPANSION_ADD = 128
DEFAULT_EXPANSION_SEARCH = 64
TUNE_EFS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512)  # expansion_search values tune() tries


def _threads(threads: int | None) -> int:
    """Number of worker threads: `None` means every core this process may run on."""
    if threads is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            return os.cpu_count() or 1
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or not 1 <= threads <= INT32_MAX:
        raise ValueError(f"threads must be a positive integer (at most {INT32_MAX}) or None, got {threads!r}")
    return int(threads)


def normalize(vectors: Any, dim: int, name: str) -> np.ndarray:
    """Checks `vectors` (n, dim) or (dim,) and returns them L2-normalised as float32 (n, dim).

    Raises ValueError naming `name` for a wrong shape or dtype, NaN/Inf entries or zero vectors.
    """
    x = np.asarray(vectors)
    if x.ndim == 1 and x.dtype == np.float32 and x.shape[0] == dim:  # one query: the latency path
        sq = float(np.dot(x, x))
        if math.isfinite(sq) and sq > 1e-30:
            return (x * np.float32(1.0 / math.sqrt(sq)))[None, :]
    if x.dtype.kind not in "fiu" or x.dtype.kind == "b":
        raise ValueError(f"{name} must be a real numeric array, got dtype {x.dtype}")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n, {dim}) or ({dim},), got {np.shape(vectors)}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    sq = np.einsum("ij,ij->i", x, x)
    if np.isfinite(sq).all() and (sq > 1e-30).all():  # the common case, kept cheap for single queries
        return x * (1.0 / np.sqrt(sq))[:, None]
    finite = np.isfinite(x).all(axis=1)
    if not finite.all():
        raise ValueError(f"{name} row {int(np.flatnonzero(~finite)[0])} contains NaN or Inf")
    peak = np.abs(x).max(axis=1) if x.size else np.ones(len(x), np.float32)
    if not (peak > 0).all():
        raise ValueError(f"{name} row {int(np.flatnonzero(~(peak > 0))[0])} is a zero vector: it has no direction")
    x = x.astype(np.float64) / peak[:, None]  # huge or tiny entries: rescale before squaring
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _check_ids(ids: Any, n: int) -> np.ndarray:
    """`ids` as n checked int64 ids. An empty list passes whatever its dtype (np.asarray([]) is float64)."""
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a[None]
    if a.shape == (0,) and n == 0:
        return np.empty(0, np.int64)
    if a.dtype.kind not in "iu" and a.size:
        raise ValueError(f"ids must be integers, got dtype {a.dtype}")
    if a.ndim != 1 or len(a) != n:
        raise ValueError(f"ids must be a 1-D array of {n} ids (one per vector), got shape {np.shape(ids)}")
    if a.dtype.kind == "u" and len(a) and a.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    a = a.astype(np.int64)
    if len(a) and a.min() < 0:
        raise ValueError(f"ids must be non-negative (-1 marks padding in results), got {int(a.min())}")
    return a


def _checked_labels(ids: Any, vectors: Any, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(int64 ids, unit float32 vectors) of an add, each id once. An empty batch passes (a no-op), its
    vectors' dim checked when they have one ((0, dim)), not when they are a bare []."""
    if np.shape(vectors) == (0,) and np.size(ids) == 0:
        vectors = np.empty((0, dim), np.float32)
    x = normalize(vectors, dim, "vectors")
    a = _check_ids(ids, len(x))
    uniq, counts = np.unique(a, return_counts=True)
    if len(uniq) != len(a):
        raise ValueError(f"ids contains duplicates, e.g. {int(uniq[counts > 1][0])}; each id once per add")
    return a, x


def _checked_removal(ids: Any) -> np.ndarray:
    """The unique int64 ids of a remove."""
    a = np.unique(np.atleast_1d(np.asarray(ids)))
    if np.size(ids) and (a.dtype.kind not in "iu" or np.asarray(ids).ndim > 1):
        raise ValueError(f"ids must be a 1-D array of integers, got dtype {a.dtype} shape {np.shape(ids)}")
    return a.astype(np.int64)


def _graph_threads(threads: int | None) -> int:
    """Threads for an add: 0 (the engine's own default, all cores) for None."""
    return 0 if threads is None else _threads(threads)


def _check_int(name: str, value: Any, minimum: int, maximum: int = INT32_MAX) -> int:
    """`value` as an int in [minimum, maximum], else a ValueError naming `name` (bools are not ints)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return int(value)


def _check_results_fit(n: int, k: int, labels: int, copies: int = 1) -> None:
    """A ValueError, before anything is allocated, when (n, k) results (int64 ids and float32 scores,
    `copies` of them at once) would not fit in the memory available: a k far past the labels only pads."""
    need = n * k * 12 * copies
    if need > (1 << 30):  # below a GB no search is refused
        have, source = available_bytes()
        if need > have:
            raise ValueError(f"k={k}: the results of {n} queries would take {need / GB:.1f} GB, more than the "
                             f"{have / GB:.1f} GB available ({source}); the index holds {labels} labels, so a k "
                             "past that only adds padding")


def _check_k(k: Any) -> int:
    """k as an int: positive and at most INT32_MAX, checked before any (n, k) result is allocated."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= INT32_MAX:
        raise ValueError(f"k must be a positive integer (at most {INT32_MAX}), got {k!r}")
    return int(k)


def top_k(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Best `k` of each row of `scores` (n, m) with their `ids` (n, m), sorted by score descending
    then id ascending (a deterministic order for ties); padded with id -1 / score -inf to width k."""
    n, m = scores.shape
    if m < k:
        scores = np.concatenate([scores, np.full((n, k - m), -np.inf, np.float32)], axis=1)
        ids = np.concatenate([ids, np.full((n, k - m), -1, np.int64)], axis=1)
        m = k
    if m > k:
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        scores = np.take_along_axis(scores, part, axis=1)
        ids = np.take_along_axis(ids, part, axis=1)
    # padding (-1, -inf) sorts last: order by (-score, id) with -1 ids mapped past every real id
    tie = np.where(ids < 0, np.iinfo(np.int64).max, ids)
    order = np.lexsort((tie, -scores), axis=1) if scores.size else np.zeros((n, k), np.intp)
    scores = np.take_along_axis(scores, order, axis=1)
    ids = np.take_along_axis(ids, order, axis=1)
    ids[~np.isfinite(scores)] = -1
    return np.ascontiguousarray(ids, np.int64), np.ascontiguousarray(scores, np.float32)


class LabelIndex:
    """Cosine top-k index over labels: an HNSW graph (`exact=False`) or blocked matmul (`exact=True`).

    dtype: storage of the vectors: "f32", "f16" or "i8" (i8 only for the approximate graph);
      None picks DEFAULT_DTYPE for the graph and "f32" for the exact mode.
    engine: the graph's implementation, "ramen" (ramen.hnsw; f32, f16) or "usearch" (f32, f16,
      i8); None picks "ramen", or "usearch" for i8. Ignored by the exact mode.
    connectivity, expansion_add, expansion_search: HNSW's M, efConstruction and efSearch.
    rescore: when > 0, the graph returns max(rescore, k) candidates that are re-scored against
      float16 copies of the vectors (more memory, higher recall and exact-to-f16 scores).
    fingerprint: a string naming the model that made the vectors; saved and checked on load.
    An id already present in `add` raises unless `replace=True`; duplicate ids in one batch raise.
    """

    def __init__(
        self,
        dim: int,
        *,
        dtype: str | None = None,
        connectivity: int = DEFAULT_CONNECTIVITY,
        expansion_add: int = DEFAULT_EXPANSION_ADD,
        expansion_search: int = DEFAULT_EXPANSION_SEARCH,
        exact: bool = False,
        rescore: int = 0,
        fingerprint: str = "",
        engine: str | None = None,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if dtype is None:
            dtype = "f32" if exact else DEFAULT_DTYPE
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if exact and dtype not in NP_DTYPE:
            raise ValueError(f"exact=True stores float vectors: dtype must be 'f32' or 'f16', got {dtype!r}")
        _check_int("connectivity", connectivity, 1, INT32_MAX // 2 - 1)  # level 0 holds 2 * connectivity + 1
        _check_int("expansion_add", expansion_add, 1)
        _check_int("expansion_search", expansion_search, 1)
        _check_int("rescore", rescore, 0)
        if exact and rescore:
            raise ValueError("rescore applies to the approximate index; exact=True already scores exactly")
        if not isinstance(fingerprint, str):
            raise ValueError(f"fingerprint must be a string, got {type(fingerprint).__name__}")
        if engine is None:
            engine = "usearch" if dtype == "i8" else "ramen"
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
        if engine == "ramen" and dtype == "i8":
            raise ValueError("engine='ramen' stores f32 or f16 vectors; use engine='usearch' for dtype='i8'")
        self.dim = int(dim)
        self.dtype = dtype
        self.exact = bool(exact)
        self.connectivity = int(connectivity)
        self.expansion_add = int(expansion_add)
        self._expansion_search = int(expansion_search)
        self.rescore = int(rescore)
        self.fingerprint = fingerprint
        self.engine = None if exact else engine
        self.read_only = False
        self._rows = 0  # rows used (live + removed)
        self._ids = np.empty(0, np.int64)  # row -> label id, -1 once removed; capacity >= _rows
        self._keys = np.empty(0, np.int64)  # live label ids, sorted
        self._key_rows = np.empty(0, np.int64)  # row of each entry of _keys
        vec_dtype = NP_DTYPE[dtype] if exact else (np.float16 if rescore else None)
        self._vectors = None if vec_dtype is None else np.empty((0, self.dim), vec_dtype)
        self._compiled_search: Any = None
        self._graph = None if exact else self._new_graph()
        self._keepalive: Any = None  # the memory map a view reads from
        self._source: Path | None = None  # the file this index was loaded from
        self._mapped: tuple[int, int, int, int] = (0, 0, 0, 0)  # a view's file at load: device, inode, size, mtime
        self._unverified: list[tuple[str, int, int, int]] = []  # (section, offset, size, crc32) left to verify()
        self.checksummed = False  # loaded from a file with checksums (False: built here, or a file saved before them)
        self._alive: np.ndarray | None = None  # ramen engine: uint8 per row, cached while no row changes
        self._lock = RWLock()  # searches share it; a change is made visible under it alone
        self._writer = threading.Lock()  # one add, remove or tune at a time

    def __getstate__(self) -> dict[str, Any]:
        """Pickles without the locks (the unpickled index gets its own); a usearch graph goes as its
        serialised bytes. A memory-mapped view does not pickle: its data is the file's."""
        if self._keepalive is not None:
            raise TypeError(f"cannot pickle a memory-mapped view of {self._source}: pickle the path, or an index "
                            "loaded with view=False")
        with self._writer, self._lock.read():
            state = dict(self.__dict__)
            if self.engine == "usearch":
                state["_graph"] = bytes(self._graph.save())
        del state["_lock"], state["_writer"]
        state.pop("_compiled_search"), state.pop("_scalar_unknown", None)  # the graph's, made again on unpickling
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._compiled_search = None
        if self.engine == "usearch":
            blob, self._graph = self._graph, self._new_graph()
            self._graph.load(blob)
            self._graph.expansion_search = self._expansion_search
        self._lock = RWLock()
        self._writer = threading.Lock()

    def __copy__(self) -> "LabelIndex":
        """copy.copy is a deep copy: a copy sharing the graph, id and vector arrays would change
        the original with its first add or remove."""
        return self.__deepcopy__({})

    def __deepcopy__(self, memo: dict[int, Any]) -> "LabelIndex":
        """An independent index with its own arrays, graph and locks. A view's copy is a view of the
        same memory map: what is read-only there (the file's vectors and graph) is shared."""
        twin = LabelIndex.__new__(LabelIndex)
        memo[id(self)] = twin
        with self._writer, self._lock.read():
            for name, value in self.__dict__.items():
                if name in ("_lock", "_writer", "_graph", "_compiled_search"):
                    continue
                shared = name in ("_keepalive", "_scalar_unknown") or _read_only(value)  # the map; an enum constant
                twin.__dict__[name] = value if shared else copy.deepcopy(value, memo)
            twin._compiled_search = None
            if self.engine == "usearch":
                twin._graph = self._graph.copy()
                twin._compiled_search = getattr(getattr(twin._graph, "_compiled", None), "search_many", None)
            else:
                twin._graph = copy.deepcopy(self._graph, memo)
        twin._lock = RWLock()
        twin._writer = threading.Lock()
        return twin

    # ---- construction -------------------------------------------------------------------------
    def _new_graph(self) -> Any:
        if self.engine == "ramen":
            from ramen.hnsw import HnswGraph

            return HnswGraph(self.dim, dtype=self.dtype, m=self.connectivity, ef_construction=self.expansion_add)
        from usearch.index import Index, ScalarKind

        # Vectors arrive normalised, so inner product is the cosine and its kernel is cheaper (~30%
        # at f16); i8 keeps usearch's cosine kernel, which compensates quantisation in the norms.
        metric = "cos" if self.dtype == "i8" else "ip"
        graph = Index(ndim=self.dim, metric=metric, dtype=self.dtype, connectivity=self.connectivity,
                      expansion_add=self.expansion_add, expansion_search=self._expansion_search)
        compiled = getattr(graph, "_compiled", None)
        self._compiled_search = getattr(compiled, "search_many", None)
        self._scalar_unknown = ScalarKind.Unknown
        return graph

    @property
    def expansion_search(self) -> int:
        """Breadth of the graph search (HNSW's ef): higher is slower with better recall."""
        return self._expansion_search

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        value = _check_int("expansion_search", value, 1)
        with self._writer, self._lock.write():
            self._set_expansion_search(value)

    def _set_expansion_search(self, value: int) -> None:
        self._expansion_search = value
        if self.engine == "usearch":
            self._graph.expansion_search = value

    def tune(self, queries: Any, *, target_recall: float = 0.95, k: int = 10,
             candidates: Sequence[int] = TUNE_EFS, threads: int | None = None) -> dict[str, Any]:
        """Sets expansion_search to the smallest candidate whose recall@k against exact search on
        `queries` reaches `target_recall`, or the largest if none does.

        Real encoder embeddings need a wider search than synthetic ones for the same recall
        (benchmarks/results/search.md: ef 192 for 0.96 on MiniLM label embeddings, 32 on low-rank
        vectors), so tune on queries like the ones served. Returns {"expansion_search", "recall",
        "reached", "sweep": [(ef, recall), ...]}; an exact index is left as it is (recall 1).
        """
        if isinstance(target_recall, bool) or not isinstance(target_recall, (int, float)) \
                or not 0 < target_recall <= 1:
            raise ValueError(f"target_recall must be in (0, 1], got {target_recall!r}")
        efs = sorted({int(e) for e in candidates})
        if not efs or efs[0] < 1 or efs[-1] > INT32_MAX:
            raise ValueError(f"candidates must be integers in [1, {INT32_MAX}], got {list(candidates)!r}")
        k = _check_k(k)
        q = normalize(queries, self.dim, "queries")
        if len(q) == 0:
            raise ValueError("queries is empty: tune needs at least one query")
        if self.exact or len(self) == 0:
            return {"expansion_search": None if self.exact else self._expansion_search, "recall": 1.0,
                    "reached": True, "sweep": []}
        threads = _threads(threads)
        with self._writer, self._lock.write():  # searches never see the widths the sweep tries
            rows, _, counts = self._graph_search(q, k, threads, exact=True)  # in the graph's own (quantised) vectors
            truth = [set(r[:c].tolist()) for r, c in zip(rows, counts)]
            sweep: list[tuple[int, float]] = []
            for ef in efs:
                self._set_expansion_search(ef)
                rows, _, counts = self._graph_search(q, k, threads)
                hits = [len(set(r[:c].tolist()) & t) for r, c, t in zip(rows, counts, truth)]
                sweep.append((ef, float(sum(hits) / max(1, sum(len(t) for t in truth)))))
                if sweep[-1][1] >= target_recall:
                    break
        return {"expansion_search": self._expansion_search, "recall": sweep[-1][1],
                "reached": sweep[-1][1] >= target_recall, "sweep": sweep}

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        mode = "exact" if self.exact else \
            f"{self.engine} hnsw(connectivity={self.connectivity}, ef={self._expansion_search})"
        extra = f", rescore={self.rescore}" if self.rescore else ""
        return f"LabelIndex(dim={self.dim}, labels={len(self)}, dtype={self.dtype}, {mode}{extra})"

    @property
    def ids(self) -> np.ndarray:
        """The live label ids, sorted (a copy)."""
        return self._keys.copy()

    def contains(self, ids: Any) -> np.ndarray:
        """Boolean mask: which of `ids` are in the index."""
        a = np.atleast_1d(np.asarray(ids))
        if a.dtype.kind not in "iu":
            raise ValueError(f"ids must be integers, got dtype {a.dtype}")
        return self._lookup(a.astype(np.int64))[1]

    def _lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(position in _keys, found mask) for each id; reads _keys once (an add may replace it)."""
        keys = self._keys
        pos = np.searchsorted(keys, ids)
        found = pos < len(keys)
        found[found] = keys[pos[found]] == ids[found]
        return pos, found

    def _writable(self, what: str) -> None:
        if self.read_only:
            raise ValueError(f"cannot {what}: this index is a read-only memory-mapped view; "
                             "load it with view=False to modify it")

    def add(self, ids: Any, vectors: Any, *, replace: bool = False, threads: int | None = None) -> None:
        """Adds labels `ids` (n,) with `vectors` (n, dim); vectors are L2-normalised.

        An id already in the index raises ValueError unless `replace=True` (then its old vector
        is removed first). Duplicate ids within one call always raise.
        """
        self._writable("add labels")
        ids, x = _checked_labels(ids, vectors, self.dim)
        if len(ids) == 0:
            return
        with self._writer:
            publish = self._prepare_add(ids, x, replace, _graph_threads(threads))
            with self._lock.write():
                publish()

    def _prepare_add(self, ids: np.ndarray, x: np.ndarray, replace: bool, graph_threads: int) -> Callable[[], None]:
        """`add` but its last step, with the writer lock held (checked ids, normalised vectors): it
        writes only rows and arrays that no search reads yet, the ramen engine linking the labels.
        Returns the last step, which makes the add visible; run it with the write lock held."""
        pos, present = self._lookup(ids)
        if present.any() and not replace:
            raise ValueError(f"{int(present.sum())} ids are already in the index, e.g. "
                             f"{int(ids[present][0])}; pass replace=True to overwrite them or remove them first")
        replaced = self._key_rows[pos[present]]
        rows = np.arange(self._rows, self._rows + len(ids), dtype=np.int64)
        keys, key_rows = _merge_keys(np.delete(self._keys, pos[present]), np.delete(self._key_rows, pos[present]),
                                     ids, rows)
        self._grow(self._rows + len(ids))  # new arrays hold the same visible rows
        self._ids[rows[0]:rows[-1] + 1] = ids
        if self._vectors is not None:
            self._vectors[rows[0]:rows[-1] + 1] = x
        if self.engine == "usearch":  # changes its graph in place: searches wait for all of it
            def publish() -> None:
                if len(replaced):
                    self._graph.remove(replaced.astype(np.uint64))
                self._graph.add(rows.astype(np.uint64), x, threads=graph_threads)
                self._publish(replaced, len(ids), keys, key_rows)
            return publish
        pending = self._graph.prepare_add(x, threads=graph_threads) if self._graph is not None else None

        def publish() -> None:
            if pending is not None:
                self._graph.commit(pending)
            self._publish(replaced, len(ids), keys, key_rows)
        return publish

    def _publish(self, removed_rows: np.ndarray, added: int, keys: np.ndarray, key_rows: np.ndarray) -> None:
        """The last step of a change, with the write lock held: tombstones, the new row count and keys."""
        self._ids[removed_rows] = -1
        self._alive = None
        self._rows += added
        self._keys, self._key_rows = keys, key_rows

    def _grow(self, rows: int) -> None:
        """Ensures capacity for `rows` rows in the id and vector arrays."""
        self._ids = grow_rows(self._ids, rows, fill=-1)
        if self._vectors is not None:
            self._vectors = grow_rows(self._vectors, rows)

    def remove(self, ids: Any, *, missing_ok: bool = False) -> int:
        """Removes labels `ids` without a rebuild; returns how many were removed.

        An id not in the index raises ValueError unless `missing_ok=True`.
        """
        self._writable("remove labels")
        a = _checked_removal(ids)
        with self._writer:
            count, publish = self._prepare_remove(a, missing_ok)
            with self._lock.write():
                publish()
        return count

    def _prepare_remove(self, a: np.ndarray, missing_ok: bool) -> tuple[int, Callable[[], None]]:
        """`remove` of unique int64 ids `a` but its last step, with the writer lock held: (how many
        are removed, the step that removes them, to run with the write lock held)."""
        pos, found = self._lookup(a)
        if not found.all() and not missing_ok:
            raise ValueError(f"{int((~found).sum())} ids are not in the index, e.g. {int(a[~found][0])}; "
                             "pass missing_ok=True to ignore them")
        pos = pos[found]
        rows = self._key_rows[pos]
        keys, key_rows = np.delete(self._keys, pos), np.delete(self._key_rows, pos)

        def publish() -> None:
            if self.engine == "usearch" and len(rows):
                self._graph.remove(rows.astype(np.uint64))
            self._publish(rows, 0, keys, key_rows)
        return len(rows), publish

    # ---- search -------------------------------------------------------------------------------
    def search(self, queries: Any, k: int = 10, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` labels for `queries` (n, dim) or (dim,): (ids int64, cosine scores float32),
        each (n, k) (or (k,) for one query), best first, padded with -1 / -inf.

        Equal scores are ordered by id ascending, in every mode (the exact one and the graph), so
        both rank tied labels alike; which labels of a tie across the k-th place come back is not
        specified.

        threads: worker threads for the approximate search (None: all cores; the exact mode
        uses the BLAS library's threads).
        """
        k = _check_k(k)
        single = np.ndim(queries) == 1
        threads = _threads(threads)
        q = normalize(queries, self.dim, "queries")
        _check_results_fit(len(q), k, len(self), copies=2 if self.exact else 3)  # the blocked top-k keeps 2
        lock = self._lock
        lock.acquire_read()  # not the context manager: this is the single-query latency path
        try:
            ids, scores = self._search(q, k, threads)
        finally:
            lock.release_read()
        return (ids[0], scores[0]) if single else (ids, scores)

    def _search(self, q: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        """`search` of checked, normalised queries, with the read lock held."""
        return self._search_exact(q, k) if self.exact else self._search_graph(q, k, threads)

    def _search_graph(self, q: np.ndarray, k: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(q)
        if len(self) == 0 or n == 0:
            return np.full((n, k), -1, np.int64), np.full((n, k), -np.inf, np.float32)
        wanted = max(k, self.rescore)
        rows, dist, counts = self._graph_search(q, wanted, threads)
        ids = self._ids[rows]
        if self.rescore:
            scores = self._rescore(q, rows)
            scores[~np.isfinite(scores)] = -np.inf  # a corrupt (NaN or infinite) stored copy: never returned
        else:
            scores = 1.0 - dist  # usearch's inner-product / cosine distance
        if int(counts.min()) < wanted:
            valid = np.arange(wanted) < counts[:, None]
            scores[~valid] = -np.inf
            ids[~valid] = -1
        if self.rescore:  # best k of the re-scored candidates
            ids, scores = _by_score_then_id(ids, scores, k)
            ids[scores == -np.inf] = -1
            return ids, scores
        if _has_ties(ids, scores):  # the graph returns best first, tied labels in its own order
            ids, scores = _by_score_then_id(ids, scores, k)
        return ids, scores.astype(np.float32, copy=False)

    def _rescore(self, q: np.ndarray, rows: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Exact scores (n, m) of queries `q` (n, dim) against the stored vectors of `rows` (n, m)."""
        if len(q) == 1:
            return (self._vectors[rows[0]].astype(np.float32) @ q[0])[None, :]
        scores = np.empty(rows.shape, np.float32)
        for start in range(0, len(q), chunk):  # bounded memory
            r = rows[start:start + chunk]
            vec = self._vectors[r.ravel()].astype(np.float32).reshape(*r.shape, self.dim)
            scores[start:start + chunk] = np.matmul(vec, q[start:start + chunk, :, None])[..., 0]
        return scores

    def _graph_search(self, q: np.ndarray, wanted: int, threads: int,
                      exact: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Graph search (`exact`: brute force over the graph's own vectors): rows (n, wanted) int64
        (0 past counts), distances 1 - cosine (n, wanted), counts (n,)."""
        if self.engine == "ramen":
            if exact:
                rows, scores = _blocked_top_k(q, self._graph.vectors[: self._rows], self._live_rows(), wanted)
            else:
                rows, scores = self._graph.search(q, wanted, self._expansion_search, alive=self._alive_mask(),
                                                  threads=threads)
            found = (rows >= 0) & (scores > -np.inf)  # -inf: a corrupt (infinite) vector, last: padding
            return np.where(found, rows, 0), np.where(found, 1.0 - scores, 1.0).astype(np.float32), found.sum(axis=1)
        if self._compiled_search is not None:  # usearch's compiled call, without its Python wrapper
            keys, dist, counts = self._compiled_search(q, wanted, threads=threads, exact=exact,
                                                       dtype=self._scalar_unknown)[:3]
        else:
            m = self._graph.search(q, wanted, threads=threads, exact=exact)
            if m.keys.ndim == 1:  # usearch answers one query with trimmed 1-D Matches
                keys = np.zeros((1, wanted), np.uint64)
                dist = np.ones((1, wanted), np.float32)
                keys[0, : len(m.keys)] = m.keys
                dist[0, : len(m.keys)] = m.distances
                counts = np.array([len(m.keys)])
            else:
                keys, dist, counts = m.keys, m.distances, m.counts
        rows = keys.astype(np.int64)
        if int(counts.min()) < wanted:  # usearch leaves garbage / NaN past counts
            valid = np.arange(wanted) < counts[:, None]
            rows[~valid] = 0
            dist = np.where(valid, dist, 1.0).astype(np.float32)
        return rows, dist, counts

    def _alive_mask(self) -> np.ndarray | None:
        """uint8 per row, 0 for removed rows (None while nothing was removed); cached until a change."""
        if len(self) == self._rows:
            return None
        if self._alive is None:
            self._alive = (self._ids[: self._rows] >= 0).view(np.uint8)
        return self._alive

    def _live_rows(self) -> np.ndarray:
        """Each row's own number, -1 for removed rows: the ids of a brute-force pass over the graph."""
        rows = np.arange(self._rows)
        alive = self._alive_mask()
        return rows if alive is None else np.where(alive.view(bool), rows, -1)

    def _search_exact(self, q: np.ndarray, k: int, block_bytes: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
        """Blocked matmul over the stored rows with a running top-k; removed rows are skipped."""
        return _blocked_top_k(q, self._vectors[: self._rows], self._ids[: self._rows], k, block_bytes)

    # ---- persistence --------------------------------------------------------------------------
    def settings(self) -> dict[str, Any]:
        """The constructor arguments that recreate this index's configuration."""
        return {"dim": self.dim, "dtype": self.dtype, "connectivity": self.connectivity,
                "expansion_add": self.expansion_add, "expansion_search": self._expansion_search,
                "exact": self.exact, "rescore": self.rescore, "fingerprint": self.fingerprint, "engine": self.engine}

    def save(self, path: str | os.PathLike) -> None:
        """Writes the index to one file, atomically (a temporary name in the same folder, then rename).

        Layout: "RAMENIDX", then 4096-aligned sections (ids int64, vectors, the graph: ramen's
        arrays or usearch's file), then a JSON header, its length (u64 little-endian) and
        "RAMENIDX" again.
        """
        path = Path(path)
        if path.is_dir():
            raise ValueError(f"cannot save the index to {path}: it is a directory")
        _make_parent(path)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f, self._lock.read():  # no add or remove while the sections are written
                self._check_graph_rows(path)
                f.write(MAGIC)
                crcs: dict[str, int] = {}
                sections = {"ids": write_section(f, self._ids[: self._rows], crcs, "ids")}
                if self._vectors is not None:
                    sections["vectors"] = write_section(f, self._vectors[: self._rows], crcs, "vectors")
                header = {"format": FORMAT, "format_version": FORMAT_VERSION, **self.settings(),
                          "count": len(self), "rows": self._rows, "sections": sections}
                if self.engine == "ramen":
                    arrays = self._graph.arrays()
                    header["hnsw_entry"] = [int(v) for v in arrays.pop("entry")]
                    header["hnsw_upper_rows"] = self._graph.upper_rows
                    sections.update({f"hnsw_{name}": write_section(f, a, crcs, f"hnsw_{name}")
                                     for name, a in arrays.items()})
                elif self.engine == "usearch":
                    sections["graph"] = self._write_graph(f, path.parent, crcs)
                    header["usearch_version"] = usearch_version()
                header["checksums"] = {"algorithm": "crc32", "header": header_crc(header), "sections": crcs}
                blob = json.dumps(header).encode()
                f.write(blob)
                f.write(len(blob).to_bytes(8, "little"))
                f.write(MAGIC)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _check_graph_rows(self, path: Path) -> None:
        """A ValueError, not a file that load rejects, when the graph's node count disagrees with the
        rows this index records (its arrays were changed from outside it)."""
        if self._graph is None:
            return
        want, what = (self._rows, "rows") if self.engine == "ramen" else (len(self), "live labels")
        if len(self._graph) != want:
            raise ValueError(f"cannot save the index to {path}: its graph holds {len(self._graph)} nodes but the "
                             f"index records {want} {what} (the graph was changed from outside this index)")

    def _write_graph(self, f: Any, folder: Path, crcs: dict[str, int]) -> list[int]:
        """Saves the usearch graph to a scratch file and streams it into `f` (no second copy in RAM),
        its CRC-32 into crcs["graph"]."""
        fd, scratch = tempfile.mkstemp(prefix=".graph.", suffix=".tmp", dir=folder)
        os.close(fd)
        try:
            self._graph.save(scratch)
            pad(f)
            offset = f.tell()
            crc = 0
            with open(scratch, "rb") as g:
                while chunk := g.read(1 << 24):
                    f.write(chunk)
                    crc = zlib.crc32(chunk, crc)
            crcs["graph"] = crc
            return [offset, f.tell() - offset]
        finally:
            Path(scratch).unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | os.PathLike, *, view: bool = False,
             expected_fingerprint: str | None = None) -> "LabelIndex":
        """Reads an index saved by `save`. view=True memory-maps it (read-only, pages loaded on use).

        expected_fingerprint: when given, an index made by another model raises ValueError.

        While a view is open, replace its file only atomically (a new file renamed over it, as `save`
        does: the view keeps reading the old one) and never rewrite it in place (`cp` over it, an
        editor): the view would read the new bytes unchecked and give wrong results without a word,
        and a truncated file kills the process (SIGBUS) at the next search that reads past its end.
        That is how memory maps behave. `verify()` names a file rewritten in place (its size or
        modification time changed since the load); call it before searching if in doubt.
        """
        path = Path(path)
        if not os.path.lexists(path):
            raise FileNotFoundError(f"no label index at {path}")
        if not path.is_file():
            what = "a directory" if path.is_dir() else "not a regular file (a broken link, a pipe or a device)"
            raise ValueError(f"{path} is {what}, not a label index file")
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if st.st_size else None
        if mm is None:
            raise ValueError(f"{path} is not a ramen label index (empty file)")
        header = read_header(mm, path)
        vector_sections = ("vectors", "hnsw_vectors") if view else ()  # a view checks them in verify()
        unverified = verify_sections(mm, header, path, skip=vector_sections)
        if expected_fingerprint is not None and header["fingerprint"] != expected_fingerprint:
            raise ValueError(f"{path} was built from vectors of model {header['fingerprint']!r}, not the "
                             f"expected {expected_fingerprint!r}: rebuild the index with this model")
        engine = header.get("engine", None if header["exact"] else "usearch")  # files before engines: usearch
        try:
            index = cls(header["dim"], dtype=header["dtype"], connectivity=header["connectivity"],
                        expansion_add=header["expansion_add"], expansion_search=header["expansion_search"],
                        exact=header["exact"], rescore=header["rescore"], fingerprint=header["fingerprint"],
                        engine=engine)
        except ValueError as e:
            raise ValueError(f"{path}: the header's settings do not make an index ({e})") from e
        rows = header["rows"]
        sections = header["sections"]
        index._ids = section(mm, sections, "ids", np.int64, (rows,), path).copy()
        if index._vectors is not None:
            vec = section(mm, sections, "vectors", index._vectors.dtype, (rows, index.dim), path)
            index._vectors = vec if view else vec.copy()
            del vec  # a non-view load closes the map below: no array may still point into it
        if index.engine == "ramen":
            load_hnsw(index._graph, mm, header, view, path)
        elif index._graph is not None:
            offset, size = span(sections, "graph", path, len(mm))
            buf = memoryview(mm)[offset:offset + size]
            try:
                check_usearch_file(buf, index._graph.save(), keys_below=rows)  # usearch's loader trusts its bytes
                meta = index._graph.metadata(buf)
                if meta is None or meta.get("dimensions") != index.dim:
                    raise ValueError("graph dimensions do not match the header")
                (index._graph.view if view else index._graph.load)(buf)
            except Exception as e:  # noqa: BLE001 - usearch raises RuntimeError on bad bytes
                raise ValueError(f"{path}: corrupt usearch graph section ({e})") from e
            index._graph.expansion_search = index._expansion_search  # not stored by usearch
            if len(index._graph) != header["count"]:
                raise ValueError(f"{path}: the graph holds {len(index._graph)} labels, the header says {header['count']}")
            del buf
        index._rows = rows
        live = np.flatnonzero(index._ids >= 0)
        if index.engine == "usearch" and not np.array_equal(np.sort(np.asarray(index._graph.keys, np.int64)), live):
            raise ValueError(f"{path}: the usearch graph's rows disagree with the live rows of the id section")
        order = np.argsort(index._ids[live], kind="stable")
        index._keys = index._ids[live][order]
        index._key_rows = live[order].astype(np.int64)
        if len(index._keys) != header["count"] or (len(index._keys) > 1 and (np.diff(index._keys) == 0).any()):
            raise ValueError(f"{path}: corrupt id section (count or duplicates disagree with the header)")
        index._source, index._unverified, index.checksummed = path, unverified, "checksums" in header
        if view:
            index.read_only = True
            index._keepalive = mm
            index._mapped = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        else:
            mm.close()
        return index

    def verify(self) -> bool:
        """Checks the sections a `view=True` load left unchecked (the vectors) against the file's
        checksums: about half a second per GB (README). Raises ValueError naming the file and the
        section on a mismatch, and, for a view, naming the file when it was rewritten in place since
        the load (see `load`). True when everything loaded was checked (a copy load checks all at
        load), False when there is nothing to check against (an index built here, or a file saved
        before checksums)."""
        if self._keepalive is not None:
            self._check_not_rewritten()
        if not self.checksummed:
            return False
        for name, offset, size, crc in self._unverified:
            if zlib.crc32(memoryview(self._keepalive)[offset:offset + size]) != crc:
                raise ValueError(f"{self._source}: section {name!r} does not match its checksum (the file is corrupt)")
        self._unverified = []
        return True

    def _check_not_rewritten(self) -> None:
        """A ValueError when a view's file changed under its map: a new size (the map's own file, even
        if renamed since) or, while the path still names that file, a new modification time."""
        device, inode, size, mtime = self._mapped
        now = self._keepalive.size()  # fstat of the mapped file itself
        try:
            st = os.stat(self._source)
            moved = (st.st_dev, st.st_ino) != (device, inode)  # replaced atomically: the map keeps the old file
        except OSError:
            st, moved = None, True
        if now != size or (not moved and st.st_mtime_ns != mtime):
            raise ValueError(f"{self._source} was rewritten in place while memory-mapped by this view ({size} bytes "
                             f"at load, {now} now): its results can be wrong and a truncation crashes the "
                             "process; load it again, and replace the file atomically (as save does), never in place")


def _make_parent(path: Path) -> None:
    """Creates the missing folders above `path`; a ValueError naming the one in the way when something
    other than a directory stands where a folder belongs (mkdir's bare FileExistsError does not say)."""
    for folder in (path.parent, *path.parent.parents):
        if os.path.lexists(folder):
            if not folder.is_dir():
                raise ValueError(f"cannot save the index to {path}: {folder} is not a directory")
            break
    path.parent.mkdir(parents=True, exist_ok=True)


def _has_ties(ids: np.ndarray, scores: np.ndarray) -> bool:
    """Whether two neighbouring labels (not padding) of some row of a best-first result score the same."""
    return bool(((scores[:, 1:] == scores[:, :-1]) & (ids[:, 1:] >= 0)).any())


def _by_score_then_id(ids: np.ndarray, scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `k` of each row ordered by score descending, then id ascending, padding (id -1) last:
    the exact search's order (`top_k`), so both modes rank tied labels alike."""
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), -scores), axis=1)[:, :k]
    return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _read_only(value: Any) -> bool:
    """An array no one can write to (a memory-mapped file's section): a copy of the index may share it."""
    return isinstance(value, np.ndarray) and not value.flags.writeable


def _merge_keys(keys: np.ndarray, key_rows: np.ndarray, ids: np.ndarray,
                rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted `keys` and their rows with `ids` at `rows` inserted in order."""
    order = np.argsort(ids, kind="stable")
    at = np.searchsorted(keys, ids[order])
    return np.insert(keys, at, ids[order]), np.insert(key_rows, at, rows[order])


def _blocked_top_k(q: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int,
                   block_bytes: int = 1 << 26) -> tuple[np.ndarray, np.ndarray]:
    """Top-`k` (ids, scores) of queries `q` against `vectors` (rows, dim) by blocked matmul with a
    running top-k; rows whose id is < 0 (removed) are skipped. Cost: len(q) x rows x dim
    multiply-adds and a partial sort of every score; memory: a few score blocks of `block_bytes`
    whatever the number of queries (the queries go through in slices of that size)."""
    rows = max(1024, block_bytes // (4 * max(len(q), 1)))
    step = max(1, block_bytes // (4 * rows))  # queries a pass: at most 16,384, a 64 MB block of scores
    if len(q) <= step:
        return _blocked_top_k_slice(q, vectors, ids, k, rows)
    parts = [_blocked_top_k_slice(q[s:s + step], vectors, ids, k, rows) for s in range(0, len(q), step)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _blocked_top_k_slice(q: np.ndarray, vectors: np.ndarray, ids: np.ndarray, k: int,
                         rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`_blocked_top_k` of one slice of queries, `rows` vectors a block."""
    n = len(q)
    best_ids = np.full((n, 0), -1, np.int64)
    best_scores = np.full((n, 0), -np.inf, np.float32)
    for start in range(0, len(vectors), rows):
        stop = min(start + rows, len(vectors))
        block = np.asarray(vectors[start:stop], dtype=np.float32)
        scores = q @ block.T  # (n, stop - start)
        block_ids = ids[start:stop]
        dead = block_ids < 0
        if dead.any():
            scores[:, dead] = -np.inf
        if scores.shape[1] > k:
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            scores = np.take_along_axis(scores, part, axis=1)
            block_ids = block_ids[part]
        else:
            block_ids = np.broadcast_to(block_ids, scores.shape)
        best_scores = np.concatenate([best_scores, scores], axis=1)
        best_ids = np.concatenate([best_ids, np.where(np.isfinite(scores), block_ids, -1)], axis=1)
        if best_scores.shape[1] > 4 * k:
            best_ids, best_scores = top_k(best_scores, best_ids, k)
    return top_k(best_scores, best_ids, k)


