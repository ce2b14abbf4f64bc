"""Fused in-batch hard-negative triplet loss: a torch autograd op over ramen._C's CPU and CUDA kernels.

`triplet_loss(q, c, positives)` scores every row of q against every row of c (S = q @ c.T, by
BLAS/cuBLAS), then one kernel pass mines the hardest negatives, computes the hinges and writes the
loss and G = dloss/dS; the backward pass is two more matrix products (dq = G c, dc = G^T q). On
the CPU with few negatives a row (num_negatives = k given), G has at most k + |P_i| nonzeros in
row i: the kernel then writes it as a CSR and the backward multiplies only those (see
`_sparse_grad` for the rule), skipping the zero work of the dense products.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Union

import torch
from torch.autograd.function import once_differentiable

from ramen._build import load_C

# A per-row column set: a (B x M) bool mask, or a CSR (indptr [B + 1], indices [nnz]) over c's rows.
ColumnSets = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_REDUCTIONS = ("mean", "sum", "none")

__all__ = ["ColumnSets", "mine_hard_negatives", "triplet_loss"]

# The form of G on the CPU: None follows the rule in `_sparse_grad`; True / False force the sparse
# or the dense form (for tests and benchmarks).
_FORCE_SPARSE_GRAD: bool | None = None
# G goes sparse when its nonzeros can be at most this fraction of B x M. In the two backward
# products a nonzero costs 6x to 23x what a dense entry costs in MKL's GEMMs (one thread, B = 1024,
# M = 1024 to 4096, D = 384 and 768), so the sparse form is faster below a density of 1/8 to 1/13;
# 1/16 keeps a margin, and there the CSR (12 or 16 bytes a nonzero) takes at most a quarter of
# the dense G's memory.
_SPARSE_MAX_DENSITY = 1 / 16


def triplet_loss(
    q: torch.Tensor,
    c: torch.Tensor,
    positives: ColumnSets,
    *,
    margin: float = 0.3,
    num_negatives: int | None = None,
    reduction: str = "mean",
    exclude: ColumnSets | None = None,
    softmax_temperature: float | None = None,
    validate: bool = True,
) -> torch.Tensor:
    """In-batch triplet loss of rows q (B x D) against candidates c (M x D), hardest negatives first.

    Row i's loss is sum_{p in P_i} sum_{n in N_i} relu(S_in - S_ip + margin) with S = q @ c.T,
    P_i its positive columns (a set: a duplicate id counts once) and N_i the `num_negatives`
    highest-scoring columns that are neither positive nor in `exclude` (all of them when None;
    equal scores rank the lower column first). A column both positive and excluded is positive.
    Rows without positives add nothing. `positives` and `exclude` are (B x M) bool masks or CSRs
    `(indptr [B + 1], indices [nnz])` of int64 column ids. reduction: "sum" over rows, "mean" (that
    sum over the number of (i, p, n) triplets; 0 when there are none) or "none" (the (B,) rows).
    `softmax_temperature` weighs each hinge by the softmax of S_in / temperature over the negatives
    violating the margin for (i, p), the weight detached (NGAME's aggressive mode). Gradients flow
    to q and c. dtypes: float32/float64 on the CPU, float32/float16/bfloat16 on CUDA (float32
    arithmetic, float32 loss); on CUDA M is bounded by shared memory (about 12.8K columns on an
    A100, 17.8K on an H100: `ramen._C.triplet_cuda_max_cols`). `validate` checks ids and scores
    for bad values on CUDA, at the cost of one host synchronisation (the kernel never does); with
    validate=False a bad row there gives a NaN loss instead of a ValueError. On the CPU the kernel
    always checks them as it goes, at no cost. On the CPU with num_negatives small against M (G =
    dloss/dS then at most 1/16 nonzero) the backward multiplies only G's nonzeros, and the (B x M)
    score buffer is freed after the forward pass; ramen's kernels give the same output for any
    thread count.
    """
    _check_embeddings(q, c)
    options = _options(margin, num_negatives, reduction, softmax_temperature, validate)
    b, m = q.shape[0], c.shape[0]
    pos = _column_sets("positives", positives, b, m, q.device, validate)
    exc = None if exclude is None else _column_sets("exclude", exclude, b, m, q.device, validate)
    return _TripletLoss.apply(q, c, pos, exc, options)


def mine_hard_negatives(
    scores: torch.Tensor,
    positives: ColumnSets,
    *,
    margin: float = 0.3,
    num_negatives: int | None = None,
    exclude: ColumnSets | None = None,
    softmax_temperature: float | None = None,
    validate: bool = True,
    num_threads: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel pass alone over a score matrix S (B x M), as in `triplet_loss`.

    Returns (loss (B,), grad (B x M) = dloss/dS with the softmax weights held constant, count (B,)
    int64 = |P_i| * |N_i|); on CUDA the loss is float32 and grad has the scores' dtype.
    num_threads: CPU threads (default torch.get_num_threads()).
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        raise ValueError("scores must be a 2-D tensor (B x M)")
    _check_dtype("scores", scores)
    options = _options(margin, num_negatives, "none", softmax_temperature, validate)
    b, m = scores.shape
    pos = _column_sets("positives", positives, b, m, scores.device, validate)
    exc = None if exclude is None else _column_sets("exclude", exclude, b, m, scores.device, validate)
    return _mine(scores.detach().contiguous(), pos, exc, options, in_place=False, num_threads=num_threads)


@dataclasses.dataclass(frozen=True)
class _Options:
    margin: float
    num_negatives: int  # 0: every candidate
    temperature: float  # 0: plain hinges
    reduction: str
    validate: bool


@dataclasses.dataclass(frozen=True)
class _Sets:
    """A checked column set on the scores' device: contiguous int64 CSR, or a uint8 mask view."""

    indptr: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    checks: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # message -> bad flag (0-d)


class _TripletLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, c, pos: _Sets, exc: _Sets | None, options: _Options):  # noqa: ANN001, ANN205
        scores = q @ c.T  # (B, M); autograd is off inside forward; autocast may lower its dtype
        if scores.device.type == "cpu" and scores.dtype not in _CPU_DTYPES:
            scores = scores.float()
        ctx.sparse = _sparse_grad(scores, pos, options)
        # G: the dense (B, M) grad, reusing the scores' memory, or a CSR (indptr, indices, values)
        loss, grad, count = _mine(scores, pos, exc, options, in_place=True, sparse=ctx.sparse)
        del scores  # with a sparse G the (B, M) buffer is freed here
        g_parts = grad if ctx.sparse else (grad,)
        ctx.reduction = options.reduction
        triplets = None
        if options.reduction == "none":
            out = loss
        else:
            out = loss.sum()
            if options.reduction == "mean":
                triplets = count.sum().clamp_min(1).to(loss.dtype)
                out = out / triplets
        ctx.save_for_backward(q, c, triplets, *g_parts)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):  # noqa: ANN001, ANN205
        q, c, triplets, *g_parts = ctx.saved_tensors
        dtype = g_parts[-1].dtype  # G's (autocast may have made S, hence G, narrower than q and c)
        # dloss_i scales row i of G ("none"), or a 0-d scale applies to both products
        if ctx.reduction == "none":
            w = grad_out.to(dtype)
        else:
            w = (grad_out / triplets if ctx.reduction == "mean" else grad_out).to(dtype)
        need_dq, need_dc = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.sparse:
            dq, dc = _sparse_backward(g_parts, q.to(dtype), c.to(dtype), w, need_dq, need_dc)
        else:
            dq, dc = _dense_backward(g_parts[0], q.to(dtype), c.to(dtype), w, need_dq, need_dc)
        dq = None if dq is None else dq.to(q.dtype)
        dc = None if dc is None else dc.to(c.dtype)
        return dq, dc, None, None, None


