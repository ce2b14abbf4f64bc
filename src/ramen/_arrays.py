"""Growable arrays: the amortised doubling that the label index and the HNSW graph share."""
from __future__ import annotations

import numpy as np


def grow_rows(a: np.ndarray, rows: int, *, fill: int = 0, minimum: int = 1024) -> np.ndarray:
    """`a` itself when it has `rows` rows, else a copy with room for at least max(rows, 2 len(a),
    `minimum`) rows, the new ones set to `fill`: appends stay O(1) amortised."""
    if rows <= len(a):
        return a
    out = np.full((max(rows, 2 * len(a), minimum), *a.shape[1:]), fill, a.dtype)
    out[: len(a)] = a
    return out
