"""torchrun support: process-group setup, an autograd-aware gather of embedding shards, and rank
0's sparse graphs sent to every rank."""
from __future__ import annotations

import dataclasses
import datetime
import os

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

# dtypes a broadcast CSR matrix may hold (its header names them by position)
_CSR_DTYPES = [np.dtype(t) for t in (np.int32, np.int64, np.float32, np.float64, np.float16, np.int8, np.int16,
                                     np.uint8, np.bool_)]


@dataclasses.dataclass
class Dist:
    """This process's place: rank, world size and device (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' picks the local rank's GPU when there is one, else the CPU; otherwise "cpu", "cuda"
    (the local rank's GPU) or "cuda:N", checked against the GPUs torch sees (ValueError naming
    the setting)."""
    if name == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device {name!r} is not a device: use auto, cpu, cuda or cuda:N") from exc
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"device {name!r}: ramen trains on cpu or cuda, not {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but torch sees no CUDA GPU")
        index = local_rank if device.index is None else device.index
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s), "
                             f"so there is no cuda:{index}")
        device = torch.device("cuda", index)
    return device


TIMEOUT_ENV = "RAMEN_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 3 * 3600  # rank 0 evaluates and builds the label index while the others wait


def timeout() -> datetime.timedelta:
    """The process group's timeout: $RAMEN_DIST_TIMEOUT_S seconds, else 3 hours, long enough for rank
    0's evaluation and label index at the paper's scale (torch's NCCL default, 10 minutes, is not)."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def setup(device: str = "auto") -> Dist:
    """Joins the torchrun process group when WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist(device=pick_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = pick_device(device, local_rank)
    if not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=timeout())
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev)


def shard(n: int, d: Dist) -> slice:
    """This rank's contiguous share of n items (the first n % world ranks take one more)."""
    base, extra = divmod(n, d.world)
    start = d.rank * base + min(d.rank, extra)
    return slice(start, start + base + (1 if d.rank < extra else 0))


def gather_rows(x: torch.Tensor, n: int, d: Dist) -> torch.Tensor:
    """All ranks' shards (from `shard(n, d)`) concatenated in rank order, differentiably.

    The backward sums every rank's gradient into the owner's shard, so a loss computed
    identically on every rank and averaged by DDP gets exactly the single-process gradient.
    """
    if not d.enabled:
        return x
    from torch.distributed.nn.functional import all_gather

    width = -(-n // d.world)
    padded = torch.cat([x, x.new_zeros(width - x.shape[0], *x.shape[1:])]) if x.shape[0] < width else x
    parts = all_gather(padded)
    shards = [shard(n, Dist(rank=r, world=d.world)) for r in range(d.world)]
    return torch.cat([p[: s.stop - s.start] for p, s in zip(parts, shards)])


def broadcast_csr(m: sp.csr_matrix | None, d: Dist) -> sp.csr_matrix:
    """Rank 0's CSR matrix `m` on every rank (the others pass None): its arrays' bytes go over the
    process group, on the run's device for NCCL. Lets one rank do work whose result all need."""
    if not d.enabled:
        if m is None:
            raise ValueError("broadcast_csr: m is None outside a process group")
        return m
    device = d.device if dist.get_backend() == "nccl" else torch.device("cpu")
    header = torch.zeros(8, dtype=torch.int64)
    if d.main:
        arrays = (m.indptr, m.indices, m.data)
        header[:] = torch.tensor([*m.shape, *(a.size for a in arrays), *(_CSR_DTYPES.index(a.dtype) for a in arrays)])
    header = header.to(device)
    dist.broadcast(header, src=0)
    rows, cols, *sizes_codes = header.cpu().tolist()
    sizes, codes = sizes_codes[:3], sizes_codes[3:]
    out = []
    for i, (size, code) in enumerate(zip(sizes, codes)):
        dtype = _CSR_DTYPES[code]
        buf = (np.ascontiguousarray((m.indptr, m.indices, m.data)[i]).view(np.uint8) if d.main
               else np.empty(size * dtype.itemsize, np.uint8))
        if buf.size:
            t = torch.from_numpy(buf).to(device)
            dist.broadcast(t, src=0)
            buf = t.cpu().numpy()
        out.append(buf.view(dtype))
    if d.main:
        return m
    received = sp.csr_matrix((rows, cols), dtype=out[2].dtype)
    received.indptr, received.indices, received.data = out  # as sent: scipy's constructor may narrow the indices
    return received
