"""RAMEN's objective as a pure function of a batch's embeddings: L + sum_t (lambda_x R_x^t + lambda_z R_z^t)."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ramen.batching import Batch
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


def ramen_loss(emb: dict[str, torch.Tensor], batch: Batch, *, weights: dict[str, float], margin: float = 0.3,
               num_negatives: int | None = 10, softmax_temperature: float | None = None,
               reg_num_negatives: int | None = 10) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, its components) for embeddings keyed like `batch.tokens`.

    `emb["query"]` (B x D) and `emb["label"]` (L x D) give the task loss L; `emb["anchor:<set>"]`
    (A x D) gives R_x (queries vs anchors) and R_z (labels vs anchors) of each anchor set whose
    component ("Rx/<set>", "Rz/<set>") has a non-zero weight, against its `reg_num_negatives`
    hardest in-batch anchors. Components keep their graph, so callers may log or weight them.
    """
    # the sampler builds valid ids, and a NaN shows as a non-finite loss: no host sync on GPUs
    kw = dict(margin=margin, num_negatives=num_negatives, softmax_temperature=softmax_temperature, validate=False)
    q, z = emb["query"], emb["label"]
    with _named("L"):
        parts = {"L": triplet_loss(q, z, batch.label_pos, exclude=batch.label_excl, **kw)}
    kw = {**kw, "num_negatives": reg_num_negatives}
    total = parts["L"]
    for name, ab in batch.anchors.items():
        if len(ab.ids) == 0:
            continue
        a = emb[f"anchor:{name}"]
        for side, rows, pos, excl in (("Rx", q, ab.query_pos, ab.query_excl), ("Rz", z, ab.label_pos, ab.label_excl)):
            weight = weights.get(f"{side}/{name}", 0.0)
            if not weight or rows.shape[0] == 0:
                continue
            with _named(f"{side}/{name}"):
                part = triplet_loss(rows, a, pos, exclude=excl, **kw)
            parts[f"{side}/{name}"] = part
            total = total + weight * part
    return total, parts
