"""Mini-batches for graph-regularised training: queries, their labels and anchors, and the masks.

Each step draws B queries; for each, one relevant label and, per anchor set, one linked anchor;
for each sampled label, per anchor set, one linked anchor. Optionally, per query, extra labels drawn
uniformly join the batch as negatives only. Every in-batch label or anchor that is truly linked to a
row but was not sampled as its positive is excluded from that row's negatives.
A batch is a pure function of (seed, epoch, step), so training resumes exactly and sampling can
run on a background thread.
"""
from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from ramen.clustering import cluster_batch_count
from ramen.tokens import TokenCache

Csr = tuple[torch.Tensor, torch.Tensor]  # (indptr [rows + 1], indices [nnz]) int64


@dataclasses.dataclass
class AnchorBatch:
    """The in-batch anchors of one anchor set and their links to the batch's queries and labels."""

    ids: np.ndarray  # (A,) unique anchor ids
    query_pos: Csr  # B x A: the sampled anchor of each query
    query_excl: Csr  # B x A: other in-batch anchors linked to the query
    label_pos: Csr  # L x A
    label_excl: Csr  # L x A


@dataclasses.dataclass
class Batch:
    """One training step's rows, candidates and masks (CSR over in-batch column positions)."""

    step: int
    query_ids: np.ndarray  # (B,)
    label_ids: np.ndarray  # (L,) unique labels drawn for the queries
    label_pos: Csr  # B x L
    label_excl: Csr  # B x L
    anchors: dict[str, AnchorBatch]
    tokens: dict[str, tuple[torch.Tensor, torch.Tensor]] = dataclasses.field(default_factory=dict)


def _csr(indptr: np.ndarray, indices: np.ndarray) -> Csr:
    return torch.from_numpy(np.ascontiguousarray(indptr, dtype=np.int64)), \
        torch.from_numpy(np.ascontiguousarray(indices, dtype=np.int64))


