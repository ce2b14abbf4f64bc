"""The in-batch hard-negative triplet loss as a user writes it in plain torch (the benchmark's peer).

Mask the positives and excluded columns with -inf, take the top-k negatives per row, broadcast the
hinge against every positive, relu, sum, divide by the number of triplets. Autograd does the rest.
"""
from __future__ import annotations

import torch


def triplet_loss(
    q: torch.Tensor,
    c: torch.Tensor,
    pos_idx: torch.Tensor,
    pos_valid: torch.Tensor | None = None,
    exclude_mask: torch.Tensor | None = None,
    *,
    margin: float = 0.3,
    num_negatives: int | None = None,
) -> torch.Tensor:
    """Mean over (i, p, n) triplets. pos_idx (B x P) int64 positive columns (distinct per row),
    pos_valid (B x P) bool for padded rows, exclude_mask (B x M) bool columns that are no negative."""
    scores = q @ c.T  # (B, M)
    b, m = scores.shape
    if pos_valid is None:
        pos_valid = torch.ones_like(pos_idx, dtype=torch.bool)
    # padded positives scatter into a spare column M, dropped after
    pos_mask = torch.zeros(b, m + 1, dtype=torch.bool, device=scores.device)
    pos_mask.scatter_(1, torch.where(pos_valid, pos_idx, m), True)
    not_negative = pos_mask[:, :m]
    if exclude_mask is not None:
        not_negative = not_negative | exclude_mask
    neg_scores = scores.masked_fill(not_negative, float("-inf"))  # (B, M)
    if num_negatives is not None and num_negatives < m:
        neg_scores = neg_scores.topk(num_negatives, dim=1).values  # (B, k), -inf where too few
    pos_scores = scores.gather(1, pos_idx)  # (B, P)
    hinge = torch.relu(neg_scores[:, None, :] - pos_scores[:, :, None] + margin)  # (B, P, k)
    hinge = hinge * pos_valid[:, :, None]
    triplets = (pos_valid.sum(1) * torch.isfinite(neg_scores).sum(1)).sum()
    return hinge.sum() / triplets.clamp_min(1)
