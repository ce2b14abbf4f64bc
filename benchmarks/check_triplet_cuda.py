"""Checks ramen's CUDA triplet kernel against the CPU kernel, for a session that has a GPU.

    python benchmarks/check_triplet_cuda.py          # exit status 0: every check passed

The CUDA path was written on a machine without a GPU and never ran there: run this (and
`python -m pytest tests/test_ops.py -k cuda`) first on a GPU. It compares, on identical score
matrices, the kernel pass (loss, dloss/dS, triplet counts) for float32 (1e-5 relative), float16
and bfloat16 (1e-2), CSR and mask inputs, k = 1, 10, 100 and all, plain and softmax hinges, ties,
empty rows and fully excluded rows; then the whole op with gradients in float32; then checks that
it never synchronises (a long-running kernel queued before it is still running after) and prints
the kernel's time and bandwidth beside a copy of S.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the source tree's ramen (tools/build-inplace)
from ramen import _C  # noqa: E402
from ramen.ops import mine_hard_negatives, triplet_loss  # noqa: E402


def csr(lists: list[list[int]], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(x) for x in lists], dtype=torch.int64)
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    indices = torch.tensor([j for x in lists for j in x], dtype=torch.int64)
    return indptr.to(device), indices.to(device)


def mask(lists: list[list[int]], m: int, device: str) -> torch.Tensor:
    out = torch.zeros(len(lists), m, dtype=torch.bool)
    for i, x in enumerate(lists):
        out[i, x] = True
    return out.to(device)


def problem(b: int, m: int, seed: int) -> tuple[torch.Tensor, list[list[int]], list[list[int]]]:
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(b, m, generator=g)
    scores[:, : m // 4] = scores[:, : m // 4].round(decimals=1)  # plenty of exact ties
    pos = [torch.randint(0, m, (i % 5,), generator=g).tolist() for i in range(b)]  # 0..4, repeats
    exc = [torch.randint(0, m, (i % 4,), generator=g).tolist() for i in range(b)]
    exc[1] = list(range(m))  # a row with every column excluded
    pos[2] = list(range(0, m, 2))  # a huge positive set
    return scores, pos, exc


def check_kernel() -> list[str]:
    failures = []
    for (b, m), dtype, k, temperature, fmt in (
        (shape, dtype, k, t, fmt)
        for shape in ((64, 300), (257, 4096))
        for dtype in (torch.float32, torch.float16, torch.bfloat16)
        for k in (None, 1, 10, 100)
        for t in (None, 0.1)
        for fmt in ("csr", "mask")
    ):
        scores, pos, exc = problem(b, m, seed=b + m)
        scores = scores.to(dtype)  # both sides see the same rounded scores
        sets = (lambda x, dev: csr(x, dev)) if fmt == "csr" else (lambda x, dev: mask(x, m, dev))
        kw = dict(num_negatives=k, softmax_temperature=temperature)
        cpu = mine_hard_negatives(scores.float(), sets(pos, "cpu"), exclude=sets(exc, "cpu"), **kw)
        gpu = mine_hard_negatives(scores.cuda(), sets(pos, "cuda"), exclude=sets(exc, "cuda"), **kw)
        tol = 1e-5 if dtype == torch.float32 else 1e-2
        name = f"kernel {b}x{m} {str(dtype)[6:]} k={k} T={temperature} {fmt}"
        try:
            torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=tol, atol=tol)
            torch.testing.assert_close(gpu[1].float().cpu(), cpu[1], rtol=tol, atol=tol)
            assert torch.equal(gpu[2].cpu(), cpu[2]), "triplet counts differ"
        except AssertionError as exc_info:
            failures.append(f"{name}: {str(exc_info).splitlines()[0]}")
        print(("FAIL " if failures and failures[-1].startswith(name) else "ok   ") + name, flush=True)
    return failures


def check_op() -> list[str]:
    failures = []
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(512, 64, generator=g), dim=1)
    c = torch.nn.functional.normalize(torch.randn(1024, 64, generator=g), dim=1)
    pos = [[i % 1024] for i in range(512)]
    exc = [[(i + 1) % 1024, (i + 7) % 1024] for i in range(512)]
    for reduction in ("mean", "sum", "none"):
        for k in (None, 10):
            out = {}
            for dev in ("cpu", "cuda"):
                qq, cc = q.to(dev).requires_grad_(), c.to(dev).requires_grad_()
                loss = triplet_loss(qq, cc, csr(pos, dev), exclude=csr(exc, dev), num_negatives=k, reduction=reduction)
                loss.backward(torch.ones_like(loss))
                out[dev] = [t.detach().cpu() for t in (loss, qq.grad, cc.grad)]
            name = f"op float32 reduction={reduction} k={k}"
            try:
                for a, b in zip(out["cuda"], out["cpu"]):
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
                print("ok   " + name)
            except AssertionError as exc_info:
                failures.append(f"{name}: {str(exc_info).splitlines()[0]}")
                print("FAIL " + name)
    return failures


def check_no_sync_and_time() -> list[str]:
    b, m = 1024, 4096
    scores = torch.randn(b, m, device="cuda")
    positives = csr([[i % m] for i in range(b)], "cuda")
    torch.cuda._sleep(2_000_000_000)  # a kernel spinning for ~1 s on the stream
    t0 = time.perf_counter()
    mine_hard_negatives(scores, positives, num_negatives=10, validate=False)
    queued = time.perf_counter() - t0
    torch.cuda.synchronize()
    failures = [] if queued < 0.1 else [f"the call took {queued:.3f} s behind a busy stream: it synchronised"]
    print(("ok   " if not failures else "FAIL ") + f"no host sync (call returned in {queued * 1e3:.1f} ms)")
    for k in (10, None):
        for dtype in (torch.float32, torch.bfloat16):
            s = scores.to(dtype)
            for _ in range(3):
                mine_hard_negatives(s, positives, num_negatives=k, validate=False)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(20):
                mine_hard_negatives(s, positives, num_negatives=k, validate=False)
            torch.cuda.synchronize()
            t_mine = (time.perf_counter() - t0) / 20
            t0 = time.perf_counter()
            for _ in range(20):
                s.clone()
            torch.cuda.synchronize()
            t_copy = (time.perf_counter() - t0) / 20
            moved = 2 * s.numel() * s.element_size()
            print(f"     mining {b}x{m} {str(dtype)[6:]} k={k}: {t_mine * 1e6:.0f} us, {moved / t_mine / 1e9:.0f} GB/s"
                  f" (copy of S: {moved / t_copy / 1e9:.0f} GB/s)")
    return failures


def main() -> int:
    if not torch.cuda.is_available():
        print("no CUDA GPU: nothing to check")
        return 2
    if not _C.has_cuda():
        print("this ramen build has no CUDA kernels: rebuild on a machine with a CUDA toolkit")
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}; largest M: {_C.triplet_cuda_max_cols(device=0)}")
    failures = check_kernel() + check_op() + check_no_sync_and_time()
    print(f"\n{len(failures)} failure(s)")
    for f in failures:
        print("  " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
