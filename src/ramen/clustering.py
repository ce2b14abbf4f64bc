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

    Each batch holds batch_size // cluster_size full clusters; the full clusters left over and the
    one short cluster make a last, smaller batch (`cluster_batch_count` counts them beforehand).
    """
    size = min(cluster_size, batch_size)
    clusters = balanced_clusters(emb, size, seed=seed)
    order = np.random.default_rng([seed, 1]).permutation(len(clusters))
    full = [ids[clusters[c]] for c in order if len(clusters[c]) == size]
    short = [ids[clusters[c]] for c in order if len(clusters[c]) != size and len(clusters[c])]
    per_batch = batch_size // size
    groups = [full[i:i + per_batch] for i in range(0, len(full), per_batch)]
    if groups and len(groups[-1]) < per_batch:  # the leftover full clusters join the short one
        short = groups.pop() + short
    return [np.concatenate(g) for g in groups] + ([np.concatenate(short)] if short else [])


def cluster_batch_count(n: int, cluster_size: int, batch_size: int) -> tuple[int, bool]:
    """(how many batches `cluster_batches` makes of `n` rows, whether the last is short): whole
    clusters of exactly the size but one fill each batch with batch_size // cluster_size of them, and
    the short cluster and any clusters left over share the last. Counts a run's steps before any
    clustering."""
    size = min(cluster_size, batch_size)
    full_clusters, short = divmod(n, size)
    per_batch = batch_size // size
    full_batches, left = divmod(full_clusters, per_batch)
    partial = bool(left or short)
    return full_batches + partial, partial and full_batches > 0
