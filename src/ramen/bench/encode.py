"""Suite `encode`: texts/s of Encoder.encode against a plain Hugging Face loop on short titles.

The peer is what a user writes first: tokenise a batch with fixed padding to max_length and run
the model in input order; sentence-transformers' `encode` joins where it is installed.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from ramen.bench.common import Row, timeit

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def titles(n: int, seed: int = 0) -> list[str]:
    """Short title-like texts (2-8 words) from the synthetic benchmark's vocabulary."""
    from ramen.datasets.synthetic import synthetic

    ds = synthetic("small", seed=seed)
    pool = ds.train_texts + ds.label_texts + ds.test_texts
    rng = np.random.default_rng(seed)
    return [pool[i] for i in rng.integers(0, len(pool), size=n)]


def plain_hf_encode(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> np.ndarray:
    """The straightforward loop: fixed padding, input order, mean pooling, normalise."""
    out = []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(texts), batch_size):
            enc = tokenizer(texts[s:s + batch_size], padding="max_length", truncation=True,
                            max_length=max_length, return_tensors="pt")
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def _bf16_row(encoder, texts: list[str], batch_size: int, full: np.ndarray, full_s: float,
              settings: dict, repeat: int) -> Row:
    """Ours under bf16 autocast against ours in float32 (on a CPU only where bf16 is native)."""
    from ramen import precision

    device = encoder.device
    if device.type == "cpu" and not precision.cpu_has_bf16():
        return Row("encode", "MiniLM short titles, bf16 autocast", "skipped", float("nan"),
                   settings={"why": "this CPU has no native bf16 (AMX, AVX512-BF16)"})
    encoder.bf16 = True
    try:
        low_s = timeit(lambda: encoder.encode(texts, batch_size, progress=False), repeat=repeat, warmup=1)
        low = encoder.encode(texts, batch_size, progress=False)
    finally:
        encoder.bf16 = None
    return Row("encode", "MiniLM short titles, bf16 autocast", "texts/s", len(texts) / low_s, len(texts) / full_s,
               "ours in float32", "texts/s", "higher",
               {**settings, "max_abs_diff_vs_float32": f"{float(np.abs(low - full).max()):.2e}"})


def run(quick: bool = False) -> list[Row]:
    from ramen.encoder import Encoder

    n = 1024 if quick else 8192
    batch_size = 256
    texts = titles(n)
    encoder = Encoder()  # all-MiniLM-L6-v2
    settings = {"texts": n, "batch_size": batch_size, "max_length": encoder.max_length,
                "model": encoder.name, "threads": torch.get_num_threads()}
    repeat = 1 if quick else 3

    ours_s = timeit(lambda: encoder.encode(texts, batch_size, progress=False), repeat=repeat, warmup=1)
    peer_s = timeit(lambda: plain_hf_encode(encoder.backbone, encoder.tokenizer, texts, batch_size,
                                            encoder.max_length), repeat=repeat, warmup=0)
    ours = encoder.encode(texts, batch_size, progress=False)
    peer = plain_hf_encode(encoder.backbone, encoder.tokenizer, texts[:256], batch_size, encoder.max_length)
    max_diff = float(np.abs(ours[:256] - peer).max())
    rows = [Row("encode", "MiniLM short titles", "texts/s", n / ours_s, n / peer_s, "plain HF loop",
                "texts/s", "higher", {**settings, "max_abs_diff_vs_peer": f"{max_diff:.2e}"})]
    rows.append(_bf16_row(encoder, texts, batch_size, ours, ours_s, settings, repeat))
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return rows
    from ramen.encoder import _minilm_path

    st = SentenceTransformer(str(_minilm_path()), device="cpu")
    st.max_seq_length = encoder.max_length
    t0 = time.perf_counter()
    st.encode(texts, batch_size=batch_size)
    st_s = time.perf_counter() - t0
    rows.append(Row("encode", "MiniLM short titles", "texts/s", n / ours_s, n / st_s, "sentence-transformers",
                    "texts/s", "higher", settings))
    return rows
