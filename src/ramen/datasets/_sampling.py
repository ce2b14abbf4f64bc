"""Vectorised sampling over ragged arrays and CSR rows (no Python loop per row): ramen.synthetic.

A ragged array is (ptr, values): row i is values[ptr[i]:ptr[i+1]].
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

REDRAWS = 4  # rounds of redrawing repeated entries before they merge or are dropped


def zipf_cdf(n: int, a: float) -> np.ndarray:
    """Cumulative probabilities of ranks 1..n with P(k) ∝ k^-a."""
    w = np.cumsum(np.arange(1, n + 1, dtype=np.float64) ** -a)
    return w / w[-1]


def draw_cdf(rng: np.random.Generator, cdf: np.ndarray, size: int) -> np.ndarray:
    """`size` indices drawn from the distribution with cumulative probabilities `cdf`."""
    return np.minimum(search(cdf, rng.random(size)), len(cdf) - 1)


def search(sorted_values: np.ndarray, x: np.ndarray) -> np.ndarray:
    """np.searchsorted(sorted_values, x, side="right"), with x sorted first when large (the
    lookups then walk memory in order: several times faster on millions of draws)."""
    if len(x) < 1 << 16:
        return np.searchsorted(sorted_values, x, side="right")
    order = np.argsort(x)
    out = np.empty(len(x), dtype=np.int64)
    out[order] = np.searchsorted(sorted_values, x[order], side="right")
    return out


def ragged(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ptr (n + 1,) and the owner of each of the sum(lengths) slots."""
    ptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return ptr, np.repeat(np.arange(len(lengths)), lengths)


def pick_neighbour(rng: np.random.Generator, ptr: np.ndarray, idx: np.ndarray,
                   rows: np.ndarray) -> np.ndarray:
    """A uniform entry of each row of a ragged array (each row non-empty)."""
    deg = ptr[rows + 1] - ptr[rows]
    return idx[ptr[rows] + (rng.random(len(rows)) * deg).astype(np.int64)]


def replace_rows(ptr: np.ndarray, tok: np.ndarray, rows: np.ndarray, new_ptr: np.ndarray,
                 new_tok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ragged arrays with the rows `rows` (sorted) replaced by the ragged rows new_ptr, new_tok."""
    lengths = np.diff(ptr)
    replaced = np.zeros(len(lengths), dtype=bool)
    replaced[rows] = True
    lengths[rows] = np.diff(new_ptr)
    out_ptr, owner = ragged(lengths)
    out = np.empty(out_ptr[-1], dtype=np.int64)
    out[~replaced[owner]] = tok[~replaced[np.repeat(np.arange(len(replaced)), np.diff(ptr))]]
    out[replaced[owner]] = new_tok
    return out_ptr, out


def keep_nonzeros(A: sp.csr_matrix, mask: np.ndarray) -> sp.csr_matrix:
    """The nonzeros of A where `mask` (aligned with A.data) holds."""
    rows = np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))[mask]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=A.shape[0]))])
    return sp.csr_matrix((A.data[mask], A.indices[mask], indptr), shape=A.shape)


class Grouped:
    """Items sorted by group with cumulative weights, for weighted draws inside one group."""

    def __init__(self, group: np.ndarray, weight: np.ndarray, n_groups: int) -> None:
        self.order = np.argsort(group, kind="stable")
        self.ptr = np.searchsorted(group[self.order], np.arange(n_groups + 1))
        self.cw = np.cumsum(weight[self.order])
        cw0 = np.concatenate([[0.0], self.cw])
        self.base, self.total = cw0[self.ptr[:-1]], cw0[self.ptr[1:]] - cw0[self.ptr[:-1]]

    def size(self, groups: np.ndarray) -> np.ndarray:
        return self.ptr[groups + 1] - self.ptr[groups]

    def draw(self, rng: np.random.Generator, groups: np.ndarray) -> np.ndarray:
        """One item per entry of `groups` (each group non-empty), ∝ weight within its group."""
        target = self.base[groups] + rng.random(len(groups)) * self.total[groups]
        idx = search(self.cw, target)
        return self.order[np.clip(idx, self.ptr[groups], self.ptr[groups + 1] - 1)]


def draw_unique(rows: np.ndarray, kind: np.ndarray,
                draw: Callable[[np.ndarray, np.ndarray, bool], np.ndarray], n_cols: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns cols = draw(rows, kind, again=False) of pairs (row, col); a pair that repeats is
    drawn again by draw(rows, kind, again=True), `REDRAWS` rounds at most. kind is in 0..7.
    Returns rows, cols, kind sorted by (row, col, kind), repeats left in. n_rows * n_cols < 2^60."""
    cols = draw(rows, kind, False)
    for round_ in range(REDRAWS + 1):
        key = np.sort(((rows.astype(np.int64) * n_cols + cols) << 3) | kind)
        pair = key >> 3
        rows, cols, kind = pair // n_cols, pair % n_cols, key & 7
        again = np.flatnonzero(pair[1:] == pair[:-1]) + 1
        if len(again) == 0 or round_ == REDRAWS:
            break
        cols[again] = draw(rows[again], kind[again], True)
    return rows, cols, kind


def csr_unique(rows: np.ndarray, cols: np.ndarray, kind: np.ndarray, random_kind: int,
               shape: tuple[int, int]) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary CSR (sorted, no duplicates) of pairs sorted by (row, col, kind), and for each nonzero
    whether it was drawn only as `random_kind` (the largest kind)."""
    first = np.ones(len(rows), dtype=bool)
    first[1:] = (rows[1:] != rows[:-1]) | (cols[1:] != cols[:-1])
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[first], minlength=shape[0]))])
    csr = sp.csr_matrix((np.ones(int(first.sum()), dtype=np.float32), cols[first].astype(np.int32),
                         indptr.astype(np.int64)), shape=shape)
    return csr, kind[first] == random_kind


def without_repeats(ptr: np.ndarray, owner: np.ndarray, draw: Callable[[np.ndarray], np.ndarray]
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Ragged rows of values draw(slots) (slot i in row owner[i]) in which a value repeated within
    a row is drawn again (`REDRAWS` rounds at most), then dropped; a row's first value stays."""
    tok = draw(np.arange(len(owner)))
    for round_ in range(REDRAWS + 1):
        order = np.lexsort((np.arange(len(tok)), tok, owner))
        same = (owner[order[1:]] == owner[order[:-1]]) & (tok[order[1:]] == tok[order[:-1]])
        repeat = np.sort(order[1:][same])
        if len(repeat) == 0 or round_ == REDRAWS:
            break
        tok[repeat] = draw(repeat)
    keep = np.ones(len(tok), dtype=bool)
    keep[repeat] = False
    return ragged(np.bincount(owner[keep], minlength=len(ptr) - 1))[0], tok[keep]


def text_hash(ptr: np.ndarray, tok: np.ndarray) -> np.ndarray:
    """A 64-bit hash of each (non-empty) row's sequence: equal rows hash equal; unequal rows
    rarely do (callers treat a match as "maybe equal")."""
    mult = np.random.Generator(np.random.PCG64(0x5EED)).integers(
        1, 2 ** 63, size=64, dtype=np.uint64) | np.uint64(1)
    pos = np.arange(len(tok)) - np.repeat(ptr[:-1], np.diff(ptr))
    h = tok.astype(np.uint64) * mult[pos % 64] + pos.astype(np.uint64)
    return np.add.reduceat(h, ptr[:-1]) if len(tok) else np.zeros(0, dtype=np.uint64)
