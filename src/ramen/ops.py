"""Fused in-batch hard-negative triplet loss: a torch autograd op over ramen._C's CPU and CUDA kernels.

`triplet_loss(q, c, positives)` scores every row of q against every row of c (S = q @ c.T, by
BLAS/cuBLAS), then one kernel pass mines the hardest negatives, computes the hinges and writes the
loss and G = dloss/dS; the backward pass is two more matrix products (dq = G c, dc = G^T q). On
the CPU with few negatives a row (num_negatives = k given), G has at most k + |P_i| nonzeros in
row i: the kernel then writes it as a CSR and the backward multiplies only those (see
`_sparse_grad` for the rule), skipping the zero work of the dense products.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import warnings
from typing import Optional, Union

import torch

from ramen._build import load_C

# A per-row column set: a (B x M) bool mask, or a CSR (indptr [B + 1], indices [nnz]) over c's rows.
ColumnSets = Union[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]

_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
_REDUCTIONS = ("mean", "sum", "none")
_MAX_NEGATIVES = 2**31 - 1

__all__ = ["ColumnSets", "NonFiniteScores", "mine_hard_negatives", "triplet_loss"]


class NonFiniteScores(ValueError):
    """A score S = q @ c.T is NaN or infinite: the embeddings went non-finite (a diverging run)."""


# The form of G on the CPU: None follows the rule in `_sparse_grad`; True / False force the sparse
# or the dense form (for tests and benchmarks).
_FORCE_SPARSE_GRAD: bool | None = None
# G goes sparse when its nonzeros can be at most this fraction of B x M. In the two backward
# products a nonzero costs 6x to 23x what a dense entry costs in MKL's GEMMs (one thread, B = 1024,
# M = 1024 to 4096, D = 384 and 768), so the sparse form is faster below a density of 1/8 to 1/13;
# 1/16 keeps a margin, and there the CSR (12 or 16 bytes a nonzero) takes at most a quarter of
# the dense G's memory.
_SPARSE_MAX_DENSITY = 1 / 16
# Mine with the plain torch ops of `mine_reference` instead of the kernels (tests; CUDA devices
# whose ramen build has no CUDA kernels always do).
_FORCE_TORCH = False


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
    arithmetic, float32 loss). Every tensor must be on one device. `validate` checks ids and scores
    for bad values on CUDA, at the cost of one host synchronisation (the kernel never does); with
    validate=False a bad row there gives a NaN loss instead of a ValueError. On the CPU the kernel
    always checks them as it goes, at no cost. On the CPU with num_negatives small against M (G =
    dloss/dS then at most 1/16 nonzero) the backward multiplies only G's nonzeros, and the (B x M)
    score buffer is freed after the forward pass; ramen's kernels give the same output for any
    thread count. The op is `torch.ops.ramen.triplet_loss` (CPU, CUDA and a fake kernel for meta
    and fake tensors); on a CUDA device with a ramen build without CUDA kernels it runs as plain
    torch ops (`mine_reference`), with one warning.
    """
    _check_embeddings(q, c)
    options = _options(margin, num_negatives, reduction, softmax_temperature, validate)
    b, m = q.shape[0], c.shape[0]
    pos = _column_sets("positives", positives, b, m, q.device)
    exc = None if exclude is None else _column_sets("exclude", exclude, b, m, q.device)
    matmul_dtype = _matmul_dtype(q)
    sparse = _sparse_grad(q.device, b, m, pos, options)
    exc = exc or _Sets("exclude")
    with _no_autocast(q.device):  # the op computes S in matmul_dtype itself (autocast's choice, taken above)
        out = torch.ops.ramen.triplet_loss(
            q, c, pos.indptr, pos.indices, pos.mask, exc.indptr, exc.indices, exc.mask,
            options.margin, options.num_negatives, options.temperature, options.reduction, matmul_dtype,
            options.validate, sparse)
    return out[0]


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
    pos = _column_sets("positives", positives, b, m, scores.device)
    exc = None if exclude is None else _column_sets("exclude", exclude, b, m, scores.device)
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

    name: str
    indptr: torch.Tensor | None = None
    indices: torch.Tensor | None = None
    mask: torch.Tensor | None = None


# ---- the op: torch.ops.ramen.triplet_loss, with its fake kernel and its autograd formula ----

Tensor = torch.Tensor


