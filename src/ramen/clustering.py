"""Balanced clusters of unit vectors by recursive balanced 2-means on cosine (NGAME's batching)."""
from __future__ import annotations

import numpy as np


def _split(emb: np.ndarray, index: np.ndarray, rng: np.random.Generator, iters: int,
           first: int) -> tuple[np.ndarray, np.ndarray]:
    """Splits `index` around two cosine centroids into the `first` rows nearest the first centroid
    (by preference for it over the second) and the rest: a balanced 2-means of set sizes."""
    x = emb[index]
    a, b = rng.choice(len(index), size=2, replace=False)
    ca, cb = x[a].copy(), x[b].copy()
    order = None
    for _ in range(iters):
        order = np.argsort(-(x @ (ca - cb)), kind="stable")
        ca = x[order[:first]].sum(0)
        cb = x[order[first:]].sum(0)
        ca /= max(np.linalg.norm(ca), 1e-12)
        cb /= max(np.linalg.norm(cb), 1e-12)
    return index[order[:first]], index[order[first:]]


def balanced_clusters(emb: np.ndarray, cluster_size: int, *, seed: int = 0, iters: int = 8) -> list[np.ndarray]:
    """Row indices of `emb` (N x D, unit rows) in clusters of exactly `cluster_size` rows but one
    (N mod cluster_size): whole clusters then fill a batch whose size is a multiple of it."""
    if cluster_size < 1:
        raise ValueError(f"cluster_size must be >= 1, got {cluster_size}")
    emb = np.asarray(emb, dtype=np.float32)
    rng = np.random.default_rng(seed)
    pending = [np.arange(len(emb))]
    done: list[np.ndarray] = []
    while pending:
        index = pending.pop()
        if len(index) <= cluster_size:
            done.append(index)
            continue
        clusters = -(-len(index) // cluster_size)  # the first part gets half of them, all full
        pending.extend(_split(emb, index, rng, iters, cluster_size * (clusters // 2)))
    done.sort(key=lambda c: int(c.min()) if len(c) else -1)
    return done


def cluster_batches(emb: np.ndarray, ids: np.ndarray, cluster_size: int, batch_size: int, *,
                    seed: int = 0) -> list[np.ndarray]:
    """Batches of `ids` made of whole balanced clusters of their embeddings, in a seeded random order.

    Clusters are packed in order into batches of at most `batch_size` rows; a cluster never
    straddles two batches. The one short cluster goes last, so that only the last batch is short
    where the cluster size divides the batch size.
    """
    size = min(cluster_size, batch_size)
    clusters = balanced_clusters(emb, size, seed=seed)
    order = np.random.default_rng([seed, 1]).permutation(len(clusters))
    order = np.concatenate([order[[len(clusters[c]) == size for c in order]],
                            order[[len(clusters[c]) != size for c in order]]])
    batches: list[np.ndarray] = []
    current: list[np.ndarray] = []
    filled = 0
    for c in order:
        if filled + len(clusters[c]) > batch_size and current:
            batches.append(np.concatenate(current))
            current, filled = [], 0
        current.append(ids[clusters[c]])
        filled += len(clusters[c])
    if current:
        batches.append(np.concatenate(current))
    return batches
