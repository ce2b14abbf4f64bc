"""Peer: faiss IndexHNSWFlat over inner product on L2-normalised vectors, as a user would write it."""
from __future__ import annotations

import faiss
import numpy as np

name = "faiss-hnsw"
version = faiss.__version__


class Index:
    def __init__(self, dim: int, *, connectivity: int = 16, expansion_add: int = 128) -> None:
        self.index = faiss.IndexHNSWFlat(dim, connectivity, faiss.METRIC_INNER_PRODUCT)
        self.index.hnsw.efConstruction = expansion_add

    def add(self, vectors: np.ndarray, threads: int) -> None:
        x = np.ascontiguousarray(vectors, dtype=np.float32).copy()
        faiss.normalize_L2(x)
        faiss.omp_set_num_threads(threads)
        self.index.add(x)

    def set_expansion_search(self, ef: int) -> None:
        self.index.hnsw.efSearch = ef

    def set_threads(self, threads: int) -> None:
        faiss.omp_set_num_threads(threads)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32).copy()
        faiss.normalize_L2(q)
        scores, ids = self.index.search(q, k)
        return ids, scores

    def nbytes(self, folder: str) -> int:
        return int(faiss.serialize_index(self.index).nbytes)
