"""A graph-at-inference baseline in the spirit of OAK (Mohan et al., 2024): enrich the query with
the anchors retrieved for it, then search the labels.

OAK retrieves auxiliary items (anchors) for a document and fuses their embeddings with the
document's in a trained combiner before searching labels. This peer keeps that inference
pipeline (encode, anchor search, combine, label search) with a parameter-free combiner, so its
accuracy is what the anchors add to a trained encoder without training anything more, and its
latency the least a graph-at-inference method pays on top of the encoder:

    q' = normalize(q + alpha * sum_j w_j a_j / sum_j w_j),  w_j = max(cos(q, a_j), 0)

over the top-m anchors a_j of q (all anchor sets in one index). `alpha` and `m` are chosen on
held-out training queries (never on test). The "oracle links" variant uses the query's own links
in the metadata graph (uniform weights) instead of retrieved anchors, like the paper's "OAK +
Oracle" (Table 4): what a method handed the test query's graph could add; no deployed system has
those links for a novel query.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ramen.index import LabelIndex, normalize


def mix(q: np.ndarray, anchors: np.ndarray, ids: np.ndarray, weights: np.ndarray, alpha: float) -> np.ndarray:
    """Unit rows of q (n, d) + alpha * the weights-weighted mean of anchors[ids] (n, m); id -1 and
    zero weights add nothing; a row whose weights are all zero stays q."""
    w = np.where(ids >= 0, np.maximum(weights, 0.0), 0.0).astype(np.float32)
    total = w.sum(axis=1, keepdims=True)
    context = np.einsum("nm,nmd->nd", w, anchors[np.maximum(ids, 0)])
    context = np.divide(context, total, out=np.zeros_like(context), where=total > 0)
    out = q + np.float32(alpha) * context
    return out / np.linalg.norm(out, axis=1, keepdims=True)


class AnchorAugmented:
    """Anchor embeddings (A, d) in a cosine index; `enrich(q, m, alpha)` returns the enriched queries."""

    def __init__(self, anchors: np.ndarray, *, exact: bool = True):
        self.anchors = normalize(anchors, anchors.shape[1], "anchors")
        self.index = LabelIndex(anchors.shape[1], exact=exact)
        self.index.add(np.arange(len(self.anchors), dtype=np.int64), self.anchors)

    def retrieve(self, q: np.ndarray, m: int, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(anchor ids, cosines), each (n, m), best first."""
        return self.index.search(q, m, threads=threads)

    def enrich(self, q: np.ndarray, m: int, alpha: float, *, threads: int | None = None) -> np.ndarray:
        if alpha == 0.0 or m == 0:
            return q
        ids, scores = self.retrieve(q, m, threads=threads)
        return mix(q, self.anchors, ids, scores, alpha)


def enrich_with_links(q: np.ndarray, anchors: np.ndarray, links: sp.csr_matrix, alpha: float) -> np.ndarray:
    """q (n, d) mixed with the uniform mean of each row's linked anchors (links: n x A CSR)."""
    links = sp.csr_matrix(links)
    width = max(int(np.diff(links.indptr).max(initial=0)), 1)
    ids = np.full((len(q), width), -1, dtype=np.int64)
    for r in range(len(q)):
        cols = links.indices[links.indptr[r]:links.indptr[r + 1]]
        ids[r, :len(cols)] = cols
    return mix(q, anchors, ids, np.ones(ids.shape, np.float32), alpha)
