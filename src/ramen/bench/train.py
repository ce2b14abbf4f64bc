"""Suite `train`: queries/s of whole training steps, plain dual encoder vs RAMEN, side by side.

RAMEN encodes more texts per step (anchors of two sets besides queries and labels), so the fair
comparison is the time per encoded text, which should stay within 1.1x of the plain encoder's.
The anchor-bank option embeds anchors without gradient once per epoch; its step time is reported
against the plain step. On a GPU the suite also reports model FLOP utilisation.
"""
from __future__ import annotations

import os
import time

import numpy as np
import torch

from ramen.bench.common import Row

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BF16_PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16 tensor-core peaks


def make_encoder(name: str, cfg) -> "Encoder":  # noqa: F821
    """The encoder `name`, or "distilbert-random": the paper's DistilBERT (768-d, 6 layers) randomly
    initialised with MiniLM's tokenizer, for speed where no copy of its weights is on the machine."""
    from ramen.encoder import Encoder

    if name != "distilbert-random":
        return Encoder(name, max_length=cfg.max_length, seed=cfg.seed)
    from transformers import AutoModel, DistilBertConfig

    encoder = Encoder("tiny", max_length=cfg.max_length, seed=cfg.seed)
    encoder.backbone = AutoModel.from_config(DistilBertConfig(vocab_size=len(encoder.tokenizer)))
    encoder.name, encoder.dim = name, encoder.backbone.config.dim
    return encoder


def _setup(dataset, cfg, device: torch.device, *, batches: int = 8, encoder: str | None = None):
    from ramen import distributed
    from ramen.batching import BatchSampler, Graphs, attach_tokens
    from ramen.step import BatchEncoder, lr_lambda, make_optimizer
    from ramen.training_graphs import used_anchor_sets

    torch.manual_seed(cfg.seed)
    encoder = make_encoder(encoder or cfg.encoder, cfg).to(device).train()
    names = used_anchor_sets(dataset, cfg)
    graphs = {n: Graphs(dataset.anchor_sets[n].train_X_A, dataset.anchor_sets[n].label_A) for n in names}
    sampler = BatchSampler(dataset.train_Y, graphs, cfg.batch_size, seed=cfg.seed)
    tq, tl = encoder.tokenize(dataset.train_texts, progress=False), encoder.tokenize(dataset.label_texts, progress=False)
    ta = {n: encoder.tokenize(dataset.anchor_sets[n].texts, progress=False) for n in names}
    optimizer = make_optimizer(BatchEncoder(encoder), cfg)  # the trainer's
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(1000, 0.0))
    d = distributed.Dist(device=device)
    steps = sampler.steps_per_epoch()
    batches = [attach_tokens(sampler.batch(s // steps, s % steps), tq, tl, ta) for s in range(batches)]
    weights = cfg.component_weights(names)
    return BatchEncoder(encoder), encoder, optimizer, scheduler, d, weights, batches


def _measure(dataset, cfg, device: torch.device, steps: int, *, encoder: str | None = None) -> dict[str, float]:
    from ramen.step import train_step

    module, encoder, opt, sched, d, weights, batches = _setup(dataset, cfg, device, encoder=encoder)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    train_step(module, encoder, opt, sched, batches[0], d, cfg, weights)  # warm-up
    times, texts, tokens = [], [], []
    for i in range(steps):
        b = batches[(i + 1) % len(batches)]
        sync()
        t0 = time.perf_counter()
        train_step(module, encoder, opt, sched, b, d, cfg, weights)
        sync()
        times.append(time.perf_counter() - t0)
        texts.append(sum(ids.shape[0] for ids, _ in b.tokens.values()))
        tokens.append(sum(ids.numel() for ids, _ in b.tokens.values()))
    t = float(np.median(times))
    n_params = sum(p.numel() for n, p in encoder.named_parameters() if "embeddings" not in n)
    return {"step_s": t, "qps": cfg.batch_size / t, "texts": float(np.mean(texts)),
            "s_per_text": t / float(np.mean(texts)), "flops": 6.0 * n_params * float(np.mean(tokens))}


def run(quick: bool = False) -> list[Row]:
    from ramen.config import TrainConfig
    from ramen.datasets.synthetic import synthetic

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dataset = synthetic("tiny" if quick else "small", seed=0)
    encoder = "tiny" if quick else "all-MiniLM-L6-v2"
    batch = 32 if quick else (1024 if device.type == "cuda" else 64)
    steps = 3 if quick else 5
    base = dict(encoder=encoder, batch_size=batch, densify=False, prune=False, seed=0)
    plain = _measure(dataset, TrainConfig(graph=False, **base), device, steps)
    ramen = _measure(dataset, TrainConfig(graph=True, **base), device, steps)
    from ramen import precision

    native_bf16 = device.type == "cuda" or precision.cpu_has_bf16()
    # bf16 against float32 for the plain step: on a GPU bf16 is the default, on a CPU it is asked for
    low, full = ((_measure(dataset, TrainConfig(graph=False, cpu_bf16=True, **base), device, steps), plain)
                 if device.type == "cpu" else (plain, _measure(dataset, TrainConfig(graph=False, bf16=False, **base),
                                                              device, steps))) if native_bf16 else (None, None)
    settings = {"encoder": encoder, "batch": batch, "device": str(device), "data": dataset.name,
                "anchor_sets": "hyperlink+category", "steps": steps}
    rows = [
        Row("train", "plain dual encoder", "queries/s", plain["qps"], None, "", "queries/s", "higher",
            {**settings, "texts/step": f"{plain['texts']:.0f}"}),
        Row("train", "RAMEN, 2 anchor sets", "queries/s", ramen["qps"], plain["qps"], "plain", "queries/s", "higher",
            {**settings, "texts/step": f"{ramen['texts']:.0f}"}),
        Row("train", "RAMEN time per encoded text", "ms/text", 1e3 * ramen["s_per_text"],
            1e3 * plain["s_per_text"], "plain", "ms/text", "lower", {"target": "ours/peer <= 1.1"}),
    ]
    if low is not None:
        rows.append(Row("train", "plain dual encoder, bf16 autocast", "queries/s", low["qps"], full["qps"],
                        "plain in float32", "queries/s", "higher", settings))
    else:
        rows.append(Row("train", "plain dual encoder, bf16 autocast", "skipped", float("nan"),
                        settings={"why": "this CPU has no native bf16 (AMX, AVX512-BF16)"}))
    if device.type == "cuda":
        name = torch.cuda.get_device_name(0)
        peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
        if peak:
            for label, m in (("plain", plain), ("RAMEN", ramen)):
                mfu = m["flops"] / m["step_s"] / (peak * 1e12)
                rows.append(Row("train", f"{label} model FLOP utilisation", "MFU", mfu, 0.35, "target", "fraction",
                                "higher", {"gpu": name, "peak_tflops_bf16": peak}))
    return rows
