"""Suite `triplet`: the fused triplet loss (ours) beside the plain-torch composition and the GEMM floor.

Forward plus backward of the paper's shapes: B = 1024 rows, M = 1024 to 4096 in-batch candidates,
D = 384 or 768, the 10 hardest or all negatives, one positive and two excluded columns a row. The
floor is the three matrix products any implementation needs (S = q c^T, G c, G^T q). On CUDA also
the mining pass's bandwidth beside a plain copy of S. On the CPU with k given, ours keeps G =
dloss/dS sparse (ramen.ops's rule) and so skips most of the floor's G c and G^T q; a row times
ours forced to the dense G as well, to show what that saves.
"""
from __future__ import annotations

import contextlib
import ctypes
import math
import time
from collections.abc import Callable, Iterator

import torch
from tqdm import tqdm

import ramen.ops
from ramen._build import load_C
from ramen.bench.common import Row, import_peer, peak_rss_during, timeit
from ramen.ops import mine_hard_negatives, triplet_loss

_C = load_C()

SUITE = "triplet"
PEER = "torch topk composition"


def run(quick: bool, devices: list[str] | None = None) -> list[Row]:
    """Timings and memory on the CPU and, where there is one, the GPU (or on `devices` only)."""
    peer = import_peer("torch_triplet")
    if quick:
        shapes = [(512, 1024, 384, 10)]
    else:
        shapes = [(1024, m, d, k) for m in (1024, 2048, 4096) for d in (384, 768) for k in (10, None)]
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and _C.has_cuda() else [])
    rows: list[Row] = []
    for device in devices:
        for b, m, d, k in tqdm(shapes, desc=f"triplet {device} timings", leave=False):
            rows += _time_shape(peer, device, b, m, d, k, repeat=3 if quick else 7)
    # memory last: on the CPU it changes malloc's settings for good (see _malloc_returns_memory)
    for device in devices:
        for b, m, d, k in tqdm(shapes, desc=f"triplet {device} memory", leave=False):
            rows.append(_memory_shape(peer, device, b, m, d, k))
    return rows


def _steps(peer, x: dict, k: int | None):  # noqa: ANN001, ANN202
    """Forward plus backward of ours and of the peer on the same inputs."""
    q, c = x["q"], x["c"]

    def ours() -> torch.Tensor:
        q.grad = c.grad = None
        loss = triplet_loss(q, c, x["positives"], exclude=x["exclude"], num_negatives=k)
        loss.backward()
        return loss

    def theirs() -> torch.Tensor:
        q.grad = c.grad = None
        loss = peer.triplet_loss(q, c, x["pos_idx"], exclude_mask=x["exclude_mask"], num_negatives=k)
        loss.backward()
        return loss

    return ours, theirs


def _inputs(b: int, m: int, d: int, device: str, seed: int = 0) -> dict:
    """Unit-norm q (B x D) and c (M x D); one positive and two excluded columns a row."""
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(b, d, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(m, d, generator=g), dim=1)
    pos = torch.randint(0, m, (b,), generator=g)
    exc = (pos[:, None] + torch.randint(1, m, (b, 2), generator=g)) % m  # never the positive
    exclude_mask = torch.zeros(b, m, dtype=torch.bool).scatter_(1, exc, True)
    return {
        "q": q.to(device).requires_grad_(), "c": c.to(device).requires_grad_(),
        "positives": (torch.arange(b + 1).to(device), pos.to(device)),  # CSR, one a row
        "exclude": (torch.arange(0, 2 * b + 1, 2).to(device), exc.reshape(-1).to(device)),
        "pos_idx": pos[:, None].to(device), "exclude_mask": exclude_mask.to(device),
    }


def _case(device: str, b: int, m: int, d: int, k: int | None) -> str:
    return f"{device} B={b} M={m} D={d} k={k or 'all'}"