def _dense_backward(grad: torch.Tensor, q: torch.Tensor, c: torch.Tensor, w: torch.Tensor, need_dq: bool,
                    need_dc: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dq = w G c and dc = G^T (w q) by BLAS; w is (B,) (row scales) or 0-d."""
    dq = (grad @ c).mul_(w[:, None] if w.dim() else w) if need_dq else None
    if not need_dc:
        return dq, None
    return dq, (grad.T @ (q * w[:, None]) if w.dim() else (grad.T @ q).mul_(w))


def _sparse_backward(g_parts: list[torch.Tensor], q: torch.Tensor, c: torch.Tensor, w: torch.Tensor, need_dq: bool,
                     need_dc: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The same products from G as a CSR (indptr, indices, values), by the C++ kernel (deterministic
    for any thread count)."""
    indptr, indices, values = g_parts
    q, c = q.contiguous(), c.contiguous()
    dq = torch.empty_like(q) if need_dq else None
    dc = torch.empty_like(c) if need_dc else None
    row_scale = w.contiguous().numpy() if w.dim() else None
    load_C().triplet_sparse_backward_cpu(
        indptr=indptr.numpy(), indices=indices.numpy(), values=values.numpy(), q=q.numpy(), c=c.numpy(),
        row_scale=row_scale, scale=1.0 if w.dim() else w.item(),
        dq=None if dq is None else dq.numpy(), dc=None if dc is None else dc.numpy(),
        num_threads=torch.get_num_threads(),
    )
    return dq, dc


def _sparse_grad(scores: torch.Tensor, pos: _Sets, options: _Options) -> bool:
    """Whether the kernel writes G as a CSR: on the CPU, when num_negatives = k is given and G's
    nonzeros, at most B * min(k, M) plus the number of positive ids, are at most
    _SPARSE_MAX_DENSITY of B x M. With every negative (k None) G is dense anyway."""
    if scores.device.type != "cpu":
        return False
    if _FORCE_SPARSE_GRAD is not None:
        return _FORCE_SPARSE_GRAD
    if options.num_negatives == 0:
        return False
    b, m = scores.shape
    if pos.indices is not None:
        positive_ids = pos.indices.numel()
    else:
        positive_ids = 0 if pos.mask is None else int(torch.count_nonzero(pos.mask))
    return b * min(options.num_negatives, m) + positive_ids <= _SPARSE_MAX_DENSITY * b * m


def _mine(
    scores: torch.Tensor,
    pos: _Sets,
    exc: _Sets | None,
    options: _Options,
    *,
    in_place: bool,
    num_threads: int | None = None,
    sparse: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """Runs the kernel on scores' device; with in_place the grad overwrites the scores. With sparse
    (CPU only) G comes back as a CSR (indptr, indices, values) and the scores' memory is scratch."""
    _C = load_C()
    b, m = scores.shape
    device = scores.device
    exc = exc or _Sets()
    if options.validate:
        _raise_if_bad({**pos.checks, **exc.checks}, scores if device.type == "cuda" else None)
    grad = scores if in_place else torch.empty_like(scores)
    count = torch.empty(b, dtype=torch.int64, device=device)
    if device.type == "cpu":
        loss = torch.empty(b, dtype=scores.dtype)
        csr = _C.triplet_mine_cpu(
            scores=scores.numpy(), **_numpy_sets("pos", pos), **_numpy_sets("exc", exc),
            margin=options.margin, num_negatives=options.num_negatives, temperature=options.temperature,
            loss=loss.numpy(), grad=grad.numpy(), count=count.numpy(),
            num_threads=torch.get_num_threads() if num_threads is None else num_threads, sparse=sparse,
        )
        return loss, (tuple(torch.from_numpy(a) for a in csr) if sparse else grad), count
    if sparse:
        raise ValueError("a sparse G is only written on the CPU")
    loss = torch.empty(b, dtype=torch.float32, device=device)
    _C.triplet_mine_cuda(
        dtype=_CUDA_DTYPES[scores.dtype], scores=scores.data_ptr(), rows=b, cols=m,
        **_device_sets("pos", pos), **_device_sets("exc", exc),
        margin=options.margin, num_negatives=options.num_negatives, temperature=options.temperature,
        loss=loss.data_ptr(), grad=grad.data_ptr(), count=count.data_ptr(),
        device=device.index, stream=torch.cuda.current_stream(device).cuda_stream,
    )
    return loss, grad, count


def _numpy_sets(prefix: str, sets: _Sets) -> dict:
    def arr(t: torch.Tensor | None):  # noqa: ANN202
        return None if t is None else t.numpy()

    return {f"{prefix}_indptr": arr(sets.indptr), f"{prefix}_indices": arr(sets.indices), f"{prefix}_mask": arr(sets.mask)}


def _device_sets(prefix: str, sets: _Sets) -> dict:
    def ptr(t: torch.Tensor | None) -> int:
        return 0 if t is None else t.data_ptr()

    nnz = 0 if sets.indices is None else sets.indices.numel()
    return {f"{prefix}_indptr": ptr(sets.indptr), f"{prefix}_indices": ptr(sets.indices),
            f"{prefix}_nnz": nnz, f"{prefix}_mask": ptr(sets.mask)}


# ---- argument checks (ValueError naming the argument) ----

def _check_dtype(name: str, t: torch.Tensor) -> None:
    if t.device.type == "cpu":
        if t.dtype not in _CPU_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not supported on the CPU (float32 or float64)")
    elif t.device.type == "cuda":
        if t.dtype not in _CUDA_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not supported on CUDA (float32, float16 or bfloat16)")
        if not load_C().has_cuda():
            raise RuntimeError(
                f"{name} is a CUDA tensor but this build of ramen has no CUDA kernels (no CUDA toolkit was "
                "found when it was compiled): move the tensors to the CPU, or reinstall with a CUDA toolkit "
                "present (RAMEN_CUDA=ON makes the build fail if none is found)"
            )
    else:
        raise ValueError(f"{name}: device {t.device} is not supported (cpu or cuda)")


def _check_embeddings(q: torch.Tensor, c: torch.Tensor) -> None:
    for name, t in (("q", q), ("c", c)):
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise ValueError(f"{name} must be a 2-D tensor ({'B' if name == 'q' else 'M'} x D)")
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"q has dimension D = {q.shape[1]} but c has D = {c.shape[1]}")
    if q.device != c.device:
        raise ValueError(f"q is on {q.device} but c is on {c.device}")
    if q.dtype != c.dtype:
        raise ValueError(f"q is {q.dtype} but c is {c.dtype}")
    _check_dtype("q", q)


def _options(margin: float, num_negatives: int | None, reduction: str, temperature: float | None,
             validate: bool) -> _Options:
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if num_negatives is not None and (
        isinstance(num_negatives, bool) or not isinstance(num_negatives, int) or num_negatives < 1
    ):
        raise ValueError(f"num_negatives must be None (every candidate) or an int >= 1, got {num_negatives!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, (int, float))
        or not math.isfinite(temperature) or temperature <= 0
    ):
        raise ValueError(f"softmax_temperature must be None or a finite number > 0, got {temperature!r}")
    return _Options(float(margin), num_negatives or 0, float(temperature or 0.0), reduction, bool(validate))


def _column_sets(name: str, value: ColumnSets, b: int, m: int, device: torch.device, validate: bool) -> _Sets:
    """Checks a mask or CSR against B rows, M columns and the device; returns contiguous buffers."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.bool or value.shape != (b, m):
            raise ValueError(f"{name}: a mask must be a bool tensor of shape (B, M) = ({b}, {m}), "
                             f"got {value.dtype} of shape {tuple(value.shape)}")
        if value.device != device:
            raise ValueError(f"{name} is on {value.device} but q and c are on {device}")
        return _Sets(mask=value.contiguous().view(torch.uint8))
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(isinstance(t, torch.Tensor) for t in value):
        raise ValueError(f"{name} must be a (B x M) bool mask or a tuple (indptr, indices) of int64 tensors")
    indptr, indices = value
    for part, t in (("indptr", indptr), ("indices", indices)):
        if t.dtype not in (torch.int64, torch.int32) or t.dim() != 1:
            raise ValueError(f"{name}: {part} must be a 1-D int64 tensor, got {t.dtype} with shape {tuple(t.shape)}")
        if t.device != device:
            raise ValueError(f"{name}: {part} is on {t.device} but q and c are on {device}")
    if indptr.shape[0] != b + 1:
        raise ValueError(f"{name}: indptr must have B + 1 = {b + 1} entries, got {indptr.shape[0]}")
    indptr = indptr.to(torch.int64).contiguous()
    indices = indices.to(torch.int64).contiguous()
    # the CPU kernel checks the CSR itself as it goes; on CUDA the flags are read once, later
    checks = _csr_checks(name, indptr, indices, m) if validate and device.type == "cuda" else {}
    return _Sets(indptr=indptr, indices=indices, checks=checks)


def _csr_checks(name: str, indptr: torch.Tensor, indices: torch.Tensor, m: int) -> dict[str, torch.Tensor]:
    """Flags (0-d bool tensors, not yet read) for: indptr starts at 0, never decreases, ends at
    nnz; column ids in [0, M)."""
    nnz = indices.shape[0]
    checks = {
        f"{name}: indptr[0] must be 0": indptr[0] != 0,
        f"{name}: indptr must not decrease": (indptr[1:] < indptr[:-1]).any(),
        f"{name}: indptr[-1] must equal the number of indices ({nnz})": indptr[-1] != nnz,
    }
    if nnz:
        checks[f"{name}: column ids must lie in [0, M = {m})"] = (indices.min() < 0) | (indices.max() >= m)
    return checks


def _raise_if_bad(checks: dict[str, torch.Tensor], scores: torch.Tensor | None) -> None:
    """Reads every flag at once (one host sync on CUDA) and raises ValueError on the first set.
    scores, if given, are checked for NaN/Inf too (the CPU kernel checks them itself)."""
    if scores is not None:
        checks = {**checks, "scores S = q @ c.T hold NaN or Inf (check q and c)": ~torch.isfinite(scores).all()}
    if not checks:
        return
    flags = torch.stack(list(checks.values())).cpu().tolist()
    for message, bad in zip(checks, flags):
        if bad:
            raise ValueError(message)
