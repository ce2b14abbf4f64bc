"""Peer: hnswlib with the cosine space, as a user would write it."""
from __future__ import annotations

import hnswlib
import numpy as np

name = "hnswlib"
version = getattr(hnswlib, "__version__", "?")


class Index:
    def __init__(self, dim: int, *, connectivity: int = 16, expansion_add: int = 128) -> None:
        self.dim, self.connectivity, self.expansion_add = dim, connectivity, expansion_add
        self.index = None
        self.threads = 1

    def add(self, vectors: np.ndarray, threads: int) -> None:
        self.index = hnswlib.Index(space="cosine", dim=self.dim)
        self.index.init_index(max_elements=len(vectors), ef_construction=self.expansion_add, M=self.connectivity)
        self.index.add_items(vectors, np.arange(len(vectors)), num_threads=threads)

    def set_expansion_search(self, ef: int) -> None:
        self.index.set_ef(ef)

    def set_threads(self, threads: int) -> None:
        self.threads = threads

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        labels, distances = self.index.knn_query(queries, k=k, num_threads=self.threads)
        return labels.astype(np.int64), 1.0 - distances

    def nbytes(self, folder: str) -> int:
        import os

        path = os.path.join(folder, "hnswlib.bin")
        self.index.save_index(path)
        return os.path.getsize(path)
