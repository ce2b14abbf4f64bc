"""Peers of ramen.graph as a user would write them: numba walks and a numpy pruning loop.

The walks follow ramen.graph's definitions (hop 1 leaves the start; before each later hop the
walker returns to the start with probability restart_prob; a node without out-edges sends it back
to the start) the straightforward way, as the XC group's ECLARE-style code does: `njit(parallel=True)`
with `np.random` inside `prange` (numba keeps one generator per thread, so results change with the
thread count), landings stored in an (n_starts, walk_length) array, then counted by scipy's
COO -> CSR conversion, which sums duplicates.
"""
from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp


@numba.njit
def seed(value: int) -> None:
    """Seeds numba's generator of the calling thread (the prange workers keep their own)."""
    np.random.seed(value)


@numba.njit(parallel=True)
def walk_landings(indptr, indices, starts, walk_length, restart_prob):
    """(len(starts), walk_length) landings of walks with restart on a square CSR adjacency."""
    out = np.empty((starts.shape[0], walk_length), dtype=indices.dtype)
    for i in numba.prange(starts.shape[0]):
        s = starts[i]
        cur = s
        for h in range(walk_length):
            if h > 0 and np.random.random() < restart_prob:
                cur = s
            lo, hi = indptr[cur], indptr[cur + 1]
            if hi == lo:
                cur = s
            else:
                cur = indices[np.random.randint(lo, hi)]
            out[i, h] = cur
    return out


@numba.njit(parallel=True)
def bipartite_landings(indptr, indices, t_indptr, t_indices, starts, walk_length, restart_prob):
    """(len(starts), walk_length) column landings of column -> row -> column walks on Y (Yt: its transpose)."""
    out = np.empty((starts.shape[0], walk_length), dtype=indices.dtype)
    for i in numba.prange(starts.shape[0]):
        s = starts[i]
        cur = s
        for h in range(walk_length):
            if h > 0 and np.random.random() < restart_prob:
                cur = s
            lo, hi = t_indptr[cur], t_indptr[cur + 1]
            if hi == lo:
                cur = s
            else:
                row = t_indices[np.random.randint(lo, hi)]
                cur = indices[np.random.randint(indptr[row], indptr[row + 1])]
            out[i, h] = cur
    return out


def count_landings(landings: np.ndarray, num_cols: int) -> sp.csr_matrix:
    """Visit counts per start, as ECLARE-style code builds them: a COO matrix of ones summed into CSR."""
    n, length = landings.shape
    rows = np.repeat(np.arange(n, dtype=np.int32), length)
    ones = np.ones(n * length, dtype=np.float32)
    return sp.coo_matrix((ones, (rows, landings.ravel())), shape=(n, num_cols)).tocsr()


def random_walk_with_restart(adj: sp.csr_matrix, starts: np.ndarray, walk_length: int = 400,
                             restart_prob: float = 0.8) -> sp.csr_matrix:
    landings = walk_landings(adj.indptr, adj.indices, starts, walk_length, restart_prob)
    return count_landings(landings, adj.shape[1])


def bipartite_walk(Y: sp.csr_matrix, starts: np.ndarray, walk_length: int = 400,
                   restart_prob: float = 0.8) -> sp.csr_matrix:
    Yt = Y.T.tocsr()
    landings = bipartite_landings(Y.indptr, Y.indices, Yt.indptr, Yt.indices, starts, walk_length, restart_prob)
    return count_landings(landings, Y.shape[1])


def prune_edges(E: sp.csr_matrix, row_emb: np.ndarray, col_emb: np.ndarray, threshold: float = 0.0,
                batch: int = 1 << 16) -> sp.csr_matrix:
    """Keeps edges whose embeddings' dot product (in float32) is > threshold, batch by batch in numpy."""
    rows = np.repeat(np.arange(E.shape[0], dtype=np.int32), np.diff(E.indptr))
    keep = np.empty(E.nnz, dtype=bool)
    for b in range(0, E.nnz, batch):
        r, c = rows[b:b + batch], E.indices[b:b + batch]
        score = np.einsum("ij,ij->i", row_emb[r].astype(np.float32), col_emb[c].astype(np.float32))
        keep[b:b + batch] = score > threshold
    counts = np.bincount(rows[keep], minlength=E.shape[0])
    indptr = np.concatenate([[0], np.cumsum(counts)])
    return sp.csr_matrix((E.data[keep], E.indices[keep], indptr), shape=E.shape)
