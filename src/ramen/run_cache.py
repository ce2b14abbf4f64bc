"""A run's disk cache (RUN_DIR/cache): token ids and densified graphs under keys of the content that
made them, so that a resumed or repeated run reads them instead of computing them again."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ramen.digest import content_key, texts_digest
from ramen.encoder import Encoder
from ramen.tokens import TokenCache


def tokenizer_digest(tokenizer: Any) -> str:
    """What makes a tokenizer's ids: its class, its whole definition (vocabulary, normaliser, special
    tokens) where it is a fast tokenizer, its vocabulary otherwise. A model directory replaced in place
    under the same name gets tokens of its own."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:  # without truncation and padding: state each call sets (max_length is in the key)
        definition = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    else:
        definition = sorted(tokenizer.get_vocab().items())
    return content_key(type(tokenizer).__name__, definition, tokenizer.all_special_tokens)


def tokenize_cached(encoder: Encoder, texts: list[str], cache_dir: Path | None, name: str) -> TokenCache:
    """Tokenises once; with a cache dir, this run and later ones memory-map the saved token ids
    (file pages that the ranks on a machine share and the kernel may drop, not a private copy)."""
    if cache_dir is None:
        return encoder.tokenize(texts)
    key = content_key(tokenizer_digest(encoder.tokenizer), encoder.max_length, len(texts), texts_digest(texts))
    path = cache_dir / f"tokens-{name}-{key}"
    if not (path / "lengths.npy").exists():
        encoder.tokenize(texts).save(path)
    return TokenCache.load(path)

