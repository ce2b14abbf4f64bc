"""The training driver: RAMEN's objective, graph schedule, checkpoints and torchrun in one loop.

    L + sum_t (lambda_x R_x^t + lambda_z R_z^t), AdamW with linear warm-up and decay.
    Graphs: densified once (cached on disk), `warmup_epochs` on the unpruned graph, then pruned
    with the current encoder (cosine > threshold) every `prune_every` epochs.
Batches are a pure function of (seed, epoch, step) and checkpoints hold every state, so a resumed
run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from ramen import checkpoint, distributed, memory, ops, precision, transfer
from ramen.batching import Batch, BatchSampler, Graphs, Prefetcher, attach_tokens
from ramen.collapse import CollapseWatch, collapse_advice, mean_pairwise_cosine
from ramen.config import TrainConfig
from ramen.data import Dataset
from ramen.encoder import Encoder
from ramen.files import temp_path
from ramen.interrupts import Interrupts
from ramen.losses import component_names, ramen_loss
from ramen.reg_step import make_reg_optimizer, separate_step
from ramen.reliance import Reliance, gradient_agreement
from ramen.model import Model
from ramen.runlog import RunLog, plot_curves
from ramen.tokens import TokenCache


TUNE_QUERIES = 500  # training queries the saved label index's search width is tuned on
CHECKPOINT = "checkpoint.safetensors"  # in the run directory (ramen.checkpoint: no pickle, a SHA-256)
RESUME_MAY_CHANGE = ("device",)  # settings a resumed run may change (the rest must be the checkpoint's)


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def _non_finite(what: str, epoch: int, step: int, global_step: int, ckpt_path: Path | None) -> NonFiniteLoss:
    """The error that stops a run gone NaN or infinite: what, where, and the checkpoint to go back to."""
    return NonFiniteLoss(f"{what} at epoch {epoch + 1}, step {step} (global step {global_step})"
                         + (f". The last good checkpoint is {ckpt_path}" if ckpt_path else ""))


@dataclasses.dataclass
class Progress:
    epoch: int = 0  # the epoch being trained (0-based)
    step: int = 0  # the next step within it
    global_step: int = 0


# ---------------------------------------------------------------- data preparation


def _digest(*parts: Any) -> str:
    h = hashlib.sha1()
    for p in parts:
        if isinstance(p, sp.spmatrix):
            p = p.tocsr()
            for a in (p.indptr, p.indices, p.data):
                h.update(np.ascontiguousarray(a).tobytes())
            h.update(str(p.shape).encode())
        elif isinstance(p, np.ndarray):
            h.update(np.ascontiguousarray(p).tobytes())
        else:
            h.update(json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def tokenize_cached(encoder: Encoder, texts: list[str], cache_dir: Path | None, name: str) -> TokenCache:
    """Tokenises once; with a cache dir, this run and later ones memory-map the saved token ids
    (file pages that the ranks on a machine share and the kernel may drop, not a private copy)."""
    if cache_dir is None:
        return encoder.tokenize(texts)
    key = _digest(encoder.name, encoder.max_length, len(texts), texts[:1000], texts[-1000:])
    path = cache_dir / f"tokens-{name}-{key}"
    if not (path / "lengths.npy").exists():
        encoder.tokenize(texts).save(path)
    return TokenCache.load(path)


def used_anchor_sets(dataset: Dataset, cfg: TrainConfig) -> list[str]:
    if not cfg.graph or cfg.aug_gt:
        return []
    names = list(dataset.anchor_sets) if cfg.anchor_sets is None else list(cfg.anchor_sets)
    missing = [n for n in names if n not in dataset.anchor_sets]
    if missing:
        raise ValueError(f"anchor sets {missing} are not in the dataset (it has {sorted(dataset.anchor_sets)})")
    return [n for n in names if any(cfg.lambdas_for(n))]


def densified(E: sp.csr_matrix, cfg: TrainConfig, cache_dir: Path | None, tag: str, log: RunLog,
              name: str = "") -> sp.csr_matrix:
    """E after the random walk with restart (cached on disk), or E itself when densify is off for it."""
    if not cfg.densify:
        return E.tocsr()
    from ramen.graph import densify

    key = _digest(E, cfg.walk_length, cfg.restart_prob, cfg.densify_top_k, cfg.seed)
    path = cache_dir / f"densified-{tag}-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        return sp.load_npz(path).tocsr()
    t0 = time.perf_counter()
    out = densify(E.tocsr(), walk_length=cfg.walk_length, restart_prob=cfg.restart_prob,
                  top_k=cfg.densify_top_k, seed=cfg.seed)
    log.info(f"densified {tag}: {E.nnz:,} -> {out.nnz:,} edges in {time.perf_counter() - t0:.1f} s",
             graph=tag, edges_before=int(E.nnz), edges_after=int(out.nnz))
    if path is not None:
        tmp = temp_path(path)  # every rank densifies and may write the cache at once
        sp.save_npz(tmp, out)
        os.replace(tmp, path)
    return out


def build_graphs(dataset: Dataset, cfg: TrainConfig, cache_dir: Path | None, log: RunLog) -> dict[str, Graphs]:
    """The (densified, unpruned) training graphs of every used anchor set."""
    graphs = {}
    for name in used_anchor_sets(dataset, cfg):
        aset = dataset.anchor_sets[name]
        lx, lz = cfg.lambdas_for(name)
        if aset.train_X_A.nnz == 0 and aset.label_A.nnz == 0:
            log.info(f"anchor set {name!r} has no edges: training without it")
            continue
        no_anchor = int((np.diff(aset.label_A.tocsr().indptr) == 0).sum())
        if no_anchor:
            log.info(f"anchor set {name!r}: {no_anchor:,} labels have no anchor (they add nothing to R_z)")
        graphs[name] = Graphs(
            query=densified(aset.train_X_A, cfg, cache_dir, f"{name}-query", log, name) if lx else None,
            label=densified(aset.label_A, cfg, cache_dir, f"{name}-label", log, name) if lz else None,
        )
    return graphs


def augment_ground_truth(dataset: Dataset, cfg: TrainConfig) -> sp.csr_matrix:
    """AugGT: train_Y plus, per query, the `aug_gt_top_k` labels sharing the most anchors with it."""
    Y = dataset.train_Y.tocsr().astype(np.float32)
    names = list(dataset.anchor_sets) if cfg.anchor_sets is None else cfg.anchor_sets
    shared = sp.csr_matrix(Y.shape, dtype=np.float32)
    for name in names:
        a = dataset.anchor_sets[name]
        shared = shared + (a.train_X_A.tocsr().astype(np.float32) @ a.label_A.tocsr().astype(np.float32).T)
    shared = shared.tocsr()
    rows, cols = [], []
    for r in range(shared.shape[0]):  # per-row top-k of a sparse product
        lo, hi = shared.indptr[r], shared.indptr[r + 1]
        if hi == lo:
            continue
        vals, idx = shared.data[lo:hi], shared.indices[lo:hi]
        top = np.lexsort((idx, -vals))[: cfg.aug_gt_top_k]
        rows.append(np.full(len(top), r))
        cols.append(idx[top])
    added = sp.csr_matrix((np.ones(sum(map(len, rows)), np.float32),
                           (np.concatenate(rows) if rows else [], np.concatenate(cols) if cols else [])),
                          shape=Y.shape)
    out = ((Y + added) > 0).astype(np.float32).tocsr()
    out.sort_indices()
    return out


# ---------------------------------------------------------------- pruning and batching schedule


def prune_graphs(raw: dict[str, Graphs], encoder: Encoder, dataset: Dataset, cfg: TrainConfig,
                 log: RunLog, epoch: int, global_step: int, progress: bool = True,
                 tokens: dict[str, TokenCache] | None = None) -> dict[str, Graphs]:
    """Keeps the edges of the densified graphs whose endpoints have cosine > threshold now.
    `tokens` ("query", "label", "anchor:<set>"), where given, are embedded instead of the texts."""
    from ramen.graph import prune_edges

    tokens = tokens or {}
    bs = cfg.encode_batch_size
    pruned = {}
    report: dict[str, Any] = {}
    q_emb = l_emb = None
    for name, g in raw.items():
        anchors = encoder.encode(tokens.get(f"anchor:{name}", dataset.anchor_sets[name].texts), bs,
                                 desc=f"embed {name}", progress=progress)
        query = label = None
        if g.query is not None:
            q_emb = encoder.encode(tokens.get("query", dataset.train_texts), bs, desc="embed queries",
                                   progress=progress) if q_emb is None else q_emb
            query = prune_edges(g.query, q_emb, anchors, threshold=cfg.prune_threshold)
            report[f"{name}/query"] = [int(query.nnz), int(g.query.nnz)]
        if g.label is not None:
            l_emb = encoder.encode(tokens.get("label", dataset.label_texts), bs, tower="label", desc="embed labels",
                                   progress=progress) if l_emb is None else l_emb
            label = prune_edges(g.label, l_emb, anchors, threshold=cfg.prune_threshold)
            report[f"{name}/label"] = [int(label.nnz), int(g.label.nnz)]
        pruned[name] = Graphs(query, label)
    text = ", ".join(f"{k} kept {v[0]:,}/{v[1]:,}" for k, v in report.items())
    log.write({"event": "prune", "epoch": epoch, "global_step": global_step, "kept": report},
              message=f"pruned at epoch {epoch + 1}: {text}")
    return pruned


def prunes_at(epoch: int, cfg: TrainConfig) -> bool:
    return cfg.prune and epoch >= cfg.warmup_epochs and (epoch - cfg.warmup_epochs) % cfg.prune_every == 0


def cluster_size_at(epoch: int, cfg: TrainConfig) -> int:
    return cfg.cluster_size * 2 ** sum(1 for e in cfg.cluster_double_at if epoch >= e)


def lr_lambda(total_steps: int, warmup: float):
    warm = max(1, int(round(warmup * total_steps)))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, (total_steps - step) / max(1, total_steps - warm))

    return f


# ---------------------------------------------------------------- one step


class BatchEncoder(torch.nn.Module):
    """Embeds every text group of a batch in one forward pass per tower (one DDP forward per step)."""

    def __init__(self, encoder: Encoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, groups: list[tuple[torch.Tensor, torch.Tensor, str]]) -> list[torch.Tensor]:
        return self._embed(groups)

    def _embed(self, groups: list[tuple[torch.Tensor, torch.Tensor, str]]) -> list[torch.Tensor]:
        out: list[torch.Tensor | None] = [None] * len(groups)
        for tower in ("query", "label"):
            members = [i for i, g in enumerate(groups) if g[2] == tower and g[0].shape[0] > 0]
            if not members:
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
    return torch.optim.AdamW(groups, lr=cfg.lr)


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
    loss, parts = ramen_loss(emb, batch, weights=weights, margin=cfg.margin, num_negatives=cfg.num_negatives,
                             softmax_temperature=cfg.softmax_temperature, reg_num_negatives=cfg.reg_num_negatives)
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


# ---------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, encoder: Encoder, optimizer, scheduler, progress: Progress, cfg: TrainConfig,
                    graphs: dict[str, Graphs], batches: list[np.ndarray] | None, reliance: Reliance,
                    reg_optimizer: torch.optim.Optimizer | None = None) -> None:
    """Everything needed to continue exactly: weights, optimizer, scheduler, RNG, graphs, batches."""
    state = {
        "config": cfg.to_dict(),
        "progress": dataclasses.asdict(progress),
        "encoder": encoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "reg_optimizer": None if reg_optimizer is None else reg_optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "graphs": {name: {side: None if m is None else (m.indptr, m.indices, m.data, m.shape)
                          for side, m in (("query", g.query), ("label", g.label))}
                   for name, g in graphs.items()},
        "batches": batches,
        "reliance": reliance.state_dict(),
    }
    checkpoint.save(path, state)


def _csr_from(t, path: Path) -> sp.csr_matrix | None:
    """A saved graph (indptr, indices, data, shape), checked: a damaged one is a ValueError."""
    if t is None:
        return None
    try:
        m = sp.csr_matrix((t[2], t[1], t[0]), shape=tuple(int(v) for v in t[3]))
        m.check_format(full_check=True)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: a saved graph is malformed ({exc})") from None
    return m


# ---------------------------------------------------------------- the loop


def train(dataset: Dataset, config: TrainConfig | None = None, *, out_dir: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True, eval_sets: dict[str, Dataset] | None = None) -> Model:
    """Trains an encoder on `dataset` with `config`; returns the Model (also saved in out_dir/model).

    With `out_dir`, writes log.jsonl, checkpoint.safetensors (every epoch, and on Ctrl-C or SIGTERM),
    curves.png and model/; `resume=True` continues from out_dir/checkpoint.safetensors exactly.
    `eval_sets` are more splits evaluated beside the test split at every evaluation (each a Dataset
    over the same labels whose test split holds its queries, e.g. held-out training queries to choose
    a recipe by); their eval events carry the name as "split".
    """
    cfg = (config or TrainConfig()).validate()
    splits = {"test": dataset, **(eval_sets or {})}
    for name, ds in splits.items():
        if ds is not dataset and (name == "test" or ds.label_texts != dataset.label_texts):
            raise ValueError(f"eval_sets[{name!r}]: needs a name other than 'test' and the dataset's labels")
    d = distributed.setup(cfg.device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    cache_dir = (out / "cache") if out is not None else None
    if cache_dir is not None:
        cache_dir.mkdir(exist_ok=True)
    ckpt_path = out / CHECKPOINT if out is not None else None
    log = RunLog(out / "log.jsonl" if out is not None and d.main else None, echo=progress and d.main)
    torch.manual_seed(cfg.seed)

    encoder = Encoder(cfg.encoder, pooling=cfg.pooling, max_length=cfg.max_length,
                      label_tower=cfg.label_tower, seed=cfg.seed)
    if cfg.dropout is not None:
        for m in encoder.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = cfg.dropout
        for name in ("attention_dropout", "dropout"):
            for m in encoder.modules():
                if hasattr(m, name) and isinstance(getattr(m, name), float):
                    setattr(m, name, cfg.dropout)
    encoder.to(d.device).train()
    encoder.bf16 = precision.bf16_enabled(d.device, gpu=cfg.bf16, cpu=cfg.cpu_bf16)
    if cfg.cpu_bf16 and d.device.type == "cpu" and not encoder.bf16:
        log.info("cpu_bf16: this CPU has no native bf16 (AMX or AVX512-BF16): training in float32")
    kernels = ops.kernels_for(d.device)
    log.info(f"device {d.device}, encoder in {'bf16' if encoder.bf16 else 'float32'}, triplet kernels: {kernels}",
             device=str(d.device), autocast="bf16" if encoder.bf16 else "float32", kernels=kernels)

    # before the long work: a run too large for this machine stops here, naming the stage (issue 26)
    estimate = memory.estimate_run(dataset, cfg, encoder.dim, sum(p.numel() for p in encoder.parameters()),
                                   used_anchor_sets(dataset, cfg),
                                   ranks=int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if d.enabled else 1)
    log.info(memory.check_fits(estimate), memory_estimate=estimate.stages)
    train_Y = augment_ground_truth(dataset, cfg) if cfg.aug_gt else dataset.train_Y.tocsr()
    if cfg.aug_gt:
        log.info(f"AugGT: {dataset.train_Y.nnz:,} -> {train_Y.nnz:,} training labels by label propagation")
    unlabelled = int((np.diff(train_Y.indptr) == 0).sum())
    if unlabelled:
        log.info(f"{unlabelled:,} training queries have no label: they are never sampled")
    raw_graphs = build_graphs(dataset, cfg, cache_dir, log)
    graphs = dict(raw_graphs)
    tokens_q = tokenize_cached(encoder, dataset.train_texts, cache_dir, "train")
    tokens_l = tokenize_cached(encoder, dataset.label_texts, cache_dir, "labels")
    tokens_a = {n: tokenize_cached(encoder, dataset.anchor_sets[n].texts, cache_dir, f"anchors-{n}") for n in graphs}

    gather = d.enabled and cfg.gather_across_ranks
    sampler = BatchSampler(train_Y, graphs, cfg.batch_size, seed=cfg.seed, rank=0 if gather else d.rank,
                           world=1 if gather else d.world, num_random_negatives=cfg.random_negatives)
    total_steps = cfg.epochs * sampler.steps_per_epoch()
    if cfg.max_steps is not None:  # the schedule spans the steps the run will take
        total_steps = min(total_steps, cfg.max_steps)
    batch_encoder = BatchEncoder(encoder).to(d.device)
    module: torch.nn.Module = batch_encoder
    if d.enabled:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    optimizer = make_optimizer(batch_encoder, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.warmup))
    reg_optimizer = make_reg_optimizer(optimizer) if cfg.reg_step == "separate" else None
    base_weights = cfg.component_weights(list(graphs))
    components = [c for c in component_names(list(graphs)) if base_weights[c]]
    reliance = Reliance(components, mode=cfg.reliance, lr=cfg.reliance_lr)
    state = Progress()
    collapse = CollapseWatch(advice=collapse_advice(cfg))

    if resume:
        if ckpt_path is None or not ckpt_path.exists():
            raise ValueError(f"cannot resume: no checkpoint at {ckpt_path}")
        ckpt = checkpoint.load(ckpt_path)
        saved_cfg = TrainConfig.from_dict(ckpt["config"])
        changed = sorted(k for k, v in cfg.to_dict().items() if k not in RESUME_MAY_CHANGE and saved_cfg.to_dict()[k] != v)
        if changed:
            raise ValueError(f"cannot resume {ckpt_path} with other settings than it was trained with: "
                             + ", ".join(f"{k} (saved {saved_cfg.to_dict()[k]!r}, now {getattr(cfg, k)!r})"
                                         for k in changed))
        encoder.load_state_dict(ckpt["encoder"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if reg_optimizer is not None:
            reg_optimizer.load_state_dict(ckpt["reg_optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"])
        if ckpt["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        graphs = {n: Graphs(_csr_from(g["query"], ckpt_path), _csr_from(g["label"], ckpt_path))
                  for n, g in ckpt["graphs"].items()}
        sampler.graphs = graphs
        sampler.set_batches(ckpt["batches"])
        reliance.load_state_dict(ckpt["reliance"])
        state = Progress(**ckpt["progress"])
        log.truncate(state.global_step)
        log.info(f"resumed from {ckpt_path} at epoch {state.epoch + 1}, step {state.step}")

    def write_checkpoint() -> None:
        if ckpt_path is not None and d.main:
            save_checkpoint(ckpt_path, encoder, optimizer, scheduler, state, cfg, graphs, sampler.batches,
                            reliance, reg_optimizer)

    test_tokens: dict[str, TokenCache] = {}  # each split's queries, tokenised at the first evaluation

    def eval_due(epoch: int) -> bool:  # the evaluation after epoch `epoch` (0-based), before the last
        return bool(cfg.eval_every) and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs

    def evaluate(epoch: int) -> np.ndarray | None:
        """Logs the metrics of every split (rank 0); returns the label embeddings it made, for the index."""
        vectors = None
        if d.main:
            model = Model(encoder, dataset.label_texts)
            vectors = model.label_vectors(tokens_l, batch_size=cfg.encode_batch_size, progress=False)
            for split, ds in splits.items():
                if split not in test_tokens:
                    test_tokens[split] = tokenize_cached(encoder, ds.test_texts, cache_dir, f"eval-{split}")
                m = model.evaluate(ds, k=cfg.eval_k, max_queries=cfg.eval_max_queries, seed=cfg.seed,
                                   batch_size=cfg.encode_batch_size, progress=False, query_tokens=test_tokens[split],
                                   label_vectors=vectors)
                flat = {f"{name}@{k + 1}": float(v[k]) for name, v in m.items()
                        if isinstance(v, np.ndarray) and v.ndim == 1 for k in range(len(v))}
                shown = ", ".join(f"{k} {100 * flat[k]:.2f}" for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5")
                                  if k in flat)
                log.write({"event": "eval", "split": split, "epoch": epoch + 1, "global_step": state.global_step,
                           "metrics": flat},
                          message=f"eval after epoch {epoch + 1}{'' if split == 'test' else f' ({split})'}: {shown}")
        d.barrier()
        return vectors

    interrupts = Interrupts().__enter__()
    try:
        if resume and state.step == 0 and 0 < state.epoch < cfg.epochs and eval_due(state.epoch - 1) and not any(
                r.get("event") == "eval" and r.get("epoch") == state.epoch for r in log.records):
            evaluate(state.epoch - 1)  # interrupted while evaluating: the checkpoint was already at the next epoch
        for epoch in range(state.epoch, cfg.epochs):
            if state.global_step >= total_steps:  # max_steps reached
                break
            if state.step == 0:  # start of an epoch: the graph and batching schedules
                if graphs and prunes_at(epoch, cfg):
                    graphs = prune_graphs(raw_graphs, encoder, dataset, cfg, log, epoch, state.global_step,
                                          progress and d.main,
                                          {"query": tokens_q, "label": tokens_l,
                                           **{f"anchor:{n}": t for n, t in tokens_a.items()}})
                    sampler.graphs = graphs
                if cfg.cluster_batching and epoch % cfg.cluster_refresh == 0:
                    from ramen.clustering import cluster_batches

                    q_emb = encoder.encode(tokens_q, cfg.encode_batch_size, desc="cluster queries",
                                           progress=progress)
                    pool = sampler.pool
                    sampler.set_batches(cluster_batches(q_emb[pool], pool, cluster_size_at(epoch, cfg),
                                                        cfg.batch_size, seed=cfg.seed + epoch))
            queries = sampler.epoch_queries(epoch) if sampler.batches is None else None
            steps = range(state.step, min(sampler.steps_per_epoch(), state.step + total_steps - state.global_step))

            def make(step: int, epoch=epoch, queries=queries) -> Batch:  # on the prefetch thread
                batch = attach_tokens(sampler.batch(epoch, step, queries), tokens_q, tokens_l, tokens_a)
                return transfer.pin_batch(batch, d.device)

            prefetch = Prefetcher(make, steps)
            from tqdm.auto import tqdm

            bar = tqdm(total=len(steps) + state.step, initial=state.step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       disable=not (progress and d.main), unit="step", leave=True)
            try:
                for batch in prefetch:
                    t0 = time.perf_counter()
                    mult = reliance.multipliers()
                    weights = {c: base_weights[c] * mult[c] for c in components}
                    with interrupts.step():  # the update, the progress and the log move together
                        try:
                            stats = train_step(module, encoder, optimizer, scheduler, batch, d, cfg, weights,
                                               reliance, reg_optimizer)
                        except ops.NonFiniteScores as exc:  # the CPU kernel's check of the embeddings
                            raise _non_finite(str(exc), epoch, batch.step, state.global_step, ckpt_path) from None
                        value, parts, spread, rewards = stats.read()  # the step's one host synchronisation
                        if not math.isfinite(value):
                            shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
                            raise _non_finite(f"loss is {value} (components: {shown})", epoch, batch.step,
                                              state.global_step, ckpt_path)
                        if rewards:
                            reliance.update(rewards)
                        state.step = batch.step + 1
                        state.global_step += 1
                        elapsed = time.perf_counter() - t0
                        qps = len(batch.query_ids) * (1 if gather else d.world) / elapsed
                        log.write({"event": "step", "epoch": epoch + 1, "step": batch.step,
                                   "global_step": state.global_step, "loss": value, "losses": parts,
                                   "lr": scheduler.get_last_lr()[0], "qps": qps, "spread": spread,
                                   "texts": int(sum(t[0].shape[0] for t in batch.tokens.values()))})
                    warning = collapse.update(spread["label"])
                    if warning and d.main:
                        log.info(warning, warning="collapse")
                    bar.set_postfix(loss=f"{value:.4f}", qps=f"{qps:.0f}")
                    bar.update(1)
            finally:
                prefetch.close()
                bar.close()
            if state.step < sampler.steps_per_epoch():  # max_steps cut this epoch short
                log.info(f"max_steps {cfg.max_steps} reached at epoch {epoch + 1}, step {state.step}")
                write_checkpoint()
                break
            with interrupts.step():
                state.epoch, state.step = epoch + 1, 0
                if cfg.reliance != "fixed" and components:
                    summary = reliance.summary()
                    shown = ", ".join(f"{c} x{v['multiplier']:.2f} (reward {v['mean_reward']:+.3f})"
                                      for c, v in summary.items())
                    log.write({"event": "reliance", "epoch": epoch + 1, "global_step": state.global_step,
                               "components": summary}, message=f"reliance after epoch {epoch + 1}: {shown}")
            if eval_due(epoch):
                evaluate(epoch)
            write_checkpoint()
    except KeyboardInterrupt:
        write_checkpoint()
        log.info(f"interrupted: checkpoint saved at epoch {state.epoch + 1}, step {state.step}; "
                 f"continue with resume=True (--resume)")
        raise
    finally:
        interrupts.__exit__()
    label_vectors = evaluate(state.epoch - 1 if state.step == 0 else state.epoch)  # the last epoch trained in
    encoder.eval()  # handed over for inference, as a loaded model is: no dropout in a direct forward call
    model = Model(encoder, dataset.label_texts)
    if out is not None and d.main:
        # served as saved (`python -m ramen search RUN_DIR "..."`), its search width tuned on training queries
        rng = np.random.default_rng(cfg.seed)
        sample = rng.choice(len(dataset.train_texts), size=min(TUNE_QUERIES, len(dataset.train_texts)), replace=False)
        model.build_index(progress=progress, tune_texts=[dataset.train_texts[i] for i in np.sort(sample)],
                          label_tokens=tokens_l, label_vectors=label_vectors)
        if model.tuning is not None:
            t = model.tuning
            log.write({"event": "index", "expansion_search": t["expansion_search"], "recall@10": t["recall"],
                       "reached": t["reached"], "sweep": t["sweep"], "queries": len(sample)},
                      message=f"label index: expansion_search {t['expansion_search']} gives recall@10 "
                              f"{t['recall']:.3f} on {len(sample)} training queries"
                              + ("" if t["reached"] else " (below the 0.95 target even at the widest search)"))
        model.save(out / "model")
        plot_curves(log.records, out / "curves.png")
        (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    d.barrier()
    return model


class _CallableModule(types.ModuleType):
    """`ramen.train` is both this module and, through `ramen`'s lazy names, the function `train`;
    whichever a user's imports leave there, `ramen.train(dataset, config)` works."""

    def __call__(self, dataset: Dataset, config: TrainConfig | None = None, **kwargs: Any) -> Model:
        return train(dataset, config, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
