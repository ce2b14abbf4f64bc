"""One optimisation step: embed a batch (one forward pass per tower), RAMEN's loss, backward, AdamW.

The step reads nothing back to the host: its statistics stay on the device in a `StepStats`
until the loop reads them once, after the optimizer step.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from ramen import distributed, precision, transfer
from ramen.batching import Batch
from ramen.collapse import mean_pairwise_cosine
from ramen.config import TrainConfig
from ramen.encoder import Encoder
from ramen.losses import ramen_loss
from ramen.ops import NonFiniteScores
from ramen.reg_step import separate_step
from ramen.reliance import Reliance, gradient_agreement


def lr_lambda(total_steps: int, warmup: float) -> Callable[[int], float]:
    """The learning-rate multiplier of each step: a linear warm-up over `warmup` of the steps,
    then a linear decay to 0 at `total_steps`."""
    warm = max(1, int(round(warmup * total_steps)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return f


class BatchEncoder(torch.nn.Module):
    """Embeds every text group of a batch in one forward pass per tower (one DDP forward per step)."""

    def __init__(self, encoder: Encoder, every_tower: bool = False):
        super().__init__()
        self.encoder = encoder
        # under torchrun: a tower of the batch runs on every rank, on one dummy row where the rank's shard
        # holds none of its texts, so that every rank's backward reaches the same parameters and collectives
        self.every_tower = every_tower

    def forward(self, groups: list[tuple[torch.Tensor, torch.Tensor, str]]) -> list[torch.Tensor]:
        return self._embed(groups)

    def _embed(self, groups: list[tuple[torch.Tensor, torch.Tensor, str]]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(groups)
        for tower in ("query", "label"):
            members = [i for i, g in enumerate(groups) if g[2] == tower and g[0].shape[0] > 0]
            if not members:
                empty = [i for i, g in enumerate(groups) if g[2] == tower]
                if self.every_tower and empty:  # its output sliced to no rows: zero gradients, the same graph
                    one = torch.ones(1, 1, dtype=groups[empty[0]][0].dtype, device=groups[empty[0]][0].device)
                    none = self.encoder(one, one, tower)[:0]
                    for i in empty:
                        out[i] = none
                continue
            width = max(groups[i][0].shape[1] for i in members)
            ids = torch.cat([torch.nn.functional.pad(groups[i][0], (0, width - groups[i][0].shape[1])) for i in members])
            mask = torch.cat([torch.nn.functional.pad(groups[i][1], (0, width - groups[i][1].shape[1])) for i in members])
            emb = self.encoder(ids, mask, tower)
            for i, part in zip(members, emb.split([groups[i][0].shape[0] for i in members])):
                out[i] = part
        dim = self.encoder.dim
        return [o if o is not None else torch.zeros(0, dim, device=groups[0][0].device) for o in out]


def make_optimizer(batch_encoder: BatchEncoder, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the encoder, weight decay on matrices only."""
    params = list(batch_encoder.encoder.named_parameters())
    groups = [{"params": [p for _, p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, fused=True if fusable([p for _, p in params]) else None)


FUSED_DEVICES = ("cpu", "cuda")  # where AdamW's fused kernel runs


def fusable(params: list[torch.Tensor]) -> bool:
    """Whether AdamW can update `params` in one fused kernel: the same numbers as its loop over
    tensors, 5x faster on the CPU (benchmarks/results/optimizer.md). Elsewhere torch chooses."""
    return bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)


def embed_batch(module: torch.nn.Module, batch: Batch, d: distributed.Dist, cfg: TrainConfig) -> dict[str, torch.Tensor]:
    """Embeddings of the batch's texts (the batch on d.device); with gathering, each rank embeds a
    shard and all see all."""
    keys = list(batch.tokens)
    gather = d.enabled and cfg.gather_across_ranks
    groups = []
    for key in keys:
        ids, mask = batch.tokens[key]
        if gather:
            part = distributed.shard(ids.shape[0], d)
            ids, mask = ids[part], mask[part]
        groups.append((ids, mask, "label" if key == "label" else "query"))
    with precision.autocast(d.device, precision.bf16_enabled(d.device, gpu=cfg.bf16, cpu=cfg.cpu_bf16)):
        embs = module(groups)

    def whole(key: str, e: torch.Tensor) -> torch.Tensor:  # every rank's rows of group `key`
        return distributed.gather_rows(e, batch.tokens[key][0].shape[0], d) if gather else e

    return {key: whole(key, e.float()) for key, e in zip(keys, embs)}


@dataclasses.dataclass
class StepStats:
    """What a step reports, as 0-d tensors on the device: read back once, after the optimizer step."""

    loss: torch.Tensor
    parts: dict[str, torch.Tensor]  # the loss's components: "L", "Rx/<set>", "Rz/<set>"
    spread: dict[str, torch.Tensor]  # mean in-batch cosine of the queries and of the labels
    rewards: dict[str, torch.Tensor]  # the bandit's gradient agreement per component (else empty)

    def read(self) -> tuple[float, dict[str, float], dict[str, float], dict[str, float]]:
        """(loss, parts, spread, rewards) as Python floats, in one device-to-host copy."""
        groups = (self.parts, self.spread, self.rewards)
        flat = torch.stack([self.loss.float(), *(v.float() for g in groups for v in g.values())]).tolist()
        out, i = [], 1
        for g in groups:
            out.append(dict(zip(g, flat[i:i + len(g)])))
            i += len(g)
        return flat[0], *out


def _loss_on_every_rank(emb: dict[str, torch.Tensor], batch: Batch, d: distributed.Dist, cfg: TrainConfig,
                        weights: dict[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`ramen_loss` of the batch. Where each rank scores only its own batch on the CPU (no gather),
    the kernel's check of the scores can fail on one rank alone: every rank then stops here, before
    the backward pass's collectives would leave the others waiting on it."""
    alone = d.enabled and not cfg.gather_across_ranks and d.device.type == "cpu"
    try:
        result = ramen_loss(emb, batch, weights=weights, margin=cfg.margin, num_negatives=cfg.num_negatives,
                            softmax_temperature=cfg.softmax_temperature, reg_num_negatives=cfg.reg_num_negatives)
    except NonFiniteScores:
        if alone:
            distributed.any_rank(True, d)
        raise
    if alone and distributed.any_rank(False, d):
        raise NonFiniteScores("another rank's in-batch scores hold NaN or Inf (that rank's error names them)")
    return result


def train_step(module: torch.nn.Module, encoder: Encoder, optimizer, scheduler, batch: Batch, d: distributed.Dist,
               cfg: TrainConfig, weights: dict[str, float], reliance: Reliance | None = None, reg_optimizer: torch.optim.Optimizer | None = None,
               ) -> StepStats:
    """One optimisation step on `batch` (moved to d.device here, through ramen.transfer). No host
    read: the step's statistics stay on the device until `StepStats.read` (the caller stops the run
    on a non-finite loss before any checkpoint is written).

    `weights` are the regulariser components' lambdas for this step; with a bandit `reliance`,
    the step also measures each component's gradient agreement with the task loss. With a
    `reg_optimizer` (reg_step="separate"), the regularisers take a step of their own (`reg_step`).
    """
    batch = transfer.batch_to(batch, d.device)
    emb = embed_batch(module, batch, d, cfg)
    spread = {key: mean_pairwise_cosine(emb[key]) for key in ("query", "label")}
    loss, parts = _loss_on_every_rank(emb, batch, d, cfg, weights)
    rewards = gradient_agreement(parts, emb) if reliance is not None and reliance.mode == "bandit" else {}
    regs = [k for k in parts if k != "L"]
    if reg_optimizer is not None and regs:
        scale = max(weights[k] for k in regs)
        reg = sum(weights[k] / scale * parts[k] for k in regs)
        separate_step(parts["L"], reg, scale, optimizer, reg_optimizer, d, cfg.grad_clip)
    else:
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), cfg.grad_clip)
        optimizer.step()
    scheduler.step()
    return StepStats(loss.detach(), {k: v.detach() for k, v in parts.items()}, spread, rewards)