def _time_shape(peer, device: str, b: int, m: int, d: int, k: int | None, repeat: int) -> list[Row]:  # noqa: ANN001
    x = _inputs(b, m, d, device)
    ours, theirs = _steps(peer, x, k)
    grad = torch.randn(b, m, device=device)
    qd, cd = x["q"].detach(), x["c"].detach()

    def floor() -> None:
        qd @ cd.T
        grad @ cd
        grad.T @ qd

    ours_loss, ours_dq = ours().item(), x["q"].grad.clone()
    peer_loss, peer_dq = theirs().item(), x["q"].grad.clone()
    if abs(ours_loss - peer_loss) > 1e-4 * max(1.0, abs(peer_loss)) or not torch.allclose(ours_dq, peer_dq, atol=1e-6):
        raise AssertionError(f"ours and the peer disagree: loss {ours_loss} vs {peer_loss}")

    sync = torch.cuda.synchronize if device == "cuda" else None
    t_ours = timeit(ours, repeat=repeat, sync=sync) * 1e3
    t_peer = timeit(theirs, repeat=repeat, sync=sync) * 1e3
    t_floor = timeit(floor, repeat=repeat, sync=sync) * 1e3
    case = _case(device, b, m, d, k)
    settings = {"threads": torch.get_num_threads(), "dtype": "float32", "repeat": repeat, "loss": round(ours_loss, 6)}
    rows = [
        Row(SUITE, case, "fwd+bwd vs peer", t_ours, t_peer, PEER, "ms", "lower", settings),
        Row(SUITE, case, "fwd+bwd vs GEMM floor", t_ours, t_floor, "3 GEMMs (floor)", "ms", "lower"),
    ]
    if device == "cuda":
        rows.append(_mining_bandwidth(x, k, case, repeat))
    else:  # CPU seconds of one thread: what other processes on a shared machine disturb least
        c_ours, c_peer, c_floor = (_thread_cpu_ms(f, repeat) for f in (ours, theirs, floor))
        rows += [
            Row(SUITE, case, "1-thread CPU time vs peer", c_ours, c_peer, PEER, "ms", "lower"),
            Row(SUITE, case, "1-thread CPU time vs GEMM floor", c_ours, c_floor, "3 GEMMs (floor)", "ms", "lower"),
        ]
        if k is not None:
            with _dense_grad():
                c_dense = _thread_cpu_ms(ours, repeat)
            rows.append(Row(SUITE, case, "1-thread CPU time vs ours with dense G", c_ours, c_dense,
                            "ours, dense G (BLAS backward)", "ms", "lower"))
    return rows


@contextlib.contextmanager
def _dense_grad() -> Iterator[None]:
    """Within: ramen.ops keeps G = dloss/dS dense on the CPU whatever its rule says."""
    ramen.ops._FORCE_SPARSE_GRAD = False
    try:
        yield
    finally:
        ramen.ops._FORCE_SPARSE_GRAD = None


def _thread_cpu_ms(fn, repeat: int) -> float:  # noqa: ANN001
    """Least CPU time of the calling thread over `repeat` runs of fn, torch (and ours) on 1 thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        fn()
        best = math.inf
        for _ in range(repeat):
            t0 = time.thread_time()
            fn()
            best = min(best, time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    return best * 1e3


def _memory_shape(peer, device: str, b: int, m: int, d: int, k: int | None) -> Row:  # noqa: ANN001
    x = _inputs(b, m, d, device)
    ours, theirs = _steps(peer, x, k)
    mem_ours, mem_peer = _peak_mb(ours, device), _peak_mb(theirs, device)
    return Row(SUITE, _case(device, b, m, d, k), "peak extra memory", mem_ours, mem_peer, PEER, "MB", "lower")


def _peak_mb(step, device: str) -> float:  # noqa: ANN001
    """Peak memory above the start while `step` runs: the allocator's on CUDA; on the CPU the
    resident set, with glibc told to map every block over 64 KiB on its own so that a freed tensor
    leaves the resident set at once (otherwise malloc keeps it and later peaks hide)."""
    if device == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    with _malloc_returns_memory() as trim:
        step()  # warm (thread pools, lazily built state)
        trim()
        return _resident_peak(step) / 2**20


def _resident_peak(step) -> int:  # noqa: ANN001
    """Bytes by which the resident set's high-water mark rises above the start while `step` runs:
    Linux's VmHWM, reset first through /proc/self/clear_refs (exact, unlike sampling, which misses
    peaks while torch holds the GIL). Falls back to sampling elsewhere."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return peak_rss_during(step)[1]
    start = _status_kib("VmRSS")
    step()
    return (_status_kib("VmHWM") - start) * 1024


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


@contextlib.contextmanager
def _malloc_returns_memory() -> Iterator[Callable[[], None]]:
    """Within: blocks over 64 KiB are mapped on their own (returned to the system when freed);
    yields a function that returns malloc's cached free memory too (malloc_trim)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: plain RSS, possibly an underestimate
        yield lambda: None
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 64 * 1024)
    libc.mallopt(m_trim_threshold, 64 * 1024)
    try:
        yield lambda: libc.malloc_trim(0)
    finally:  # glibc's initial values (the dynamic adjustment stays off)
        libc.mallopt(m_mmap_threshold, 128 * 1024)
        libc.mallopt(m_trim_threshold, 128 * 1024)


def _mining_bandwidth(x: dict, k: int | None, case: str, repeat: int) -> Row:
    """GB/s of the kernel pass alone (reads S, writes G) beside a copy of S (the same bytes)."""
    scores = (x["q"] @ x["c"].T).detach()
    moved = 2 * scores.numel() * scores.element_size()
    sync = torch.cuda.synchronize
    t_mine = timeit(lambda: mine_hard_negatives(scores, x["positives"], exclude=x["exclude"], num_negatives=k,
                                                validate=False), repeat=repeat, sync=sync)
    t_copy = timeit(scores.clone, repeat=repeat, sync=sync)
    return Row(SUITE, case, "mining pass bandwidth", moved / t_mine / 1e9, moved / t_copy / 1e9,
               "S.clone() (copy)", "GB/s", "higher")
