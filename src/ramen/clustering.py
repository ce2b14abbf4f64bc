"""Balanced clusters of unit vectors by recursive balanced 2-means on cosine (NGAME's batching); the
splits run in C++ (`ramen._C.balanced_clusters`)."""
from __future__ import annotations

import numpy as np


def balanced_clusters(emb: np.ndarray, cluster_size: int, *, seed: int = 0, iters: int = 8,
                      num_threads: int | None = None) -> list[np.ndarray]:
    """Row indices of `emb` (N x D, unit rows) in clusters of exactly `cluster_size` rows but one
    (N mod cluster_size): whole clusters then fill a batch whose size is a multiple of it. The same
    clusters for any `num_threads` (None: every core)."""
    from ramen import _C

    if isinstance(cluster_size, bool) or not isinstance(cluster_size, (int, np.integer)) or cluster_size < 1:
        raise ValueError(f"cluster_size must be an integer >= 1, got {cluster_size!r}")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 1:
        raise ValueError(f"iters must be an integer >= 1, got {iters!r}")
    emb = np.ascontiguousarray(emb, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[1] < 1:
        raise ValueError(f"emb must be 2-d (rows, dim) with dim >= 1, got shape {emb.shape}")
    if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer))
                                    or num_threads < 1):
        raise ValueError(f"num_threads must be None or an integer >= 1, got {num_threads!r}")
    order, starts = _C.balanced_clusters(emb, cluster_size=int(cluster_size), seed=int(seed) % 2**64,
                                         iters=int(iters), num_threads=int(num_threads or 0))
    return np.split(order, starts[1:-1]) if len(starts) > 1 else []


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
