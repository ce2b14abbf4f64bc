"""Suite `triplet`: the fused triplet loss (ours) beside the plain-torch composition and the GEMM floor.

Forward plus backward of the paper's shapes: B = 1024 rows, M = 1024 to 4096 in-batch candidates,
D = 384 or 768, the 10 hardest or all negatives, one positive and two excluded columns a row. The
floor is the three matrix products any implementation needs (S = q c^T, G c, G^T q). On CUDA also
the mining pass's bandwidth beside a plain copy of S.
"""
from __future__ import annotations

import torch

from ramen import _C
from ramen.bench.common import Row, import_peer, peak_rss_during, timeit
from ramen.ops import mine_hard_negatives, triplet_loss

SUITE = "triplet"
PEER = "torch topk composition"


def run(quick: bool) -> list[Row]:
    peer = import_peer("torch_triplet")
    if quick:
        shapes = [(512, 1024, 384, 10)]
    else:
        shapes = [(1024, m, d, k) for m in (1024, 2048, 4096) for d in (384, 768) for k in (10, None)]
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() and _C.has_cuda() else [])
    rows: list[Row] = []
    for device in devices:
        for b, m, d, k in shapes:
            rows += _bench_shape(peer, device, b, m, d, k, repeat=3 if quick else 5)
    return rows


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


def _bench_shape(peer, device: str, b: int, m: int, d: int, k: int | None, repeat: int) -> list[Row]:  # noqa: ANN001
    x = _inputs(b, m, d, device)
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

    grad = torch.randn(b, m, device=device)
    qd, cd = q.detach(), c.detach()

    def floor() -> None:
        qd @ cd.T
        grad @ cd
        grad.T @ qd

    ours_loss, ours_dq = ours().item(), q.grad.clone()
    peer_loss, peer_dq = theirs().item(), q.grad.clone()
    if abs(ours_loss - peer_loss) > 1e-4 * max(1.0, abs(peer_loss)) or not torch.allclose(ours_dq, peer_dq, atol=1e-6):
        raise AssertionError(f"ours and the peer disagree: loss {ours_loss} vs {peer_loss}")

    sync = torch.cuda.synchronize if device == "cuda" else None
    t_ours = timeit(ours, repeat=repeat, sync=sync) * 1e3
    t_peer = timeit(theirs, repeat=repeat, sync=sync) * 1e3
    t_floor = timeit(floor, repeat=repeat, sync=sync) * 1e3
    mem_ours, mem_peer = _peak_mb(ours, device), _peak_mb(theirs, device)

    case = f"{device} B={b} M={m} D={d} k={k or 'all'}"
    settings = {"threads": torch.get_num_threads(), "dtype": "float32", "loss": round(ours_loss, 6)}
    rows = [
        Row(SUITE, case, "fwd+bwd vs peer", t_ours, t_peer, PEER, "ms", "lower", settings),
        Row(SUITE, case, "fwd+bwd vs GEMM floor", t_ours, t_floor, "3 GEMMs (floor)", "ms", "lower"),
        Row(SUITE, case, "peak extra memory", mem_ours, mem_peer, PEER, "MB", "lower"),
    ]
    if device == "cuda":
        rows.append(_mining_bandwidth(x, k, case, repeat))
    return rows


def _peak_mb(step, device: str) -> float:  # noqa: ANN001
    """Peak memory above the start while `step` runs: RSS on the CPU, the allocator's on CUDA."""
    if device == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        step()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - start) / 2**20
    _, peak = peak_rss_during(step)
    return peak / 2**20


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
