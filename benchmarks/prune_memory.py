"""Pruning's memory with a wide encoder: every anchor embedded at once against anchors in blocks
(issue 26). The same densified graphs of a fraction of the paper's shape are pruned twice, each in a
fresh process: once with every anchor of a set embedded at once (PRUNE_BLOCK_BYTES unbounded, as
before), once in blocks of PRUNE_BLOCK_BYTES. Reports each one's peak resident rise, wall time and
a hash of the pruned graphs (they must be equal), and ramen.memory's estimate beside them.

The encoder is a one-layer DistilBERT of the given width (randomly initialised, MiniLM's
tokenizer): the memory pruning holds depends on the output width, not on the depth, and one layer
keeps the embedding of every text affordable on a CPU.

    python benchmarks/prune_memory.py --size 0.1 --dim 768 --json benchmarks/results/prune-memory-0.1-768.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GB = 2.0 ** 30
UNBOUNDED = 1 << 62


def wide_encoder(path: Path, dim: int) -> None:
    """Writes a one-layer DistilBERT of output width `dim` (seeded random weights) with MiniLM's tokenizer."""
    import torch
    from transformers import AutoModel, AutoTokenizer, DistilBertConfig

    from ramen.encoder import _minilm_path

    tokenizer = AutoTokenizer.from_pretrained(_minilm_path(), local_files_only=True)
    config = DistilBertConfig(vocab_size=len(tokenizer), dim=dim, n_layers=1, n_heads=max(1, dim // 64),
                              hidden_dim=64, max_position_embeddings=128)
    torch.manual_seed(0)
    AutoModel.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def worker(args: argparse.Namespace) -> None:
    """One pruning in this process: prints a JSON line of its measurements."""
    import torch

    from ramen import memory
    from ramen.bench.common import StageMemory
    from ramen.config import TrainConfig
    from ramen.datasets import load_xc
    from ramen.encoder import Encoder
    from ramen.run_cache import tokenize_cached
    from ramen.runlog import RunLog
    from ramen.training_graphs import build_graphs, prune_graphs, used_anchor_sets

    torch.set_num_threads(1)
    tmp = Path(args.tmp)
    ds = load_xc(tmp / "dataset.npz")
    cfg = TrainConfig(encoder=str(tmp / "encoder"), graph=True, seed=0, cpu_bf16=True)
    encoder = Encoder(str(tmp / "encoder"), max_length=cfg.max_length)
    encoder.bf16 = cfg.cpu_bf16
    log = RunLog(None, echo=False)
    cache = tmp / "cache"
    cache.mkdir(exist_ok=True)
    tokens = {"query": tokenize_cached(encoder, ds.train_texts, cache, "train"),
              "label": tokenize_cached(encoder, ds.label_texts, cache, "labels"),
              **{f"anchor:{n}": tokenize_cached(encoder, a.texts, cache, f"anchors-{n}")
                 for n, a in ds.anchor_sets.items()}}
    raw = build_graphs(ds, cfg, cache, log)
    memory.PRUNE_BLOCK_BYTES = UNBOUNDED if args.worker == "whole" else args.block_mb << 20
    sets = used_anchor_sets(ds, cfg)
    estimate = memory.estimate_run(ds, cfg, encoder.dim, sum(p.numel() for p in encoder.parameters()), sets)
    graphs_bytes = sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
                       for g in raw.values() for m in (g.query, g.label) if m is not None)
    with StageMemory() as mem:
        t0 = time.perf_counter()
        pruned = prune_graphs(raw, encoder, ds, cfg, log, 0, 0, progress=False, tokens=tokens)
        seconds = time.perf_counter() - t0
    h = hashlib.sha256()
    for name in sorted(pruned):
        for m in (pruned[name].query, pruned[name].label):
            if m is not None:
                for a in (m.indptr, m.indices, m.data):
                    h.update(np.ascontiguousarray(a).tobytes())
    kept = {f"{n}/{s}": [int(getattr(g, s).nnz), int(getattr(raw[n], s).nnz)]
            for n, g in pruned.items() for s in ("query", "label") if getattr(g, s) is not None}
    anchors = max(len(ds.anchor_sets[n].texts) for n in sets)
    # the estimate's prune stage, less what it counts as held before pruning starts
    est_rise = estimate.stages["prune"] - estimate.stages["tokenise"] + 8192 * 2048
    print(json.dumps({"mode": args.worker, "seconds": seconds, "rss_start_gb": mem.start / GB,
                      "peak_gb": mem.peak / GB, "rise_gb": (mem.peak - mem.start) / GB,
                      "graphs_gb": graphs_bytes / GB, "hash": h.hexdigest()[:16], "kept": kept,
                      "block_bytes": memory.PRUNE_BLOCK_BYTES if args.worker == "blocks" else None,
                      "dim": encoder.dim, "largest_anchor_set": anchors,
                      "anchor_embeddings_gb": 4 * encoder.dim * anchors / GB,
                      "estimate_rise_gb": est_rise / GB}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="0.1", help="a fraction of the paper's shape, or a synthetic preset")
    parser.add_argument("--dim", type=int, default=768, help="the encoder's output width (DistilBERT 768)")
    parser.add_argument("--block-mb", type=int, default=None, help="block size (default: ramen.memory's)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker", choices=["whole", "blocks"], help=argparse.SUPPRESS)
    parser.add_argument("--tmp", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    from ramen import memory
    from ramen.bench.common import machine_info
    from ramen.bench.scale import dataset_config
    from ramen.datasets import save_xc
    from ramen.datasets.synthetic import synthetic

    block_mb = args.block_mb or memory.PRUNE_BLOCK_BYTES >> 20
    with tempfile.TemporaryDirectory(prefix="ramen-prune-memory-") as tmp:
        preset, overrides = dataset_config(args.size)
        save_xc(synthetic(preset, seed=0, **overrides), Path(tmp) / "dataset.npz")
        wide_encoder(Path(tmp) / "encoder", args.dim)
        runs = []
        for mode in ("whole", "blocks"):  # the first run caches the tokens and densified graphs for the second
            cmd = [sys.executable, __file__, "--worker", mode, "--tmp", tmp, "--block-mb", str(block_mb)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy()).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"{mode}: {r['seconds']:.1f} s, peak {r['peak_gb']:.2f} GB, rise {r['rise_gb']:.2f} GB "
                  f"(estimate {r['estimate_rise_gb']:.2f}), graphs {r['hash']}", flush=True)
    if len({r["hash"] for r in runs}) != 1:
        raise SystemExit("the pruned graphs differ between the modes")
    whole = min(r["rise_gb"] for r in runs if r["mode"] == "whole")
    blocks = min(r["rise_gb"] for r in runs if r["mode"] == "blocks")
    result = {"command": "python " + " ".join(sys.argv), "machine": machine_info(), "size": args.size,
              "dim": args.dim, "block_mb": block_mb, "runs": runs, "rise_ratio_blocks_over_whole": blocks / whole}
    print(f"peak rise, blocks / whole: {blocks:.2f} / {whole:.2f} GB = {blocks / whole:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
