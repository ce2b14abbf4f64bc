"""Suite `gpu`: the GPU path's acceptance check, one command for a machine with a GPU.

    python -m ramen.bench --suite gpu --json benchmarks/results/gpu-<card>.json

1. The fused triplet op against a float64 reference (plain torch, `ops.mine_reference`), loss and
   both gradients, at M in {1, 300, 3,700, 3,780, the shared-memory limit, one past it}: on the
   default stream, on a side stream and on cuda:1 where there is one.
2. 30 training steps of MiniLM (RAMEN, two anchor sets) on the GPU in bf16 against the same 30
   steps on the CPU in float32: the losses agree within bf16's tolerance.
3. Step time, texts/s and model FLOP utilisation against the bf16 peak for MiniLM and DistilBERT
   (the paper's encoder, randomly initialised: speed does not depend on the weights) at batch 1024.
4. The triplet suite (the fused op against the plain torch composition, on the GPU).
Without a GPU, part 1 runs on the CPU kernels at the M an H100 would use, and the rest is skipped
with a row saying why (CI runs it that way).
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np
import torch

from ramen.bench.common import Row

os.environ.setdefault("HF_HUB_OFFLINE", "1")

H100_OPTIN = 227 * 1024  # the M values on a machine without a GPU: an H100's shared memory
STATIC_SHARED = 1096  # the kernel's static shared memory (BlockScratch), for that plan
OP_TOLERANCE = 1e-4  # relative error of the float32 op against float64
LOSS_TOLERANCE = 0.05  # relative difference of GPU (bf16) and CPU (float32) losses over 30 steps
STEPS = 30


def _cuda() -> bool:
    from ramen._build import load_C
    _C = load_C()

    return torch.cuda.is_available() and _C.has_cuda()


def _skip(case: str, why: str) -> Row:
    return Row("gpu", case, "skipped", float("nan"), settings={"why": why})


def op_columns(device: torch.device | None) -> list[int]:
    """The M values of part 1: small, the 48 KiB opt-in window, the shared-memory limit and past it."""
    from ramen._build import load_C
    _C = load_C()

    if device is not None:
        limit = int(_C.triplet_cuda_max_cols(device=device.index or 0))
    else:
        limit = int(_C.triplet_cuda_launch_plan(rows=1, cols=1, optin_bytes=H100_OPTIN,
                                                static_bytes=STATIC_SHARED)["shared_max_cols"])
    return [1, 300, 3700, 3780, limit, limit + 1]


def _relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return float((ours.double().cpu() - ref).abs().max() / ref.abs().max().clamp_min(1e-12))


def check_op(m: int, device: torch.device, *, rows: int = 64, dim: int = 32, stream: bool = False,
             seed: int = 0) -> float:
    """Largest relative error of the op's loss, dq and dc on `device` (float32) against float64."""
    from ramen import ops

    g = torch.Generator().manual_seed(seed + m)
    q = torch.nn.functional.normalize(torch.randn(rows, dim, generator=g, dtype=torch.float64), dim=1)
    c = torch.nn.functional.normalize(torch.randn(m, dim, generator=g, dtype=torch.float64), dim=1)
    positives = torch.randint(0, m, (rows,), generator=g)
    indptr = torch.arange(rows + 1, dtype=torch.int64)
    # reference: the kernel pass in plain float64 torch, then dq = G c, dc = G^T q (mean over triplets)
    sets = ops._Sets("positives", indptr, positives)
    options = ops._options(0.3, 10, "mean", None, True)
    loss, grad, count = ops.mine_reference(q @ c.T, sets, ops._Sets("exclude"), options)
    scale = 1.0 / max(int(count.sum()), 1)
    ref = (loss.sum() * scale, grad @ c * scale, grad.T @ q * scale)
    qq = q.float().to(device).requires_grad_()
    cc = c.float().to(device).requires_grad_()
    side = torch.cuda.Stream(device) if stream and device.type == "cuda" else None
    with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
        out = ops.triplet_loss(qq, cc, (indptr.to(device), positives.to(device)), num_negatives=10)
        out.backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return max(_relative_error(a, b) for a, b in zip((out.detach(), qq.grad, cc.grad), ref))


def op_rows(quick: bool) -> list[Row]:
    """Part 1 on every CUDA place (default stream, side stream, cuda:1), or on the CPU without one."""
    if not _cuda():
        columns = op_columns(None)
        if quick:
            columns = columns[:2] + columns[-2:]
        rows = [Row("gpu", f"triplet op vs float64, M {m}, CPU", "max rel err",
                    check_op(m, torch.device("cpu")), OP_TOLERANCE, "tolerance", "", "lower",
                    {"device": "cpu", "why": "no CUDA device: the CPU kernels at an H100's M values"})
                for m in columns]
        return rows + [_skip("triplet op on CUDA", "no CUDA device, or a ramen build without CUDA kernels")]
    places = [(torch.device("cuda", 0), False, "cuda:0"), (torch.device("cuda", 0), True, "cuda:0, side stream")]
    if torch.cuda.device_count() > 1:
        places.append((torch.device("cuda", 1), False, "cuda:1"))
    rows = []
    for device, stream, where in places:
        for m in op_columns(device):
            err = check_op(m, device, stream=stream)
            rows.append(Row("gpu", f"triplet op vs float64, M {m}, {where}", "max rel err", err, OP_TOLERANCE,
                            "tolerance", "", "lower", {"device": torch.cuda.get_device_name(device)}))
    if torch.cuda.device_count() < 2:
        rows.append(_skip("triplet op on cuda:1", "one GPU"))
    return rows


