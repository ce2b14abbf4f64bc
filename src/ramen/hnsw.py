"""An HNSW graph over unit vectors, built and searched by ramen._C: the label index's engine.

The graph lives in numpy arrays (vectors, links per level, levels), so it saves as plain arrays
and loads memory-mapped. Levels and the insertion order of each `add` (shuffled: nodes of one
insertion batch cannot link to each other, and near neighbours often arrive together) come from a
generator keyed by (seed, first node), and insertion runs in batches that search the graph as it
stood before the batch, so the graph depends on the vectors, their order and the seed, never on
the number of threads.

An add runs in two parts so that searches can go on during it: `prepare_add` links the new nodes,
writing only rows no search reads (the old nodes' changed rows come back as a `PendingAdd`), and
`commit` copies those rows in and makes the new nodes visible, which is quick and is all a caller
must keep searches away from.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ramen._arrays import grow_rows
from ramen._build import load_C

_C = load_C()

DTYPES = {"f16": np.float16, "f32": np.float32}
MAX_LEVEL = 30


@dataclass
class PendingAdd:
    """A prepared add: the graph's state once it is committed."""

    n: int
    upper_rows: int
    entry: tuple[int, int]
    level0_nodes: np.ndarray  # rows of level0 to replace with level0_links
    level0_links: np.ndarray
    upper_index: np.ndarray  # rows of upper to replace with upper_links
    upper_links: np.ndarray


class HnswGraph:
    """Nodes 0..n-1 (rows in insertion order) linked by inner product; `m` links per node above
    level 0 and 2m at level 0, `ef_construction` the search width while linking."""

    def __init__(self, dim: int, *, dtype: str = "f16", m: int = 16, ef_construction: int = 128, seed: int = 0):
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not isinstance(m, (int, np.integer)) or m < 2:
            raise ValueError(f"m (connectivity) must be an integer >= 2, got {m!r}")
        if not isinstance(ef_construction, (int, np.integer)) or ef_construction < 1:
            raise ValueError(f"ef_construction must be an integer >= 1, got {ef_construction!r}")
        self.dim, self.dtype, self.m, self.m0 = int(dim), dtype, int(m), 2 * int(m)
        self.ef_construction, self.seed = int(ef_construction), int(seed)
        self.n = 0
        self.upper_rows = 0
        self.entry = (-1, -1)  # (node, level)
        self.vectors = np.zeros((0, self.dim), DTYPES[dtype])
        self.level0 = np.zeros((0, self.m0 + 1), np.int32)
        self.upper = np.zeros((0, self.m + 1), np.int32)
        self.level = np.zeros(0, np.int8)
        self.upper_row = np.zeros(0, np.int64)

    def __len__(self) -> int:
        return self.n

    def __deepcopy__(self, memo: dict[int, Any]) -> "HnswGraph":
        """A graph with its own arrays; read-only ones (a memory-mapped file's sections) are shared,
        as nothing can write to them."""
        twin = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, np.ndarray) and value.flags.writeable:
                setattr(twin, name, value.copy())
        return twin

    def add(self, vectors: np.ndarray, *, threads: int = 0) -> None:
        """Appends unit rows `vectors` (m, dim) float32 as nodes n..n+m-1 and links them."""
        pending = self.prepare_add(vectors, threads=threads)
        if pending is not None:
            self.commit(pending)

    def prepare_add(self, vectors: np.ndarray, *, threads: int = 0) -> PendingAdd | None:
        """Links `vectors` as the next nodes without changing what a search of the graph sees; None
        for no vectors. Nothing else may add to the graph until the result is committed."""
        count = len(vectors)
        if count == 0:
            return None
        rng = np.random.default_rng([self.seed, self.n])
        levels = self._draw_levels(rng, count)
        order = self.n + rng.permutation(count).astype(np.int64)
        first_rows = self.upper_rows + np.concatenate([[0], np.cumsum(levels[:-1], dtype=np.int64)])
        need_upper = self.upper_rows + int(levels.sum())
        self._reserve(self.n + count, need_upper)  # new arrays hold the same visible rows
        begin, end = self.n, self.n + count
        self.vectors[begin:end] = vectors
        self.level[begin:end] = levels
        self.upper_row[begin:end] = np.where(levels > 0, first_rows, -1)
        node, level, nodes0, links0, rows_up, links_up = _C.hnsw_insert(
            self._vector_bits(), self.level0, self.upper, self.level, self.upper_row, m=self.m, m0=self.m0,
            entry_node=self.entry[0], entry_level=self.entry[1], begin=begin, end=end, order=order,
            ef_construction=self.ef_construction, num_threads=threads)
        return PendingAdd(end, need_upper, (node, level), nodes0, links0, rows_up, links_up)

    def commit(self, pending: PendingAdd) -> None:
        """Makes a prepared add visible: its rows of the old nodes, then the new node count."""
        self.level0[pending.level0_nodes] = pending.level0_links
        self.upper[pending.upper_index] = pending.upper_links
        self.n, self.upper_rows, self.entry = pending.n, pending.upper_rows, pending.entry

    def search(self, queries: np.ndarray, k: int, ef: int, *, alive: np.ndarray | None = None,
               threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(rows int64, inner products float32), each (n, k), best first, padded with -1 / -inf;
        `queries` unit float32 (n, dim); rows with alive == 0 are skipped."""
        return _C.hnsw_search(self._vector_bits(), self.level0, self.upper, self.level, self.upper_row,
                              m=self.m, m0=self.m0, entry_node=self.entry[0], entry_level=self.entry[1],
                              nodes=self.n, alive=alive, queries=np.ascontiguousarray(queries, np.float32),
                              k=int(k), ef=int(ef), num_threads=threads)

    def arrays(self) -> dict[str, Any]:
        """The graph's state, trimmed to its nodes (what a file holds)."""
        return {"vectors": self.vectors[: self.n], "level0": self.level0[: self.n], "level": self.level[: self.n],
                "upper_row": self.upper_row[: self.n], "upper": self.upper[: self.upper_rows],
                "entry": np.array(self.entry, np.int64)}

    def _draw_levels(self, rng: np.random.Generator, count: int) -> np.ndarray:
        """Each node's top level, geometric with ratio 1/m."""
        u = rng.random(count)
        levels = np.floor(-np.log1p(-u) / math.log(self.m))
        return np.minimum(levels, MAX_LEVEL).astype(np.int8)

    def _vector_bits(self) -> np.ndarray:
        return self.vectors.view(np.uint16) if self.dtype == "f16" else self.vectors

    def _reserve(self, nodes: int, upper_rows: int) -> None:
        self.vectors = grow_rows(self.vectors, nodes)
        self.level0 = grow_rows(self.level0, nodes)
        self.level = grow_rows(self.level, nodes)
        self.upper_row = grow_rows(self.upper_row, nodes)
        self.upper = grow_rows(self.upper, upper_rows, minimum=64)
