"""Content digests: the keys of a run's caches and the fingerprint of the data a run was started on,
so that a cache or a checkpoint is reused only for the content that made it."""
from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np
import scipy.sparse as sp


def _update(h: "hashlib._Hash", part: Any) -> None:
    if sp.issparse(part):
        m = sp.csr_matrix(part)
        h.update(f"csr{m.shape}{m.dtype}".encode())
        for a in (m.indptr, m.indices, m.data):
            h.update(np.ascontiguousarray(a).view(np.uint8))  # through the buffer: no copy of a large array
    elif isinstance(part, np.ndarray):
        h.update(f"ndarray{part.shape}{part.dtype}".encode())
        h.update(np.ascontiguousarray(part).reshape(-1).view(np.uint8))
    elif isinstance(part, list) and all(isinstance(t, str) for t in part):
        h.update(b"texts")
        h.update(texts_digest(part).encode())
    else:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    h.update(b"\x00")


def content_key(*parts: Any) -> str:
    """A short hash of `parts` (sparse matrices, arrays, lists of texts, or JSON-able values), each
    with its type, shape and dtype: a cache entry's name."""
    h = hashlib.sha1()
    for p in parts:
        _update(h, p)
    return h.hexdigest()[:16]


def texts_digest(texts: list[str]) -> str:
    """A hash of every text in order (a text edited anywhere gives another digest)."""
    h = hashlib.sha1()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def data_fingerprint(dataset: Any) -> dict[str, str]:
    """A digest per part of a Dataset that a run reads: its training queries (texts and labels), the
    labels, the test split it evaluates on, each anchor set and the propensity constants. A resumed
    run or selection compares these and names the parts that differ."""
    out = {"training queries": content_key(dataset.train_texts, dataset.train_Y),
           "labels": content_key(dataset.label_texts),
           "test split": content_key(dataset.test_texts, dataset.test_Y,
                                     None if dataset.test_filter is None else np.asarray(dataset.test_filter)),
           "propensity constants": content_key(float(dataset.A), float(dataset.B))}
    for name, a in sorted(dataset.anchor_sets.items()):
        out[f"anchor set {name!r}"] = content_key(a.texts, a.train_X_A, a.label_A, a.test_X_A)
    return out


def differing(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """The parts of two fingerprints that differ (present in one only, or with another digest)."""
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