def training_losses(device: torch.device, steps: int, encoder: str = "all-MiniLM-L6-v2") -> list[float]:
    """Losses of `steps` RAMEN steps (two anchor sets, no dropout, seed 0) on `device`."""
    from ramen.bench.train import _setup
    from ramen.config import TrainConfig
    from ramen.datasets.synthetic import synthetic
    from ramen.step import train_step

    dataset = synthetic("small", seed=0)
    cfg = TrainConfig(encoder=encoder, graph=True, batch_size=64, densify=False, prune=False, seed=0, dropout=0.0)
    module, encoder_, opt, sched, d, weights, batches = _setup(dataset, cfg, device, batches=steps)
    for m in encoder_.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return [train_step(module, encoder_, opt, sched, b, d, cfg, weights).read()[0] for b in batches]


def training_rows(quick: bool) -> list[Row]:
    """Part 2: the same steps on the GPU (bf16) and the CPU (float32)."""
    if not _cuda():
        return [_skip(f"{STEPS} MiniLM steps, GPU against CPU", "no CUDA device")]
    t0 = time.perf_counter()
    gpu = training_losses(torch.device("cuda", 0), STEPS)
    cpu = training_losses(torch.device("cpu"), STEPS)
    diff = np.abs(np.array(gpu) - np.array(cpu)) / np.maximum(np.abs(cpu), 1e-3)
    return [Row("gpu", f"{STEPS} MiniLM steps, GPU bf16 against CPU float32", "max rel loss diff",
                float(diff.max()), LOSS_TOLERANCE, "tolerance", "", "lower",
                {"first_losses": f"{gpu[0]:.4f} / {cpu[0]:.4f}", "last_losses": f"{gpu[-1]:.4f} / {cpu[-1]:.4f}",
                 "seconds": f"{time.perf_counter() - t0:.0f}"})]


def utilisation_rows(quick: bool) -> list[Row]:
    """Part 3: MiniLM and DistilBERT steps at batch 1024 on the GPU: time, texts/s, MFU."""
    if not _cuda():
        return [_skip("step time and MFU at batch 1024", "no CUDA device")]
    from ramen.bench.train import BF16_PEAK_TFLOPS, _measure
    from ramen.config import TrainConfig
    from ramen.datasets.synthetic import synthetic

    device = torch.device("cuda", 0)
    name = torch.cuda.get_device_name(device)
    peak = next((v for k, v in BF16_PEAK_TFLOPS.items() if k in name), None)
    dataset = synthetic("small", seed=0)
    rows = []
    for label, encoder in (("MiniLM", "all-MiniLM-L6-v2"), ("DistilBERT", "distilbert-random")):
        cfg = TrainConfig(encoder="all-MiniLM-L6-v2", graph=True, batch_size=1024, densify=False, prune=False,
                          seed=0)
        m = _measure(dataset, cfg, device, 3 if quick else 5, encoder=encoder)
        settings = {"gpu": name, "batch": 1024, "texts/step": f"{m['texts']:.0f}", "step_s": f"{m['step_s']:.3f}",
                    "texts/s": f"{m['texts'] / m['step_s']:.0f}"}
        if peak is None:
            rows.append(_skip(f"{label} MFU", f"no bf16 peak known for {name}"))
            continue
        rows.append(Row("gpu", f"{label} RAMEN step, batch 1024, model FLOP utilisation", "MFU",
                        m["flops"] / m["step_s"] / (peak * 1e12), 0.35, "target", "fraction", "higher",
                        {**settings, "peak_tflops_bf16": peak}))
    return rows


def triplet_rows(quick: bool) -> list[Row]:
    """Part 4: the triplet suite's GPU rows (the fused op against plain torch)."""
    if not _cuda():
        return [_skip("triplet suite on the GPU", "no CUDA device (the CPU rows are the triplet suite's)")]
    from ramen.bench import triplet

    return triplet.run(quick, devices=["cuda"])


def run(quick: bool = False) -> list[Row]:
    rows = op_rows(quick) + training_rows(quick) + utilisation_rows(quick) + triplet_rows(quick)
    for r in rows:
        if r.metric == "skipped":
            print(f"gpu: skipped {r.case}: {r.settings['why']}", flush=True)
    return rows
