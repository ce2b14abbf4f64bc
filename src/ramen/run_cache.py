"""A run's disk cache (RUN_DIR/cache): token ids and densified graphs under keys of the content that
made them, so that a resumed or repeated run reads them instead of computing them again."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ramen.encoder import Encoder
from ramen.tokens import TokenCache


def content_key(*parts: Any) -> str:
    """A short hash of `parts` (sparse matrices, arrays, or JSON-able values): a cache entry's name."""
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, sp.spmatrix):
            p = p.tocsr()
            for a in (p.indptr, p.indices, p.data):
                h.update(np.ascontiguousarray(a).tobytes())
            h.update(str(p.shape).encode())
        elif isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def texts_digest(texts: list[str]) -> str:
    """A hash of every text in order (a text edited anywhere makes another cache entry)."""
    h = hashlib.sha1()
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()


def tokenize_cached(encoder: Encoder, texts: list[str], cache_dir: Path | None, name: str) -> TokenCache:
    """Tokenises once; with a cache dir, this run and later ones memory-map the saved token ids
    (file pages that the ranks on a machine share and the kernel may drop, not a private copy)."""
    if cache_dir is None:
        return encoder.tokenize(texts)
    key = content_key(encoder.name, encoder.max_length, len(texts), texts_digest(texts))
    path = cache_dir / f"tokens-{name}-{key}"
    if not (path / "lengths.npy").exists():
        encoder.tokenize(texts).save(path)
    return TokenCache.load(path)

