"""torchrun support: process-group setup, an autograd-aware gather of embedding shards, rank 0's
sparse graphs and batches sent to every rank, and shards of work gathered on rank 0."""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
import torch.distributed as dist

# dtypes a broadcast array may have (its header names them by position)
_DTYPES = [np.dtype(t) for t in (np.int32, np.int64, np.float32, np.float64, np.float16, np.int8, np.int16,
                                     np.uint8, np.bool_)]


@dataclasses.dataclass
class Dist:
    """This process's place: rank, world size and device (world 1 without torchrun)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = dataclasses.field(default_factory=lambda: torch.device("cpu"))
    control: Any = None  # a gloo group for small host-side messages beside NCCL (None: the default group)

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


_CONTROL: Any = None  # the gloo group beside NCCL (Dist.control), made once

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
        _join("nccl" if dev.type == "cuda" else "gloo", rank, world)
    global _CONTROL
    if dist.get_backend() == "nccl" and _CONTROL is None:  # a group joined elsewhere (one per process)
        _CONTROL = dist.new_group(backend="gloo", timeout=timeout())
    return Dist(rank=rank, world=world, local_rank=local_rank, device=dev,
                control=_CONTROL if dist.get_backend() == "nccl" else None)


class NotJoined(TimeoutError):
    """The other ranks did not join the process group in time (the CLI prints it as an error line)."""


def _join(backend: str, rank: int, world: int) -> None:
    """init_process_group, with a timeout waiting for the other ranks said as what it most likely is:
    a rank that stopped before joining (on one host torchrun ends the others; across hosts it cannot)."""
    global _CONTROL
    wait = timeout()
    try:
        dist.init_process_group(backend, timeout=wait)
        if backend == "nccl" and _CONTROL is None:  # NCCL joins lazily: this gloo group is the first wait
            _CONTROL = dist.new_group(backend="gloo", timeout=wait)
    except dist.DistStoreError as exc:
        raise NotJoined(
            f"rank {rank} of {world}: not every rank joined the process group within {wait.total_seconds():g} s "
            f"(${TIMEOUT_ENV}). One most likely stopped before it: its own output, on its host, says why. On "
            "several hosts every rank reads the run directory and the data at the same path, so they must be "
            f"shared or copied there ({exc})") from exc


def close() -> None:
    """Leaves the process group that `setup` joined, once this process's collectives are over (torch
    asks for it before exit, and NCCL warns at exit without it); a later `setup` joins anew."""
    global _CONTROL
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _CONTROL = None


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
    width = -(-n // d.world)
    padded = torch.cat([x, x.new_zeros(width - x.shape[0], *x.shape[1:])]) if x.shape[0] < width else x
    if torch.is_grad_enabled() and not padded.requires_grad:  # a shard that no tower embedded here: every
        padded = padded.detach().requires_grad_()  # rank must still join the gather's backward collective
    stacked = _GatherRows.apply(padded, d.world, d.rank)
    shards = [shard(n, Dist(rank=r, world=d.world)) for r in range(d.world)]
    return torch.cat([stacked[r * width: r * width + s.stop - s.start] for r, s in enumerate(shards)])


class _GatherRows(torch.autograd.Function):
    """Equal-sized blocks of every rank stacked in rank order; the backward hands each rank the sum
    over ranks of its own block's gradient (a reduce-scatter)."""

    @staticmethod
    def forward(ctx, block: torch.Tensor, world: int, rank: int) -> torch.Tensor:
        ctx.world, ctx.rank = world, rank
        block = block.contiguous()
        out = block.new_empty((world * block.shape[0], *block.shape[1:]))
        if dist.get_backend() == "nccl":
            dist.all_gather_into_tensor(out, block)
        else:  # gloo: a list of views into one buffer
            dist.all_gather(_blocks(out, world), block)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        grad = grad.contiguous()
        if dist.get_backend() == "nccl":
            own = grad.new_empty((grad.shape[0] // ctx.world, *grad.shape[1:]))
            dist.reduce_scatter_tensor(own, grad)
            return own, None, None
        grad = grad.clone()  # gloo has no reduce-scatter: sum everything, keep this rank's block
        dist.all_reduce(grad)
        return _blocks(grad, ctx.world)[ctx.rank].contiguous(), None, None


def _blocks(x: torch.Tensor, world: int) -> list[torch.Tensor]:
    """x's rows as `world` equal contiguous views (empty ones too, which `chunk` drops)."""
    width = x.shape[0] // world
    return [x[r * width:(r + 1) * width] for r in range(world)]


def broadcast_arrays(arrays: list[np.ndarray] | None, count: int, d: Dist) -> list[np.ndarray]:
    """Rank 0's `count` one-dimensional arrays on every rank (the others pass None): their sizes and
    dtypes first, then their bytes, on the run's device for NCCL."""
    if not d.enabled:
        if arrays is None:
            raise ValueError("broadcast_arrays: arrays is None outside a process group")
        return arrays
    device = d.device if dist.get_backend() == "nccl" else torch.device("cpu")
    header = torch.zeros(2 * count, dtype=torch.int64)
    if d.main:
        if len(arrays) != count:
            raise ValueError(f"broadcast_arrays: {len(arrays)} arrays, {count} announced")
        header[:] = torch.tensor([*(a.size for a in arrays), *(_DTYPES.index(a.dtype) for a in arrays)])
    header = header.to(device)
    dist.broadcast(header, src=0)
    values = header.cpu().tolist()
    out = []
    for i, (size, code) in enumerate(zip(values[:count], values[count:])):
        dtype = _DTYPES[code]
        buf = (np.ascontiguousarray(arrays[i]).view(np.uint8) if d.main
               else np.empty(size * dtype.itemsize, np.uint8))
        if buf.size:
            t = torch.from_numpy(buf).to(device)
            dist.broadcast(t, src=0)
            buf = t.cpu().numpy()
        out.append(buf.view(dtype))
    return arrays if d.main else out


def broadcast_csr(m: sp.csr_matrix | None, d: Dist) -> sp.csr_matrix:
    """Rank 0's CSR matrix `m` on every rank (the others pass None): its arrays' bytes go over the
    process group, on the run's device for NCCL. Lets one rank do work whose result all need."""
    if not d.enabled:
        if m is None:
            raise ValueError("broadcast_csr: m is None outside a process group")
        return m
    shape = broadcast_arrays([np.array(m.shape, np.int64)] if d.main else None, 1, d)[0]
    indptr, indices, data = broadcast_arrays([m.indptr, m.indices, m.data] if d.main else None, 3, d)
    if d.main:
        return m
    received = sp.csr_matrix(tuple(int(x) for x in shape), dtype=data.dtype)
    # as sent: scipy's constructor may narrow the indices
    received.indptr, received.indices, received.data = indptr, indices, data
    return received


def agree(flag: bool, d: Dist) -> bool:
    """Rank 0's `flag` on every rank: a decision that only rank 0 can take (it alone holds the log)
    and every rank must follow, as each calls the same collectives after it."""
    if not d.enabled:
        return flag
    return bool(broadcast_arrays([np.array([flag], np.uint8)] if d.main else None, 1, d)[0][0])


def any_rank(flag: bool, d: Dist) -> bool:
    """Whether `flag` is set on any rank (every rank calls it; a host-side message, no device sync)."""
    if not d.enabled:
        return flag
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=d.control)
    return bool(t.item())


def gather_bytes(data: np.ndarray, d: Dist) -> list[np.ndarray]:
    """Every rank's bytes (a 1-d uint8 array, of any length) on every rank, in rank order (host-side)."""
    if not d.enabled:
        return [data]
    size = torch.tensor([data.size], dtype=torch.int64)
    sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(d.world)]
    dist.all_gather(sizes, size, group=d.control)
    width = max(int(s.item()) for s in sizes)
    padded = torch.zeros(width, dtype=torch.uint8)
    padded[:data.size] = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8))
    parts = [torch.zeros(width, dtype=torch.uint8) for _ in range(d.world)]
    dist.all_gather(parts, padded, group=d.control)
    return [p[:int(s.item())].numpy().copy() for p, s in zip(parts, sizes)]


