"""Peer: exact cosine top-k by a numpy matmul and argpartition, as a user would write it."""
from __future__ import annotations

import numpy as np

name = "numpy-exact"
version = np.__version__


class Index:
    def __init__(self, dim: int, **_: object) -> None:
        self.x = np.empty((0, dim), np.float32)

    def add(self, vectors: np.ndarray, threads: int) -> None:
        self.x = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def set_expansion_search(self, ef: int) -> None:
        pass

    def set_threads(self, threads: int) -> None:
        pass  # BLAS decides

    def search(self, queries: np.ndarray, k: int, chunk: int = 256) -> tuple[np.ndarray, np.ndarray]:
        q = np.atleast_2d(queries)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        ids, scores = [], []
        for start in range(0, len(q), chunk):  # bound the (chunk, n) score matrix
            s = q[start:start + chunk] @ self.x.T
            top = np.argpartition(-s, k - 1, axis=1)[:, :k]
            top_s = np.take_along_axis(s, top, axis=1)
            order = np.argsort(-top_s, axis=1)
            ids.append(np.take_along_axis(top, order, axis=1))
            scores.append(np.take_along_axis(top_s, order, axis=1))
        return np.concatenate(ids), np.concatenate(scores)

    def nbytes(self, folder: str) -> int:
        return self.x.nbytes
