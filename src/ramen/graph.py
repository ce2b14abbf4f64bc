"""Metadata graphs: densification by random walks with restart, and pruning by embedding similarity.

RAMEN densifies its item-anchor graphs with random walks before training and prunes them with the
encoder during training. The work runs in multithreaded C++ (`ramen._C`) on scipy CSR matrices as
they are (int32 or int64 indices, no copies of the graph); every result is the same for any
number of threads, because each random draw is a pure function of (seed, start node, hop).

Walks use only the structure of a matrix: stored entries are edges (a duplicate entry is a
parallel edge, an explicit zero is an edge too) and the values are ignored. Memory: the graph,
the output, and a few MB of scratch per thread; the bipartite walks also build the transposed
structure (one index per edge).

Randomness: hop h (from 0) of the walk from start s draws Philox-4x32-10 words keyed by the 64-bit
seed at counter (h, s mod 2^32, s >> 32, block). Word 0 of block 0 decides the restart (when its
top 24 bits are below ceil(float32(restart_prob) * 2^24)); words 1 and 2 pick the edges by Lemire's
unbiased multiply-shift, rejections drawing from blocks 1, 3, ... and 2, 4, ... respectively.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from ramen._build import load_C
from ramen.progress import bar as progress_bar

__all__ = ["random_walk_with_restart", "bipartite_walk", "densify", "prune_edges", "prune_edges_ordered",
           "prune_edges_by_column_blocks", "EDGE_ORDERS"]

EDGE_ORDERS = ("auto", "csr", "bucket")  # prune_edges' visiting orders (same output, different speed)

_MAX_WALK_LENGTH = 1 << 24  # visit counts are float32, exact up to 2^24


def random_walk_with_restart(
    adj: sp.spmatrix | sp.sparray,
    starts: np.ndarray | None = None,
    *,
    walk_length: int = 400,
    restart_prob: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    num_threads: int | None = None,
    progress: bool | None = None,
) -> sp.csr_matrix:
    """Visit counts of random walks with restart on a square adjacency: (len(starts), n) float32.

    Row r counts how often each node is landed on by a walk of `walk_length` hops from `starts[r]`
    (every node when None), uniform over a node's out-edges. Hop 1 leaves the start; before each
    later hop the walker returns to the start with probability `restart_prob`; a node without
    out-edges sends the walker back to the start (that hop lands on the start). With `top_k`, each
    row keeps its k most visited nodes (ties go to the lower node id). Rows are sorted by node id.
    `progress`: a tqdm bar (None: only on a terminal).
    """
    indptr, indices, (n, m) = _csr_structure(adj, "adj")
    if n != m:
        raise ValueError(f"adj must be square (a node -> node adjacency), got shape {(n, m)}")
    starts = _starts(starts, n, "starts")
    options = _walk_options(walk_length, restart_prob, top_k, seed, num_threads)
    kernel = load_C().random_walk_with_restart
    out = _with_progress(
        len(starts), progress, "random walks",
        lambda report: kernel(indptr, indices, n, starts, progress=report, **options),
    )
    return _csr_result(out, (len(starts), n))


def bipartite_walk(
    Y: sp.spmatrix | sp.sparray,
    starts: np.ndarray | None = None,
    *,
    walk_length: int = 400,
    restart_prob: float = 0.8,
    top_k: int | None = None,
    seed: int = 0,
    num_threads: int | None = None,
    self_loops: bool = True,
    progress: bool | None = None,
) -> sp.csr_matrix:
    """Column visit counts of walks column -> row -> column on a rows x cols matrix: (len(starts), cols).

    The walk of ECLARE and SiameseXML: one hop goes from the current column to a uniform linked
    row of Y and on to a uniform linked column of that row; the restart rule is that of
    `random_walk_with_restart` (hop 1 leaves the start column, later hops return to it first with
    probability `restart_prob`, a column without rows sends the walker back to it). `starts` are
    column ids (every column when None). With `top_k`, each row keeps its k most visited columns
    (ties to the lower id); with `self_loops`, every start also keeps an edge to itself, weighted by
    its visit count or 1 if it was never landed on.
    """
    indptr, indices, (rows, cols) = _csr_structure(Y, "Y")
    starts = _starts(starts, cols, "starts")
    options = _walk_options(walk_length, restart_prob, top_k, seed, num_threads)
    t_indptr, t_indices = _transpose_structure(indptr, indices, rows, cols, options["num_threads"])
    kernel = load_C().bipartite_walk
    out = _with_progress(
        len(starts), progress, "bipartite walks",
        lambda report: kernel(indptr, indices, t_indptr, t_indices, rows, cols, starts, starts_are_rows=False,
                              keep_extra=bool(self_loops), progress=report, **options),
    )
    return _csr_result(out, (len(starts), cols))


def densify(
    E: sp.spmatrix | sp.sparray,
    *,
    walk_length: int = 400,
    restart_prob: float = 0.8,
    top_k: int = 10,
    seed: int = 0,
    num_threads: int | None = None,
    progress: bool | None = None,
) -> sp.csr_matrix:
    """The items x anchors graph RAMEN trains on: E's edges plus up to `top_k` new anchors per item.

    How the walk composes with E: it runs on the bipartite item-anchor graph from every item i.
    A restart hop (hop 1, and each later hop with probability r = `restart_prob`) goes from i to
    a uniform anchor of E[i]; any other hop goes from the current anchor to a uniform item linked
    to it and on to a uniform anchor of that item (anchor -> item -> anchor). Every hop lands on
    an anchor, and landings are counted over `walk_length` = L hops. With P = D_I^-1 E (rows
    normalised) and T = D_A^-1 E^T D_I^-1 E (the anchor -> item -> anchor transition), row i of
    counts / L is in expectation the mean of pi_1..pi_L, where pi_1 = P[i] and
    pi_h = r P[i] + (1 - r) pi_(h-1) T; for long walks this tends to
    r P[i] (I + (1 - r) T + (1 - r)^2 T^2 + ...): item i's own anchors, smoothed over the anchors
    that co-occur with them on other items, each further step of co-occurrence damped by (1 - r).

    The result (items x anchors, float32, rows sorted) keeps every edge of E and adds, per item,
    the `top_k` most visited anchors that E[i] lacks; every edge is weighted by its visit frequency
    (count / L; an edge of E the walk never landed on gets 1 / L). Walks only ever add edges.

    Why new anchors are ranked apart from E's: an item's own anchors take at least r / deg of its
    hops each, so they always top the visit ranking, and a top k over all anchors would add nothing
    to any item with k or more anchors (most items: 38.9 anchors per query on average in
    LF-WikiSeeAlsoTitles-320K). Ranked apart, every item gains up to top_k anchors reached through
    items sharing its anchors, the missing links densification is for; the noisy ones are what
    `prune_edges` removes during training. top_k = 10 is the XC group's choice (ECLARE and
    SiameseXML keep the top 10 per row). Walking from items costs items x L hops and bounds the
    edges added per item row, the rows the training sampler draws anchors from.

    Ties among equally visited anchors go by a hash of (seed, item, anchor), uniform and
    reproducible, not by id: at the paper's settings most new anchors are landed on once (88% on
    the power-law benchmark graph), and ranking those by id would favour low anchor ids. Keep the
    new edges with weight >= 2 / L for those visited more than once. Items without anchors give
    empty rows.
    """
    indptr, indices, (rows, cols) = _csr_structure(E, "E")
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    options = _walk_options(walk_length, restart_prob, top_k, seed, num_threads)
    t_indptr, t_indices = _transpose_structure(indptr, indices, rows, cols, options["num_threads"])
    starts = np.arange(rows, dtype=np.int64)
    kernel = load_C().bipartite_walk
    out = _with_progress(
        rows, progress, "densify",
        lambda report: kernel(indptr, indices, t_indptr, t_indices, rows, cols, starts, starts_are_rows=True,
                              keep_extra=True, progress=report, **options),
    )
    weights = out[2]
    weights /= np.float32(walk_length)  # in place: counts -> visit frequencies
    return _csr_result(out, (rows, cols))


def prune_edges(
    E: sp.spmatrix | sp.sparray,
    row_emb: np.ndarray,
    col_emb: np.ndarray,
    threshold: float = 0.0,
    num_threads: int | None = None,
    *,
    check_finite: bool = True,
    edge_order: str = "auto",
) -> sp.csr_matrix:
    """E without the edges whose endpoints' embeddings have a dot product <= threshold: same shape and values.

    row_emb: (E.shape[0], dim) and col_emb: (E.shape[1], dim), float32 or float16 (float64 is
    converted to float32); the dot product accumulates in float32 (cosine for unit vectors, so
    threshold=0 drops the edges the encoder finds dissimilar). `check_finite` rejects NaN or
    infinite embeddings (one extra read of both matrices). `edge_order` only sets the speed: "csr"
    visits the edges in order, "bucket" groups each block's edges by column range for cache reuse,
    "auto" times both on the first edges and takes the faster (graphs under 4M edges: "csr").
    The random row reads run about 1.3x faster from numpy-allocated embeddings, which numpy backs
    with transparent huge pages, than from torch-allocated ones (`tensor.numpy()`).
    """
    return prune_edges_ordered(E, row_emb, col_emb, threshold, num_threads, check_finite=check_finite,
                               edge_order=edge_order)[0]


def prune_edges_by_column_blocks(
    graphs: Sequence[tuple[sp.spmatrix | sp.sparray, np.ndarray]],
    column_blocks: Iterable[tuple[np.ndarray, np.ndarray]],
    threshold: float = 0.0,
    num_threads: int | None = None,
) -> list[sp.csr_matrix]:
    """`prune_edges(E, row_emb, col_emb)` of each (E, row_emb) in `graphs`, whose columns are the same
    items, with `col_emb` given a block at a time: (column ids, their embeddings) from
    `column_blocks`, each column exactly once. The same graphs, bit for bit, without every column's
    embedding in memory at once (at the paper's 2.46M anchors and 768-d, 7.5 GB as one matrix).
    Costs a transposed copy of each graph and the kept edges beside it."""
    graphs = [(_as_csr(E, f"graphs[{i}]"), np.asarray(emb)) for i, (E, emb) in enumerate(graphs)]
    if not graphs:
        return []
    cols = int(graphs[0][0].shape[1])
    for i, (E, emb) in enumerate(graphs):
        if int(E.shape[1]) != cols:
            raise ValueError(f"graphs[{i}] has {E.shape[1]} columns, graphs[0] has {cols}: "
                             "the graphs must share their columns")
        if emb.ndim != 2 or emb.shape[0] != E.shape[0]:
            raise ValueError(f"graphs[{i}]: row embeddings of shape {emb.shape} for a graph of {E.shape[0]} rows")
        if emb.dtype in (np.float16, np.float32, np.float64) and (row := _first_non_finite_row(emb, num_threads)) >= 0:
            raise ValueError(f"graphs[{i}]: the row embeddings have NaN or infinite values (first in row {row})")
    # a column block is a set of rows of the transpose: its edges are one slice of CSR rows
    transposed = [E.T.tocsr() for E, _ in graphs]
    seen = np.zeros(cols, dtype=bool)
    kept: list[list[tuple[np.ndarray, sp.csr_matrix]]] = [[] for _ in graphs]
    for b, (ids, emb) in enumerate(column_blocks):
        ids = np.asarray(ids)
        if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
            raise ValueError(f"column block {b}: ids must be a 1-d integer array, got {ids.dtype} with {ids.ndim} dims")
        ids = ids.astype(np.int64, copy=False)
        if ids.size and (ids.min() < 0 or ids.max() >= cols):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(f"column block {b} holds column {bad}, outside [0, {cols})")
        if np.shape(emb)[:1] != ids.shape:
            raise ValueError(f"column block {b}: {len(ids)} ids but embeddings of shape {np.shape(emb)}")
        if seen[ids].any() or len(np.unique(ids)) != len(ids):
            raise ValueError(f"column block {b} repeats a column: each column must come exactly once")
        seen[ids] = True
        emb = np.asarray(emb)
        if emb.ndim == 2 and emb.dtype in (np.float16, np.float32, np.float64) \
                and (row := _first_non_finite_row(emb, num_threads)) >= 0:
            raise ValueError(f"column block {b}: the embedding of column {int(ids[row])} has NaN or infinite values")
        for g, (_, row_emb) in enumerate(graphs):
            kept[g].append((ids, prune_edges(transposed[g][ids], emb, row_emb, threshold, num_threads,
                                             check_finite=False)))
    if not seen.all():
        raise ValueError(f"column_blocks left out {int((~seen).sum())} of {cols} columns "
                         f"(first: {int(np.flatnonzero(~seen)[0])}): their edges could not be pruned")
    del transposed
    return [_from_transposed_blocks(kept[g], E.shape, E.dtype) for g, (E, _) in enumerate(graphs)]


def _from_transposed_blocks(parts: list[tuple[np.ndarray, sp.csr_matrix]], shape: tuple[int, int],
                            dtype: np.dtype) -> sp.csr_matrix:
    """The (rows x cols) CSR matrix whose transpose has, at rows `ids`, each part's rows (parallel edges kept)."""
    if not parts:
        return sp.csr_matrix(shape, dtype=dtype)
    order = np.concatenate([ids for ids, _ in parts])
    stacked = sp.vstack([P for _, P in parts], format="csr")
    parts.clear()  # the caller's list: each copy is freed as soon as the next exists
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    stacked = stacked[inverse]
    out = sp.csr_matrix(stacked.T.tocsr(), shape=shape, dtype=dtype)
    del stacked
    out.sort_indices()
    return out


def prune_edges_ordered(
    E: sp.spmatrix | sp.sparray,
    row_emb: np.ndarray,
    col_emb: np.ndarray,
    threshold: float = 0.0,
    num_threads: int | None = None,
    *,
    check_finite: bool = True,
    edge_order: str = "auto",
) -> tuple[sp.csr_matrix, str]:
    """`prune_edges`, and the edge order it used ("csr" or "bucket": what "auto" chose on this machine)."""
    if edge_order not in EDGE_ORDERS:
        raise ValueError(f"edge_order must be one of {EDGE_ORDERS}, got {edge_order!r}")
    E = _as_csr(E, "E")
    indptr, indices, (rows, cols) = _csr_structure(E, "E")
    row_emb, col_emb = _embeddings(row_emb, col_emb, rows, cols)
    threshold = float(threshold)
    if not np.isfinite(threshold):
        raise ValueError(f"threshold must be finite, got {threshold}")
    if check_finite:
        _check_finite(row_emb, "row_emb", num_threads)
        _check_finite(col_emb, "col_emb", num_threads)
    if row_emb.dtype == np.float16:
        row_emb, col_emb = row_emb.view(np.uint16), col_emb.view(np.uint16)
    keep, row_kept, used = load_C().prune_mask(indptr, indices, rows, cols, row_emb, col_emb, threshold=threshold,
                                               edge_order=edge_order, num_threads=_threads(num_threads))
    new_indptr = np.zeros(rows + 1, dtype=np.int64)
    np.cumsum(row_kept, out=new_indptr[1:])
    return sp.csr_matrix(_kept_edges(E, indptr, indices, keep, new_indptr, num_threads), shape=(rows, cols)), used


def _kept_edges(E: Any, indptr: np.ndarray, indices: np.ndarray, keep: np.ndarray, new_indptr: np.ndarray,
                num_threads: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(data, indices, indptr) of the kept edges: a multithreaded copy (numpy masks for odd data types)."""
    rows, cols = (int(x) for x in E.shape)
    nnz = int(indptr[-1])
    data = E.data[:nnz]
    if data.dtype.itemsize in (1, 2, 4, 8) and data.dtype.kind in "biuf":
        new_indices, new_data = load_C().compact_edges(indptr, indices, rows, cols, keep, new_indptr,
                                                       np.ascontiguousarray(data), num_threads=_threads(num_threads))
        return new_data, new_indices, new_indptr
    mask = keep.view(bool)
    return data[mask], indices[:nnz][mask], new_indptr


# ---- validation and plumbing ----------------------------------------------------------------

def _as_csr(matrix: Any, name: str) -> Any:
    """The matrix itself when it is scipy CSR, else its CSR conversion (a copy)."""
    if not sp.issparse(matrix):
        raise TypeError(f"{name} must be a scipy sparse matrix (CSR), got {type(matrix).__name__}")
    return matrix if matrix.format == "csr" else matrix.tocsr()


def _csr_structure(matrix: Any, name: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """indptr and indices of a CSR matrix (no copies for scipy CSR), checked: ValueError naming `name`."""
    matrix = _as_csr(matrix, name)
    rows, cols = (int(x) for x in matrix.shape)
    indptr, indices = matrix.indptr, matrix.indices
    for arr, what in ((indptr, "indptr"), (indices, "indices")):
        if arr.dtype not in (np.int32, np.int64) or arr.ndim != 1:
            raise ValueError(f"{name}.{what} must be a 1-d int32 or int64 array, got {arr.dtype} with {arr.ndim} dims")
    if len(indptr) != rows + 1:
        raise ValueError(f"{name}.indptr must have {rows + 1} entries (rows + 1), got {len(indptr)}")
    indptr, indices = _same_index_dtype(np.ascontiguousarray(indptr), np.ascontiguousarray(indices))
    kind, at, value = load_C().check_csr(indptr, indices, cols, num_threads=0)
    if kind == 1:
        raise ValueError(f"{name}.indptr must start at 0, got {value}")
    if kind == 2:
        raise ValueError(f"{name}.indptr decreases at row {at} ({indptr[at]} -> {value})")
    if kind == 3:
        raise ValueError(f"{name}.indptr ends at {value} but {name}.indices has only {len(indices)} entries")
    if kind == 4:
        raise ValueError(f"{name}.indices holds column {value} (entry {at}), "
                         f"outside [0, {cols}) for shape {(rows, cols)}")
    return indptr, indices, (rows, cols)


def _same_index_dtype(indptr: np.ndarray, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernels take one index type: widen, or narrow indptr (the short array) when its values fit."""
    if indptr.dtype == indices.dtype:
        return indptr, indices
    if indices.dtype == np.int64:
        return indptr.astype(np.int64), indices
    small = np.iinfo(np.int32)
    if len(indptr) == 0 or (indptr.min() >= small.min and indptr.max() <= small.max):
        return indptr.astype(np.int32), indices
    return indptr, indices.astype(np.int64)


def _transpose_structure(indptr: np.ndarray, indices: np.ndarray, rows: int, cols: int,
                         num_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The CSR structure of the transpose (cols x rows), in the same index dtype (C++, multithreaded)."""
    return load_C().transpose_structure(indptr, indices, rows, cols, num_threads=num_threads)


def _starts(starts: Any, n: int, name: str) -> np.ndarray:
    if starts is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(starts)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise ValueError(f"{name} must be a 1-d array of node ids, got dtype {arr.dtype} with {arr.ndim} dims")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"{name} holds node {bad}, outside [0, {n})")
    return arr


def _threads(num_threads: int | None) -> int:
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
    return int(num_threads)


def _walk_options(walk_length: int, restart_prob: float, top_k: int | None, seed: int,
                  num_threads: int | None) -> dict[str, Any]:
    if isinstance(walk_length, bool) or not isinstance(walk_length, (int, np.integer)) \
            or not 1 <= walk_length <= _MAX_WALK_LENGTH:
        raise ValueError(f"walk_length must be an integer in [1, 2^24], got {walk_length!r}")
    try:
        restart_prob = float(restart_prob)
    except (TypeError, ValueError):
        raise ValueError(f"restart_prob must be a number in (0, 1], got {restart_prob!r}") from None
    if not 0.0 < restart_prob <= 1.0:  # also rejects NaN
        raise ValueError(f"restart_prob must be in (0, 1], got {restart_prob}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k must be None or an integer >= 1, got {top_k!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [0, 2^64), got {seed!r}")
    return {"walk_length": int(walk_length), "restart_prob": restart_prob, "top_k": int(top_k or 0),
            "seed": int(seed), "num_threads": _threads(num_threads)}


def _with_progress(total: int, progress: bool | None, desc: str, run: Callable[[Callable[[int], None]], Any]) -> Any:
    """Runs `run(report)` under a tqdm bar; the kernel calls report(done) between batches of starts."""
    with progress_bar(total=total, desc=desc, unit="start", disable=None if progress is None else not progress,
              leave=False) as bar:
        return run(lambda done: bar.update(done - bar.n))


def _csr_result(out: tuple[np.ndarray, np.ndarray, np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    indptr, indices, data = out
    result = sp.csr_matrix((data, indices, indptr), shape=shape)
    result.has_sorted_indices = True  # the kernels emit rows sorted, without duplicates
    return result


def _embeddings(row_emb: Any, col_emb: Any, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    row_emb, col_emb = np.asarray(row_emb), np.asarray(col_emb)
    for arr, name, n, what in ((row_emb, "row_emb", rows, "rows"), (col_emb, "col_emb", cols, "columns")):
        if arr.ndim != 2:
            raise ValueError(f"{name} must be 2-d (n, dim), got shape {arr.shape}")
        if arr.shape[0] != n:
            raise ValueError(f"{name} has {arr.shape[0]} rows but E has {n} {what}")
        if arr.dtype not in (np.float16, np.float32, np.float64):
            raise ValueError(f"{name} must be float16, float32 or float64, got {arr.dtype}")
    if row_emb.shape[1] != col_emb.shape[1]:
        raise ValueError(f"row_emb and col_emb differ in dimension: {row_emb.shape[1]} vs {col_emb.shape[1]}")
    dtype = np.float16 if row_emb.dtype == col_emb.dtype == np.float16 else np.float32
    return np.ascontiguousarray(row_emb, dtype=dtype), np.ascontiguousarray(col_emb, dtype=dtype)


def _check_finite(emb: np.ndarray, name: str, num_threads: int | None) -> None:
    """ValueError naming the first row of `emb` with a NaN or an infinity (one parallel pass in C++)."""
    row = _first_non_finite_row(emb, num_threads)
    if row >= 0:
        raise ValueError(f"{name} has NaN or infinite values (first in row {row})")


def _first_non_finite_row(emb: np.ndarray, num_threads: int | None) -> int:
    """The first row of a float16/32/64 matrix holding a NaN or an infinity, or -1."""
    if emb.dtype not in (np.float16, np.float32):
        bad = ~np.isfinite(emb).all(axis=1)
        return int(np.argmax(bad)) if bad.any() else -1
    bits = np.ascontiguousarray(emb).view(np.uint16) if emb.dtype == np.float16 else np.ascontiguousarray(emb)
    return int(load_C().first_non_finite(bits, num_threads=_threads(num_threads)))