@torch.library.custom_op("ramen::triplet_loss", mutates_args=())
def _triplet_op(q: Tensor, c: Tensor, pos_indptr: Optional[Tensor], pos_indices: Optional[Tensor],
                pos_mask: Optional[Tensor], exc_indptr: Optional[Tensor], exc_indices: Optional[Tensor],
                exc_mask: Optional[Tensor], margin: float, num_negatives: int, temperature: float, reduction: str,
                matmul_dtype: torch.dtype, validate: bool, sparse: bool
                ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(out, G values, G indptr, G indices, triplets): the loss as `reduction` asks, and G = dloss/dS,
    dense (B x M, empty indptr and indices) or, with `sparse` (CPU only), a CSR; triplets is the mean's
    divisor (>= 1). `triplet_loss` checks the arguments and calls this."""
    options = _Options(margin, num_negatives, temperature, reduction, validate)
    pos = _Sets("positives", pos_indptr, pos_indices, pos_mask)
    exc = _Sets("exclude", exc_indptr, exc_indices, exc_mask)
    scores = q.to(matmul_dtype) @ c.to(matmul_dtype).T  # (B, M)
    scores = scores.to(_scores_dtype(q.device, matmul_dtype))
    loss, grad, count = _mine(scores, pos, exc, options, in_place=True, sparse=sparse)
    del scores  # with a sparse G the (B, M) buffer is freed here
    none = torch.empty(0, dtype=torch.int64, device=q.device)
    values, indptr, indices = (grad[2], grad[0], grad[1]) if sparse else (grad, none, none.clone())
    triplets = count.sum().clamp_min(1).to(loss.dtype)
    out = loss if reduction == "none" else loss.sum() / triplets if reduction == "mean" else loss.sum()
    return out, values, indptr, indices, triplets


@_triplet_op.register_fake
def _triplet_op_fake(q, c, pos_indptr, pos_indices, pos_mask, exc_indptr, exc_indices, exc_mask, margin,
                     num_negatives, temperature, reduction, matmul_dtype, validate, sparse):  # noqa: ANN001, ANN202
    """Shapes, dtypes and the device of the outputs; every input must be on q's device."""
    named = dict(c=c, pos_indptr=pos_indptr, pos_indices=pos_indices, pos_mask=pos_mask,
                 exc_indptr=exc_indptr, exc_indices=exc_indices, exc_mask=exc_mask)
    for name, t in named.items():
        if t is not None and t.device != q.device:
            raise ValueError(f"triplet_loss: {name} is on {t.device} but q is on {q.device}")
    b, m = q.shape[0], c.shape[0]
    g_dtype = _scores_dtype(q.device, matmul_dtype)
    loss_dtype = g_dtype if q.device.type == "cpu" else torch.float32
    out = q.new_empty((b,) if reduction == "none" else (), dtype=loss_dtype)
    if sparse:
        nnz = torch.library.get_ctx().new_dynamic_size()
        values = q.new_empty(nnz, dtype=g_dtype)
        indptr, indices = q.new_empty(b + 1, dtype=torch.int64), q.new_empty(nnz, dtype=torch.int64)
    else:
        values = q.new_empty((b, m), dtype=g_dtype)
        indptr, indices = q.new_empty(0, dtype=torch.int64), q.new_empty(0, dtype=torch.int64)
    return out, values, indptr, indices, q.new_empty((), dtype=loss_dtype)


def _triplet_setup(ctx, inputs, output) -> None:  # noqa: ANN001
    q, c = inputs[0], inputs[1]
    _, values, indptr, indices, triplets = output
    ctx.reduction, ctx.sparse = inputs[11], inputs[14]
    ctx.save_for_backward(q, c, triplets, values, indptr, indices)


def _triplet_backward(ctx, grad_out, *unused):  # noqa: ANN001, ANN202
    q, c, triplets, values, indptr, indices = ctx.saved_tensors
    dtype = values.dtype  # G's (autocast may have made S, hence G, narrower than q and c)
    # dloss_i scales row i of G ("none"), or a 0-d scale applies to both products
    if ctx.reduction == "none":
        w = grad_out.to(dtype)
    else:
        w = (grad_out / triplets if ctx.reduction == "mean" else grad_out).to(dtype)
    need_dq, need_dc = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if ctx.sparse:
        dq, dc = torch.ops.ramen.triplet_sparse_backward(indptr, indices, values, q.to(dtype), c.to(dtype), w,
                                                         need_dq, need_dc)
        dq, dc = (dq if need_dq else None), (dc if need_dc else None)
    else:
        dq, dc = _dense_backward(values, q.to(dtype), c.to(dtype), w, need_dq, need_dc)
    dq = None if dq is None else dq.to(q.dtype)
    dc = None if dc is None else dc.to(c.dtype)
    return (dq, dc) + (None,) * 13


_triplet_op.register_autograd(_triplet_backward, setup_context=_triplet_setup)


@torch.library.custom_op("ramen::triplet_sparse_backward", mutates_args=())
def _sparse_backward_op(indptr: Tensor, indices: Tensor, values: Tensor, q: Tensor, c: Tensor, w: Tensor,
                        need_dq: bool, need_dc: bool) -> tuple[Tensor, Tensor]:
    """dq = w G c and dc = G^T (w q) from G as a CSR (indptr, indices, values), by the C++ kernel
    (deterministic for any thread count); w is (B,) (row scales) or 0-d; an unneeded side is empty."""
    q, c = q.contiguous(), c.contiguous()
    dq = torch.empty_like(q) if need_dq else q.new_empty(0)
    dc = torch.empty_like(c) if need_dc else c.new_empty(0)
    row_scale = w.contiguous().numpy() if w.dim() else None
    load_C().triplet_sparse_backward_cpu(
        indptr=indptr.numpy(), indices=indices.numpy(), values=values.numpy(), q=q.numpy(), c=c.numpy(),
        row_scale=row_scale, scale=1.0 if w.dim() else w.item(),
        dq=dq.numpy() if need_dq else None, dc=dc.numpy() if need_dc else None,
        num_threads=torch.get_num_threads(),
    )
    return dq, dc


@_sparse_backward_op.register_fake
def _sparse_backward_fake(indptr, indices, values, q, c, w, need_dq, need_dc):  # noqa: ANN001, ANN202
    return (torch.empty_like(q) if need_dq else q.new_empty(0)), (torch.empty_like(c) if need_dc else c.new_empty(0))


def _dense_backward(grad: torch.Tensor, q: torch.Tensor, c: torch.Tensor, w: torch.Tensor, need_dq: bool,
                    need_dc: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """dq = w G c and dc = G^T (w q) by BLAS; w is (B,) (row scales) or 0-d."""
    dq = (grad @ c).mul_(w[:, None] if w.dim() else w) if need_dq else None
    if not need_dc:
        return dq, None
    return dq, (grad.T @ (q * w[:, None]) if w.dim() else (grad.T @ q).mul_(w))


def _matmul_dtype(q: torch.Tensor) -> torch.dtype:
    """The dtype S = q @ c.T is computed in: autocast's where it is on (float64 stays), else q's."""
    kind = q.device.type
    if kind in ("cpu", "cuda") and torch.is_autocast_enabled(kind) and q.dtype != torch.float64:
        return torch.get_autocast_dtype(kind)
    return q.dtype


def _scores_dtype(device: torch.device, matmul_dtype: torch.dtype) -> torch.dtype:
    """The dtype the kernel reads S (and writes G) in: the CPU kernel takes float32 or float64."""
    return torch.float32 if device.type == "cpu" and matmul_dtype not in _CPU_DTYPES else matmul_dtype


def _no_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    if device.type in ("cpu", "cuda"):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _sparse_grad(device: torch.device, b: int, m: int, pos: _Sets, options: _Options) -> bool:
    """Whether the kernel writes G as a CSR: on the CPU, when num_negatives = k is given and G's
    nonzeros, at most B * min(k, M) plus the number of positive ids, are at most
    _SPARSE_MAX_DENSITY of B x M. With every negative (k None) G is dense anyway."""
    if device.type != "cpu":
        return False
    if _FORCE_SPARSE_GRAD is not None:
        return _FORCE_SPARSE_GRAD
    if options.num_negatives == 0:
        return False
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
    b, m = scores.shape
    device = scores.device
    exc = exc or _Sets("exclude")
    if device.type == "cuda" and options.validate:
        _raise_if_bad({**_device_checks(pos, m), **_device_checks(exc, m)}, scores)
    if device.type == "cuda" and (_FORCE_TORCH or not load_C().has_cuda()):
        _warn_torch_fallback()
        return mine_reference(scores, pos, exc, options)
    if device.type == "cpu" and _FORCE_TORCH and not sparse:
        return mine_reference(scores, pos, exc, options)
    _C = load_C()
    grad = scores if in_place else torch.empty_like(scores)
    count = torch.empty(b, dtype=torch.int64, device=device)
    if device.type == "cpu":
        loss = torch.empty(b, dtype=scores.dtype)
        try:
            csr = _C.triplet_mine_cpu(
                scores=scores.numpy(), **_numpy_sets("pos", pos), **_numpy_sets("exc", exc),
                margin=options.margin, num_negatives=options.num_negatives, temperature=options.temperature,
                loss=loss.numpy(), grad=grad.numpy(), count=count.numpy(),
                num_threads=torch.get_num_threads() if num_threads is None else num_threads, sparse=sparse,
            )
        except ValueError as exc:  # the kernel checks every score as it goes
            if "NaN or Inf" in str(exc):
                raise NonFiniteScores(str(exc)) from None
            raise
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
    """CPU: float32 or float64; CUDA (and meta, which stands in for an accelerator in the device
    tests): float32, float16 or bfloat16."""
    if t.device.type == "cpu":
        if t.dtype not in _CPU_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not supported on the CPU (float32 or float64)")
    elif t.device.type in ("cuda", "meta"):
        if t.dtype not in _CUDA_DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} is not supported on CUDA (float32, float16 or bfloat16)")
    else:
        raise ValueError(f"{name}: device {t.device} is not supported (cpu or cuda)")


_FALLBACK_WARNED = False
REBUILD = "RAMEN_CUDA=ON pip install ."


def _warn_torch_fallback() -> None:
    """Says once per process that CUDA tensors meet a build without CUDA kernels."""
    global _FALLBACK_WARNED
    if _FALLBACK_WARNED or _FORCE_TORCH:
        return
    _FALLBACK_WARNED = True
    warnings.warn("ramen was built without CUDA kernels (no CUDA toolkit at build time): triplet_loss on a "
                  f"CUDA device runs as plain torch ops, slower. Rebuild with `{REBUILD}`.", RuntimeWarning,
                  stacklevel=3)


def kernels_for(device: torch.device) -> str:
    """Which implementation `triplet_loss` runs on `device`, in words (a run's first lines say it)."""
    if device.type == "cpu":
        return "C++ (CPU)"
    if device.type == "cuda":
        return "CUDA" if load_C().has_cuda() else f"plain torch (this ramen build has no CUDA kernels: {REBUILD})"
    return f"none on {device.type}"


def mine_reference(scores: torch.Tensor, pos: _Sets, exc: _Sets, options: _Options
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel pass in plain torch ops on scores' device: (loss (B,), dense G (B x M), count (B,)).

    The same selection (hardest first, lower column on ties) and hinges as the kernels, vectorised
    over rows with sorts, cumulative sums and binary searches: O(B M log M) time, O(B M) memory, no
    host sync. A negative n violates the margin for a positive p when S_n > S_p - margin. Bad ids
    are the caller's to check (`_device_checks`)."""
    b, m = scores.shape
    loss_dtype = scores.dtype if scores.device.type == "cpu" else torch.float32
    if b == 0 or m == 0:
        zeros = scores.new_zeros(b, dtype=loss_dtype), torch.zeros_like(scores)
        return *zeros, torch.zeros(b, dtype=torch.int64, device=scores.device)
    s = scores.to(torch.float64 if scores.dtype == torch.float64 else torch.float32)
    is_pos = _dense_mask(pos, b, m, s.device)
    candidate = ~is_pos & ~_dense_mask(exc, b, m, s.device)
    num_cand = candidate.sum(1)
    k = num_cand if options.num_negatives == 0 else num_cand.clamp_max(options.num_negatives)
    # the k hardest candidates (a stable sort keeps the lower column first among equal scores)
    order = torch.sort(torch.where(candidate, s, -math.inf), dim=1, descending=True, stable=True).indices
    ranks = torch.arange(m, device=s.device).expand(b, m)
    selected = torch.zeros_like(candidate).scatter_(1, order, ranks < k[:, None]) & candidate
    count = is_pos.sum(1) * k
    temp, margin = options.temperature, options.margin
    top = torch.where(selected, s, -math.inf).amax(1, keepdim=True)  # the hardest negative: softmax's shift
    weight = torch.where(selected, torch.exp((s - top) / temp) if temp > 0 else torch.ones_like(s), 0.0)
    # negatives ascending (the others last, as +inf); suffix sums over the violators of each positive
    neg_sorted, neg_order = torch.sort(torch.where(selected, s, math.inf), dim=1)
    threshold = torch.where(is_pos, s - margin, math.inf)  # p's violators: S_n > threshold_p
    first = torch.searchsorted(neg_sorted, threshold, right=True)  # (B, M): p's first violator's place
    pad = s.new_zeros(b, 1)

    def over_violators(x: torch.Tensor) -> torch.Tensor:  # sum of x over each positive's violators
        suffix = x.gather(1, neg_order).flip(1).cumsum(1).flip(1)
        return torch.cat([suffix, pad], 1).gather(1, first)

    z = over_violators(weight)
    violated = over_violators(selected.to(s.dtype))
    hinges = over_violators(weight * torch.where(selected, s, 0.0)) + z * (margin - s)  # sum w (S_n - S_p + m)
    active = is_pos & (violated > 0)
    scale = torch.where(active, 1.0 / z.clamp_min(1e-30) if temp > 0 else torch.ones_like(z), 0.0)
    loss = torch.where(active, hinges * scale, 0.0).sum(1)
    # G: p gets -1 (softmax) or -|violators|; a negative n gets w_n * sum of scale_p over the
    # positives it violates (threshold_p < S_n), found in the sorted thresholds' prefix sums
    grad = torch.where(active, -1.0 if temp > 0 else -violated, 0.0)
    th_sorted, th_order = torch.sort(threshold, dim=1)
    scale_before = torch.cat([pad, scale.gather(1, th_order).cumsum(1)], 1)
    below = torch.searchsorted(th_sorted, s.contiguous(), right=False)  # thresholds < S_n
    grad = grad + weight * scale_before.gather(1, below)
    return loss.to(loss_dtype), grad.to(scores.dtype), count


def _dense_mask(sets: _Sets, b: int, m: int, device: torch.device) -> torch.Tensor:
    """A column set as a (B x M) bool mask (a CSR's duplicate ids collapse)."""
    if sets.mask is not None:
        return sets.mask.view(torch.bool) if sets.mask.dtype == torch.uint8 else sets.mask.bool()
    out = torch.zeros(b, m, dtype=torch.bool, device=device)
    if sets.indices is None or sets.indices.numel() == 0:
        return out
    rows = torch.repeat_interleave(torch.arange(b, device=device), sets.indptr.diff(),
                                   output_size=sets.indices.shape[0])  # given: no read-back on CUDA
    return out.index_put_((rows, sets.indices), torch.ones_like(rows, dtype=torch.bool))


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


def _plain_number(value: object, kind: type) -> object:
    """`value` as a Python number when it is one of `kind` (numpy scalars and 0-d tensors without a
    gradient included; bool never); else `value` unchanged, for the caller's error to name it."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, kind):
        return value
    return int(value) if kind is numbers.Integral else float(value)


def _options(margin: float, num_negatives: int | None, reduction: str, temperature: float | None,
             validate: bool) -> _Options:
    margin, temperature = _plain_number(margin, numbers.Real), _plain_number(temperature, numbers.Real)
    num_negatives = _plain_number(num_negatives, numbers.Integral)
    if not isinstance(margin, float) or not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    if num_negatives is not None and (type(num_negatives) is not int or num_negatives < 1):  # bool is refused
        raise ValueError(f"num_negatives must be None (every candidate) or an int >= 1, got {num_negatives!r}")
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    if temperature is not None and (
        not isinstance(temperature, float) or not math.isfinite(temperature) or temperature <= 0
    ):
        raise ValueError(f"softmax_temperature must be None or a finite number > 0, got {temperature!r}")
    # k at or above M means every candidate, and no batch has 2^31 columns: cap what the kernels get
    k = 0 if num_negatives is None else min(num_negatives, _MAX_NEGATIVES)
    return _Options(float(margin), k, float(temperature or 0.0), reduction, bool(validate))


def _column_sets(name: str, value: ColumnSets, b: int, m: int, device: torch.device) -> _Sets:
    """Checks a mask or CSR against B rows, M columns and the device; returns contiguous buffers."""
    if isinstance(value, torch.Tensor):
        if value.dtype != torch.bool or value.shape != (b, m):
            raise ValueError(f"{name}: a mask must be a bool tensor of shape (B, M) = ({b}, {m}), "
                             f"got {value.dtype} of shape {tuple(value.shape)}")
        if value.device != device:
            raise ValueError(f"{name} is on {value.device} but q and c are on {device}")
        return _Sets(name, mask=value.contiguous().view(torch.uint8))
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
    # the CPU kernel checks the CSR itself as it goes; on CUDA `_device_checks` does, before it
    return _Sets(name, indptr=indptr.to(torch.int64).contiguous(), indices=indices.to(torch.int64).contiguous())


def _device_checks(sets: _Sets, m: int) -> dict[str, torch.Tensor]:
    """The flags of `_csr_checks` for a CSR set (a mask has nothing to check)."""
    return {} if sets.indices is None else _csr_checks(sets.name, sets.indptr, sets.indices, m)


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
            raise (NonFiniteScores if message.startswith("scores S") else ValueError)(message)