def sample_neighbours(graph: sp.csr_matrix, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One neighbour column per row, uniform (-1 where a row has none)."""
    indptr = graph.indptr
    start = indptr[rows].astype(np.int64)
    degree = indptr[rows + 1].astype(np.int64) - start
    u = rng.random(len(rows))
    pick = start + np.minimum((u * degree).astype(np.int64), np.maximum(degree - 1, 0))
    out = np.full(len(rows), -1, dtype=np.int64)
    has = degree > 0
    out[has] = graph.indices[pick[has]]
    return out


def link_masks(graph: sp.csr_matrix, rows: np.ndarray, positives: np.ndarray,
               columns: np.ndarray) -> tuple[Csr, Csr]:
    """Positive and exclude CSRs (len(rows) x len(columns)) over in-batch column positions.

    `positives[r]` is the sampled column id of row r (-1 for none); every other in-batch column
    linked to the row in `graph` is excluded from its negatives.
    """
    lookup = _ColumnLookup(columns, graph.shape[1])
    sub = graph[rows]  # (R, num_columns)
    local = lookup(sub.indices)
    row_of = np.repeat(np.arange(len(rows), dtype=np.int64), np.diff(sub.indptr))
    keep = local >= 0
    row_of, local = row_of[keep], local[keep]
    has = positives >= 0
    sampled = np.stack([np.nonzero(has)[0], lookup(positives[has])])  # (2, n) row, column position
    linked = np.stack([row_of, local])
    is_pos = local == np.where(has, lookup(np.maximum(positives, 0)), -1)[row_of]
    return _pairs_to_csr(sampled, len(rows)), _pairs_to_csr(linked[:, ~is_pos], len(rows))


class _ColumnLookup:
    """Column id -> its position in `columns` (the last one where an id repeats), -1 where absent.

    A byte mask over the columns tells the ids that are in the batch, then a binary search over the
    sorted in-batch columns finds their positions: an int64 table over the 2.46M anchors of the
    paper's graph took longer to fill than the rest of the batch, a byte mask an eighth of that.
    """

    def __init__(self, columns: np.ndarray, width: int):
        columns = np.asarray(columns, dtype=np.int64)
        self.order = np.argsort(columns, kind="stable")
        self.sorted = columns[self.order]
        self.member = np.zeros(width, dtype=bool)  # 1 byte a column, one read per id before the search
        self.member[columns] = True

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        out = np.full(ids.shape, -1, dtype=np.int64)
        hit = np.flatnonzero(self.member[ids])
        pos = np.searchsorted(self.sorted, ids[hit], side="right") - 1  # the last equal entry: the last position
        out[hit] = self.order[pos]
        return out


def _pairs_to_csr(pairs: np.ndarray, num_rows: int) -> Csr:
    """CSR from (2, n) (row, column) pairs: sorted, duplicates dropped."""
    pairs = pairs.astype(np.int64)
    if pairs.shape[1]:  # sorted unique (row, column): one sort of int64 keys, not np.unique's of column pairs
        width = int(pairs[1].max()) + 1
        keys = np.sort(pairs[0] * width + pairs[1])
        keys = keys[np.concatenate([[True], keys[1:] != keys[:-1]])]
        pairs = np.stack([keys // width, keys % width])
    indptr = np.zeros(num_rows + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(np.bincount(pairs[0], minlength=num_rows))
    return _csr(indptr, pairs[1])


def empty_csr(num_rows: int) -> Csr:
    return _pairs_to_csr(np.zeros((2, 0), np.int64), num_rows)


@dataclasses.dataclass
class Graphs:
    """The training graphs of one anchor set (after densification and pruning)."""

    query: sp.csr_matrix | None  # train queries x anchors; None when the query graph is off
    label: sp.csr_matrix | None  # labels x anchors; None when the label graph is off


class BatchSampler:
    """Deterministic batches: the query order of an epoch and every draw come from (seed, epoch, step)."""

    def __init__(self, train_Y: sp.csr_matrix, graphs: dict[str, Graphs], batch_size: int, *, seed: int = 0,
                 drop_last: bool = True, rank: int = 0, world: int = 1, num_random_negatives: int = 0):
        self.Y = train_Y.tocsr()
        self.graphs = graphs
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.drop_last = drop_last
        self.rank, self.world = rank, world  # each rank takes rows rank::world of every batch
        self.num_random_negatives = int(num_random_negatives)  # uniform labels per query, negatives only
        self.pool = np.nonzero(np.diff(self.Y.indptr) > 0)[0]  # queries with at least one label
        self.batches: list[np.ndarray] | None = None  # explicit batches (cluster batching)
        if len(self.pool) == 0:
            raise ValueError("no training query has a label: nothing to train on")

    def set_batches(self, batches: list[np.ndarray] | None) -> None:
        """Replaces the per-epoch shuffle by fixed batches of query ids (whole clusters, the short
        batch last, as `cluster_batches` makes them), or restores it."""
        self.batches = None if batches is None else [np.asarray(b, dtype=np.int64) for b in batches]

    def steps_per_epoch(self) -> int:
        """The shuffle's steps, or with cluster batches every one of them but a short last one under
        drop_last (as the shuffle leaves out its last queries): an epoch visits every full batch."""
        if self.batches is None:
            n = len(self.pool)
            return n // self.batch_size if self.drop_last and n >= self.batch_size else -(-n // self.batch_size)
        short = len(self.batches) > 1 and len(self.batches[-1]) < len(self.batches[0])
        return len(self.batches) - (self.drop_last and short)

    def cluster_steps(self, cluster_size: int) -> int:
        """`steps_per_epoch` with the batches that clusters of `cluster_size` will make of the pool:
        a run's schedule counts them before it clusters (a cluster size that does not divide the
        batch size gives batches of fewer queries, so more steps an epoch than the shuffle's)."""
        count, short = cluster_batch_count(len(self.pool), cluster_size, self.batch_size)
        return count - (self.drop_last and short)

    def _rng(self, epoch: int, step: int, rank: int = 0) -> np.random.Generator:
        """The generator of one (epoch, step, rank); step -1 is the epoch's shuffle."""
        return np.random.default_rng([self.seed, epoch, step + 1, rank, 0x5A3E])

    def epoch_queries(self, epoch: int) -> np.ndarray:
        """The epoch's shuffled query order (queries with at least one label)."""
        return self._rng(epoch, -1).permutation(self.pool)

    def batch(self, epoch: int, step: int, queries: np.ndarray | None = None) -> Batch:
        """Batch `step` of `epoch` (pass `epoch_queries(epoch)` to skip recomputing it)."""
        if self.batches is not None:  # the epoch's batches (a short last one left out), in a new order every epoch
            q = self.batches[self._rng(epoch, -1).permutation(self.steps_per_epoch())[step]]
        else:
            queries = self.epoch_queries(epoch) if queries is None else queries
            q = queries[step * self.batch_size:(step + 1) * self.batch_size]
        q = q[self.rank::self.world]
        rng = self._rng(epoch, step, self.rank)
        sampled_labels = sample_neighbours(self.Y, q, rng)
        label_ids = np.unique(np.concatenate([sampled_labels[sampled_labels >= 0], self._extra_labels(q, rng)]))
        label_pos, label_excl = link_masks(self.Y, q, sampled_labels, label_ids)
        anchors = {}
        for name, g in self.graphs.items():
            q_anchor = sample_neighbours(g.query, q, rng) if g.query is not None else np.full(len(q), -1)
            l_anchor = (sample_neighbours(g.label, label_ids, rng) if g.label is not None
                        else np.full(len(label_ids), -1))
            ids = np.unique(np.concatenate([q_anchor[q_anchor >= 0], l_anchor[l_anchor >= 0]]))
            qp, qe = (link_masks(g.query, q, q_anchor, ids) if g.query is not None
                      else (empty_csr(len(q)), empty_csr(len(q))))
            lp, le = (link_masks(g.label, label_ids, l_anchor, ids) if g.label is not None
                      else (empty_csr(len(label_ids)), empty_csr(len(label_ids))))
            anchors[name] = AnchorBatch(ids, qp, qe, lp, le)
        return Batch(step, q, label_ids, label_pos, label_excl, anchors)

    def _extra_labels(self, q: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Labels added to the batch as negatives only (no rng draw without random negatives)."""
        if not self.num_random_negatives:
            return np.zeros(0, np.int64)
        return rng.integers(0, self.Y.shape[1], size=len(q) * self.num_random_negatives)


def attach_tokens(batch: Batch, queries: TokenCache, labels: TokenCache, anchors: dict[str, TokenCache]) -> Batch:
    """Gathers and pads the token ids of every text the batch encodes."""
    batch.tokens["query"] = queries.batch(batch.query_ids)
    batch.tokens["label"] = labels.batch(batch.label_ids)
    for name, ab in batch.anchors.items():
        batch.tokens[f"anchor:{name}"] = anchors[name].batch(ab.ids)
    return batch


class Prefetcher:
    """Builds batches on a background thread (numpy and scipy release the GIL) a few steps ahead."""

    def __init__(self, make: "callable", steps: range, depth: int = 4):
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(make, steps), daemon=True)
        self._thread.start()

    def _run(self, make, steps: range) -> None:
        try:
            for step in steps:
                if self._stop.is_set():
                    return
                self._queue.put(make(step))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            self._queue.put(exc)
        self._queue.put(None)

    def __iter__(self) -> Iterator[Batch]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                self._thread.join(timeout=0.01)
