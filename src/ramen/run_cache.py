"""A run's disk cache (RUN_DIR/cache): token ids and densified graphs under keys of the content that
made them, so that a resumed or repeated run reads them instead of computing them again."""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
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


def tokenize_cached(encoder: Encoder, texts: list[str], cache_dir: Path | None, name: str,
                    notice: Callable[[str], Any] | None = None) -> TokenCache:
    """Tokenises once; with a cache dir, this run and later ones memory-map the saved token ids
    (file pages that the ranks on a machine share and the kernel may drop, not a private copy).

    A saved cache is used only once its checksums and shape check out: one that fails (cut short,
    damaged, altered, or written without checksums) is tokenised again, with a line to `notice`
    (default: stderr) naming it, so a resumed run trains on the tokens an uninterrupted one had."""
    if cache_dir is None:
        return encoder.tokenize(texts)
    key = content_key(tokenizer_digest(encoder.tokenizer), encoder.max_length, len(texts), texts_digest(texts))
    path = cache_dir / f"tokens-{name}-{key}"
    if path.exists():
        try:
            return _checked(TokenCache.load(path), path, len(texts), encoder)
        except (OSError, ValueError) as exc:
            (notice or _to_stderr)(f"token cache {path} failed its check, tokenising again: {exc}")
    cache = encoder.tokenize(texts)
    cache.save(path)
    try:
        return _checked(TokenCache.load(path), path, len(texts), encoder)  # memory-mapped: shared, droppable
    except (OSError, ValueError):  # another rank rewriting the same cache just now (run dirs not shared)
        return cache


def _checked(cache: TokenCache, path: Path, n: int, encoder: Encoder) -> TokenCache:
    """`cache` when it holds `n` texts of the encoder's max_length tokens, every id in its vocabulary
    and every length in range (what a crafted cache with matching checksums could still get wrong)."""
    if cache.ids.shape != (n, encoder.max_length):
        raise ValueError(f"{path} holds token ids of shape {cache.ids.shape}, not ({n}, {encoder.max_length})")
    if n and (int(cache.ids.min()) < 0 or int(cache.ids.max()) >= len(encoder.tokenizer)):
        raise ValueError(f"{path} holds token ids outside the tokenizer's vocabulary of {len(encoder.tokenizer)}")
    if n and (int(cache.lengths.min()) < 0 or int(cache.lengths.max()) > encoder.max_length):
        raise ValueError(f"{path} holds text lengths outside [0, {encoder.max_length}]")
    return cache


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr)
