"""Peer: the XC repository's sparse text format read and written the way Python XC code usually does
it (pyxclib's pure-Python helpers, NGAME/DEXML-style loaders): line by line, split on spaces and ':'.

Written for the `data` benchmark suite; it follows the format (header `rows cols`, one row per line,
`col:value` entries, an empty line is an empty row) and returns the same CSR as ramen.read_sparse.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def read_sparse_file(path: str) -> sp.csr_matrix:
    with open(path, encoding="utf-8") as f:
        num_rows, num_cols = map(int, f.readline().split())
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for line in f:
            for token in line.split():
                col, value = token.split(":")
                indices.append(int(col))
                data.append(float(value))
            indptr.append(len(indices))
    m = sp.csr_matrix((np.array(data, dtype=np.float32), np.array(indices, dtype=np.int32),
                       np.array(indptr, dtype=np.int64)), shape=(num_rows, num_cols))
    m.sort_indices()
    return m


def write_sparse_file(m: sp.csr_matrix, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        print(f"{m.shape[0]} {m.shape[1]}", file=f)
        for i in range(m.shape[0]):
            lo, hi = m.indptr[i], m.indptr[i + 1]
            f.write(" ".join(f"{c}:{v}" for c, v in zip(m.indices[lo:hi].tolist(), m.data[lo:hi].tolist())) + "\n")