def broadcast_batches(batches: list[np.ndarray] | None, d: Dist) -> list[np.ndarray]:
    """Rank 0's list of int64 id arrays (batches of query ids) on every rank (the others pass None)."""
    if not d.enabled:
        if batches is None:
            raise ValueError("broadcast_batches: batches is None outside a process group")
        return batches
    arrays = None
    if d.main:
        lengths = np.array([len(b) for b in batches], np.int64)
        arrays = [lengths, np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)]
    lengths, ids = broadcast_arrays(arrays, 2, d)
    if d.main:
        return batches
    return np.split(ids, np.cumsum(lengths)[:-1]) if len(lengths) else []


def gather_to_main(x: np.ndarray, n: int, d: Dist) -> np.ndarray | None:
    """Every rank's shard (rows `shard(n, d)` of an n-row float32 array, as this rank's `x`) stacked
    in rank order on rank 0, None on the others: work split across ranks whose result one rank uses."""
    if not d.enabled:
        return x
    mine = shard(n, d)
    if x.shape[0] != mine.stop - mine.start:
        raise ValueError(f"gather_to_main: rank {d.rank} holds {x.shape[0]} rows, its shard of {n} is "
                         f"{mine.stop - mine.start}")
    width = -(-n // d.world)  # host to host over gloo: only rank 0 holds the whole (1 GB at 693K x 384)
    padded = torch.zeros((width, *x.shape[1:]), dtype=torch.float32)
    padded[:x.shape[0]] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    parts = [torch.empty_like(padded) for _ in range(d.world)] if d.main else None
    dist.gather(padded, parts, dst=0, group=d.control)
    if not d.main:
        return None
    shards = [shard(n, Dist(rank=r, world=d.world)) for r in range(d.world)]
    return torch.cat([p[:s.stop - s.start] for p, s in zip(parts, shards)]).numpy()
