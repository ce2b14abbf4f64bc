"""AdamW's step over the encoder on the CPU: torch's per-tensor loop (its CPU default), foreach and
fused, and a whole training step (forward, backward, step) with the loop and with fused, in one run.

Usage: python benchmarks/optimizer_step.py [--threads 1 2] [--repeats 10] [--json OUT]
Writes the seconds per step of each and the ratios ours / loop (ours: fused, what ramen's
trainer uses since the CPU supports it) beside the machine and settings.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _median_seconds(fn, repeats: int) -> float:
    fn()  # warm-up: allocates the moments
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(threads: int, repeats: int, batch: int, tokens: int) -> dict[str, float]:
    from ramen.config import TrainConfig
    from ramen.encoder import Encoder
    from ramen.step import BatchEncoder, make_optimizer

    torch.set_num_threads(threads)
    encoder = Encoder(seed=0).train()
    params = [p for p in encoder.parameters()]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    out: dict[str, float] = {}
    for name, kw in (("loop", {"foreach": False}), ("foreach", {"foreach": True}), ("fused", {"fused": True})):
        opt = torch.optim.AdamW(params, lr=1e-5, **kw)
        out[f"adamw_{name}_s"] = _median_seconds(opt.step, repeats)
    ours = make_optimizer(BatchEncoder(encoder), TrainConfig())
    out["trainer_uses_fused"] = bool(ours.defaults.get("fused"))
    ids = torch.randint(1000, 20000, (batch, tokens), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    optimizers = {"loop": torch.optim.AdamW(params, lr=1e-5, foreach=False),
                  "fused": torch.optim.AdamW(params, lr=1e-5, fused=True)}

    def step(opt: torch.optim.Optimizer) -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            emb = encoder(ids, mask)
        emb.float().pow(2).sum(1).mean().backward()
        opt.step()
        return time.perf_counter() - t0

    for opt in optimizers.values():
        step(opt)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in optimizers}
    for _ in range(repeats):  # interleaved, so that drift in the machine's speed hits both alike
        for name, opt in optimizers.items():
            times[name].append(step(opt))
    for name, ts in times.items():
        out[f"train_step_{name}_s"] = statistics.median(ts)
    out["adamw_ratio_fused_over_loop"] = out["adamw_fused_s"] / out["adamw_loop_s"]
    out["train_step_ratio_fused_over_loop"] = out["train_step_fused_s"] / out["train_step_loop_s"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=256, help="texts per training step (queries and labels)")
    parser.add_argument("--tokens", type=int, default=12, help="tokens per text")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from ramen.bench.common import cpu_model

    result = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                          "torch": torch.__version__},
              "settings": {"encoder": "all-MiniLM-L6-v2 (22.7M parameters)", "batch": args.batch,
                           "tokens": args.tokens, "repeats": args.repeats, "autocast": "bf16"},
              "threads": {str(t): measure(t, args.repeats, args.batch, args.tokens) for t in args.threads}}
    print(json.dumps(result, indent=1))
    if args.json:
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        os.replace(tmp, args.json)


if __name__ == "__main__":
    main()
