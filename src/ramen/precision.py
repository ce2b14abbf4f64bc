"""Mixed precision: where ramen runs the encoder under bf16 autocast.

GPUs run bf16 by default. CPUs run it only when asked (TrainConfig.cpu_bf16) and when they have
native bf16 arithmetic (AMX or AVX512-BF16): elsewhere bf16 is emulated and slower than float32.
"""
from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import torch

CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic


@functools.lru_cache(maxsize=1)
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX or AVX512-BF16), read from /proc/cpuinfo."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return any(f in flags for f in CPU_BF16_FLAGS)


def bf16_enabled(device: torch.device | str, *, gpu: bool = True, cpu: bool = False) -> bool:
    """Whether work on `device` runs under bf16 autocast: `gpu` on CUDA devices, `cpu` on a CPU
    with native bf16 (ignored on other CPUs), never on other devices."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(gpu)
    if kind == "cpu":
        return bool(cpu) and cpu_has_bf16()
    return False


def autocast(device: torch.device | str, enabled: bool) -> contextlib.AbstractContextManager:
    """torch.autocast to bf16 on `device` when `enabled` (a no-op context otherwise)."""
    kind = torch.device(device).type
    if not enabled or kind not in ("cuda", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=kind, dtype=torch.bfloat16)

