"""RAMEN's objective as a pure function of a batch's embeddings: L + sum_t (lambda_x R_x^t + lambda_z R_z^t)."""
from __future__ import annotations

import torch

from ramen.batching import Batch
from ramen.ops import triplet_loss


def ramen_loss(emb: dict[str, torch.Tensor], batch: Batch, *, lambdas: dict[str, tuple[float, float]],
               margin: float = 0.3, num_negatives: int | None = 10,
               softmax_temperature: float | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, its components) for embeddings keyed like `batch.tokens`.

    `emb["query"]` (B x D) and `emb["label"]` (L x D) give the task loss L; for each anchor set
    with a non-zero weight, `emb["anchor:<name>"]` (A x D) gives R_x (queries vs anchors) and R_z
    (labels vs anchors). Components keep their graph, so callers may log or weight them.
    """
    # the sampler builds valid ids, and a NaN shows as a non-finite loss: no host sync on GPUs
    kw = dict(margin=margin, num_negatives=num_negatives, softmax_temperature=softmax_temperature, validate=False)
    q, z = emb["query"], emb["label"]
    parts = {"L": triplet_loss(q, z, batch.label_pos, exclude=batch.label_excl, **kw)}
    total = parts["L"]
    for name, ab in batch.anchors.items():
        lx, lz = lambdas.get(name, (0.0, 0.0))
        if len(ab.ids) == 0 or (lx == 0 and lz == 0):
            continue
        a = emb[f"anchor:{name}"]
        if lx:
            parts[f"Rx/{name}"] = triplet_loss(q, a, ab.query_pos, exclude=ab.query_excl, **kw)
            total = total + lx * parts[f"Rx/{name}"]
        if lz and len(batch.label_ids):
            parts[f"Rz/{name}"] = triplet_loss(z, a, ab.label_pos, exclude=ab.label_excl, **kw)
            total = total + lz * parts[f"Rz/{name}"]
    return total, parts
