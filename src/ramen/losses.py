"""RAMEN's objective as a pure function of a batch's embeddings: L + sum_t (lambda_x R_x^t + lambda_z R_z^t)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ramen.batching import Batch, Csr
from ramen.ops import NonFiniteScores, triplet_loss


@contextlib.contextmanager
def _named(component: str) -> Iterator[None]:
    """Names the loss component in a NonFiniteScores raised inside the block."""
    try:
        yield
    except NonFiniteScores as exc:
        raise NonFiniteScores(f"component {component}: {exc}") from None


def component_names(anchor_sets: list[str]) -> list[str]:
    """The regulariser components of these anchor sets, in a fixed order: Rx/<set>, Rz/<set>."""
    return [f"{side}/{name}" for name in anchor_sets for side in ("Rx", "Rz")]


def _row_of(csr: Csr) -> torch.Tensor:
    """The row of each CSR entry; the output size is given, so CUDA need not read it back."""
    indptr, indices = csr
    return torch.repeat_interleave(torch.arange(len(indptr) - 1, device=indptr.device), indptr.diff(),
                                   output_size=indices.shape[0])


def positive_cosines(rows: torch.Tensor, cols: torch.Tensor, positives: Csr) -> torch.Tensor:
    """(R,) mean cosine of each row to its positive columns (0 for rows without one), detached."""
    indptr, indices = positives
    counts = indptr.diff()
    row_of = _row_of((indptr, indices))
    cos = (rows.detach()[row_of] * cols.detach()[indices]).sum(-1)
    total = torch.zeros(rows.shape[0], dtype=cos.dtype, device=rows.device).index_add_(0, row_of, cos)
    return total / counts.clamp_min(1)


def weighted_triplet(q: torch.Tensor, c: torch.Tensor, positives: Csr, exclude: Csr, row_weights: torch.Tensor,
                     **kw) -> torch.Tensor:
    """The triplet loss with each row's triplets weighted: sum_i w_i loss_i / sum_i w_i n_i (n_i: triplets)."""
    per_row = triplet_loss(q, c, positives, exclude=exclude, reduction="none", **kw)  # (R,)
    n_pos = positives[0].diff()
    n_excl = exclude[0].diff()
    available = (c.shape[0] - n_pos - n_excl).clamp_min(0)
    k = kw.get("num_negatives")
    n_neg = available if k is None else available.clamp_max(k)
    triplets = (n_pos * n_neg).to(per_row.dtype)
    # rows with no weight or no triplets add 0 / tiny = 0: no branch, so no host sync on GPUs
    return (row_weights * per_row).sum() / (row_weights * triplets).sum().clamp_min(1e-12)


def pull_loss(q: torch.Tensor, c: torch.Tensor, positives: Csr) -> torch.Tensor:
    """Mean of 1 - cos(row, positive) over (row, positive) pairs: the positive term alone, no negatives."""
    indptr, indices = positives
    if indices.numel() == 0:
        return q.sum() * 0.0
    row_of = _row_of((indptr, indices))
    return (1.0 - (q[row_of] * c[indices]).sum(-1)).mean()


def ramen_loss(emb: dict[str, torch.Tensor], batch: Batch, *, weights: dict[str, float], margin: float = 0.3,
               num_negatives: int | None = 10, softmax_temperature: float | None = None,
               regulariser: str = "triplet", soft_prune: bool = False, reg_num_negatives: int | None = 10
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, its components) for embeddings keyed like `batch.tokens`.

    `emb["query"]` (B x D) and `emb["label"]` (L x D) give the task loss L; `emb["anchor:<set>"]`
    (A x D) gives R_x (queries vs anchors) and R_z (labels vs anchors) of each anchor set whose
    component ("Rx/<set>", "Rz/<set>") has a non-zero weight, against its `reg_num_negatives`
    hardest in-batch anchors. `regulariser="pull"` keeps only the positive term; `soft_prune`
    weights each row by its (detached, clipped at 0) cosine to its positive anchor. Where `emb`
    holds "reg:<key>" (a regulariser head's map of the same rows), R_x and R_z use those instead.
    Components keep their graph, so callers may log or weight them.
    """
    # the sampler builds valid ids, and a NaN shows as a non-finite loss: no host sync on GPUs
    kw = dict(margin=margin, num_negatives=num_negatives, softmax_temperature=softmax_temperature, validate=False)
    q, z = emb["query"], emb["label"]
    with _named("L"):
        parts = {"L": triplet_loss(q, z, batch.label_pos, exclude=batch.label_excl, **kw)}
    kw = {**kw, "num_negatives": reg_num_negatives}
    total = parts["L"]
    q, z = emb.get("reg:query", q), emb.get("reg:label", z)
    for name, ab in batch.anchors.items():
        if len(ab.ids) == 0:
            continue
        a = emb.get(f"reg:anchor:{name}", emb[f"anchor:{name}"])
        for side, rows, pos, excl in (("Rx", q, ab.query_pos, ab.query_excl), ("Rz", z, ab.label_pos, ab.label_excl)):
            weight = weights.get(f"{side}/{name}", 0.0)
            if not weight or rows.shape[0] == 0:
                continue
            with _named(f"{side}/{name}"):
                if regulariser == "pull":
                    part = pull_loss(rows, a, pos)
                elif soft_prune:
                    part = weighted_triplet(rows, a, pos, excl, positive_cosines(rows, a, pos).clamp_min(0), **kw)
                else:
                    part = triplet_loss(rows, a, pos, exclude=excl, **kw)
            parts[f"{side}/{name}"] = part
            total = total + weight * part
    return total, parts
