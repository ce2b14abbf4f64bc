"""The training loop: RAMEN's objective over epochs, with its graph schedule, evaluations and checkpoints.

    L + sum_t (lambda_x R_x^t + lambda_z R_z^t), AdamW with linear warm-up and decay.
    Each epoch: prune the graphs when the schedule says so (ramen.training_graphs), re-cluster the
    queries for NGAME batches, take the steps (ramen.step), evaluate, write the checkpoint
    (ramen.train_state). One process, or one per GPU under torchrun.
Batches are a pure function of (seed, epoch, step) and checkpoints hold every state, so a resumed
run continues exactly where the interrupted one stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
import types
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ramen import checkpoint, distributed, memory, ops, precision, run_dir, transfer
from ramen.batching import Batch, BatchSampler, Graphs, Prefetcher, attach_tokens
from ramen.collapse import CollapseWatch, collapse_advice
from ramen.config import TrainConfig
from ramen.datasets import Dataset
from ramen.digest import data_fingerprint
from ramen.encoder import Encoder
from ramen.files import replace_file
from ramen.interrupts import Interrupts, raise_dropped
from ramen.losses import component_names
from ramen.model import Model
from ramen.reg_step import make_reg_optimizer
from ramen.reliance import Reliance
from ramen.run_cache import tokenize_cached
from ramen.runlog import RunLog, plot_curves
from ramen.step import BatchEncoder, lr_lambda, make_optimizer, train_step
from ramen.tokens import TokenCache
from ramen.train_state import CHECKPOINT, Progress, restore, rng_state, save_checkpoint
from ramen.training_graphs import (augment_ground_truth, build_graphs, cluster_size_at, prune_graphs, prunes_at,
                                   used_anchor_sets)

TUNE_QUERIES = 500  # training queries the saved label index's search width is tuned on


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclasses.dataclass
class Run:
    """What a training run holds from its start to its end."""

    cfg: TrainConfig
    dataset: Dataset
    splits: dict[str, Dataset]  # evaluated after epochs: "test" and the caller's eval_sets
    d: distributed.Dist
    out: Path | None
    log: RunLog
    progress: bool
    encoder: Encoder
    module: torch.nn.Module  # the batch encoder, wrapped by DDP under torchrun
    optimizer: torch.optim.Optimizer
    scheduler: Any
    reg_optimizer: torch.optim.Optimizer | None
    sampler: BatchSampler
    raw_graphs: dict[str, Graphs]  # densified, unpruned
    graphs: dict[str, Graphs]  # as pruned now
    tokens: dict[str, TokenCache]  # "query", "label", "anchor:<set>"
    base_weights: dict[str, float]
    components: list[str]
    reliance: Reliance
    total_steps: int
    state: Progress = dataclasses.field(default_factory=Progress)
    collapse: CollapseWatch = dataclasses.field(default_factory=CollapseWatch)
    eval_tokens: dict[str, TokenCache] = dataclasses.field(default_factory=dict)
    data: dict[str, str] | None = None  # the data's fingerprint, kept in checkpoints (with a run directory)
    checkpointed: bool = False  # whether ckpt_path holds this run's state (written by it, or resumed from)

    @property
    def ckpt_path(self) -> Path | None:
        return self.out / CHECKPOINT if self.out is not None else None

    @property
    def cache_dir(self) -> Path | None:
        return self.out / "cache" if self.out is not None else None

    @property
    def gather(self) -> bool:  # in-batch candidates from every rank
        return self.d.enabled and self.cfg.gather_across_ranks


def train(dataset: Dataset, config: TrainConfig | None = None, *, out_dir: str | os.PathLike | None = None,
          resume: bool = False, progress: bool = True, eval_sets: dict[str, Dataset] | None = None,
          _on_set_up: Callable[[], None] | None = None) -> Model:
    """Trains an encoder on `dataset` with `config`; returns the Model (also saved in out_dir/model).

    With `out_dir`, writes log.jsonl, checkpoint.safetensors (every epoch, and on Ctrl-C or SIGTERM),
    curves.png and model/; `resume=True` continues from out_dir/checkpoint.safetensors exactly.
    `eval_sets` are more splits evaluated beside the test split at every evaluation (each a Dataset
    over the same labels whose test split holds its queries, e.g. held-out training queries to choose
    a recipe by); their eval events carry the name as "split". (`_on_set_up`, for select_graph_weight:
    called once a new run is set up, past the checks that refuse it, before its first step.)
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"train: dataset must be a ramen Dataset (ramen.load_xc(path), ramen.synthetic(...)), "
                        f"got {type(dataset).__name__}")
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"train: config must be a TrainConfig (TrainConfig(**fields) or ramen.recipe(name)), "
                        f"got {type(config).__name__}")
    config = (config or TrainConfig()).validate()
    if not resume:
        refuse_idle(config, "train")
    with run_dir.claimed(out_dir, fresh=not resume, main=os.environ.get("RANK", "0") == "0"):  # rank 0 writes it
        return _train(dataset, config, out_dir, resume, progress, eval_sets or {}, _on_set_up)


def refuse_idle(config: TrainConfig, where: str) -> None:
    """A ValueError naming the settings `config` moves from their defaults where its switches leave
    them unread (`TrainConfig.idle_settings`): the run would silently train without them."""
    idle = config.idle_settings()
    if not idle:
        return
    hint = " (graph=True alone is the light-graph recipe)" if any(
        config.idle_fields()[s.split("=")[0]] == "graph=True" for s in idle) else ""
    raise ValueError(f"{where}: {config.idle_refusal(idle)}: change that{hint}, or leave "
                     f"{'it' if len(idle) == 1 else 'them'} at the default (TrainConfig.without_idle())")


def _train(dataset: Dataset, config: TrainConfig, out_dir: str | os.PathLike | None, resume: bool, progress: bool,
           eval_sets: dict[str, Dataset], on_set_up: Callable[[], None] | None = None) -> Model:
    """train's run, in a directory it holds."""
    run = _start(dataset, config, out_dir, progress, eval_sets, resume)
    raise_dropped()  # a Ctrl-C in the set-up that a finaliser swallowed: before anything is replaced
    cfg, state = run.cfg, run.state
    if resume:
        if run.d.enabled:
            _same_checkpoint(run)
        state, run.graphs = restore(run.ckpt_path, cfg, run.encoder, run.optimizer, run.scheduler,
                                    run.reg_optimizer, run.sampler, run.reliance, run.data, run.d.rank, run.d.device)
        run.state, run.checkpointed = state, True
        run.log.truncate(state.global_step)
        due = run.collapse.replay(run.log.records)  # rank 0 holds the log, and warns
        if due and run.d.main:
            run.log.info(due, warning="collapse")
        if state.epoch >= cfg.epochs or state.global_step >= run.total_steps:
            run.log.info(f"{run.ckpt_path} is of a finished run (step {state.global_step} of {run.total_steps}): "
                         "nothing left to train; saving it again")
        else:
            run.log.info(f"resumed from {run.ckpt_path} at epoch {state.epoch + 1}, step {state.step}")
    elif run.out is not None and run.d.main:  # set up: an earlier run's checkpoint and model are no longer this
        run_dir.discard(run.out, run_dir.OUTPUTS)  # run's (a resume would continue it, evaluate would score it)
        run.log.start()  # nor its log
        if on_set_up is not None:
            on_set_up()
    sync = (lambda held: distributed.any_rank(held, run.d)) if run.d.enabled else None  # every rank stops together
    interrupts = Interrupts(sync).__enter__()
    try:
        missing = _unevaluated(run, state.epoch)
        if resume and state.step == 0 and 0 < state.epoch < cfg.epochs and _eval_due(cfg, state.epoch - 1) and \
                distributed.agree(bool(missing), run.d):
            _evaluate(run, state.epoch - 1, missing)  # stopped while evaluating: the checkpoint was at the next epoch
        for epoch in range(state.epoch, cfg.epochs):
            if state.global_step >= run.total_steps:  # max_steps reached
                break
            if state.step == 0:  # start of an epoch: the graph and batching schedules
                _start_epoch(run, epoch)
            _train_epoch(run, epoch, interrupts)
            if state.step < run.sampler.steps_per_epoch():  # max_steps cut this epoch short
                run.log.info(f"max_steps {cfg.max_steps} reached at epoch {epoch + 1}, step {state.step}")
                _save(run)
                break
            with interrupts.step():
                state.epoch, state.step = epoch + 1, 0
                _log_reliance(run, epoch)
            _save(run)  # before the evaluation, which may be long: a stop in it keeps the epoch (a resume redoes it)
            if _eval_due(cfg, epoch):
                _evaluate(run, epoch)
        interrupts.raise_held()  # a signal after the last step's end (under torchrun, where signals wait for one)
    except KeyboardInterrupt:
        if interrupts.cut_step:  # raised inside a step: its weights or RNG may be halfway through it
            run.log.info(f"interrupted inside step {state.step} of epoch {state.epoch + 1} by an exception, not a "
                         "signal: no checkpoint written (it would not resume exactly); resume=True (--resume) "
                         "continues from the last one")
            raise
        _save(run)
        run.log.info(f"interrupted: checkpoint saved at epoch {state.epoch + 1}, step {state.step}; "
                     f"continue with resume=True (--resume)")
        raise
    finally:
        interrupts.__exit__()
    return _finish(run)


# ---------------------------------------------------------------- the start


def _start(dataset: Dataset, cfg: TrainConfig, out_dir: str | os.PathLike | None, progress: bool,
           eval_sets: dict[str, Dataset], resume: bool = False) -> Run:
    """Everything a run needs before its first step: the device, the log (a new one unless resuming),
    the encoder, the graphs, the tokens, the sampler and the optimizers (the memory check stops a run
    too large first)."""
    splits = {"test": dataset, **eval_sets}
    for name, ds in splits.items():
        if ds is not dataset and (name == "test" or ds.label_texts != dataset.label_texts):
            raise ValueError(f"eval_sets[{name!r}]: needs a name other than 'test' and the dataset's labels")
    used = used_anchor_sets(dataset, cfg)  # checks the names first: a typo stops here, before the log is touched
    d = distributed.setup(cfg.device)
    if d.enabled and not cfg.gather_across_ranks and cfg.graph and (
            cfg.reg_step == "separate" or cfg.reliance == "bandit"):
        raise ValueError(f"gather_across_ranks=False under torchrun cannot take reg_step={cfg.reg_step!r} with "
                         f"reliance={cfg.reliance!r}: the separate step and the bandit need the same loss components "
                         "and rewards on every rank, which only the gathered batch gives (keep gather_across_ranks)")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        (out / "cache").mkdir(parents=True, exist_ok=True)
    cache_dir = out / "cache" if out is not None else None
    log = RunLog(out / "log.jsonl" if out is not None and d.main else None, echo=progress and d.main, fresh=not resume)
    torch.manual_seed(cfg.seed)
    encoder = _encoder(cfg, d, log)
    # before the long work: a run too large for this machine stops here, naming the stage (issue 26)
    estimate = memory.estimate_run(dataset, cfg, encoder.dim, sum(p.numel() for p in encoder.parameters()),
                                   used,
                                   ranks=int(os.environ.get("LOCAL_WORLD_SIZE", "1")) if d.enabled else 1)
    try:
        fits, short = memory.check_fits(estimate), None
    except memory.NotEnoughMemory as exc:
        fits, short = None, exc
    if distributed.any_rank(short is not None, d):  # every rank stops, not only the one short of memory
        raise short or memory.NotEnoughMemory("another rank of this run has not enough memory for it (its error "
                                              "names the stage and the estimate)")
    log.info(fits, memory_estimate=estimate.stages)
    train_Y = augment_ground_truth(dataset, cfg) if cfg.aug_gt else dataset.train_Y.tocsr()
    if cfg.aug_gt:
        log.info(f"AugGT: {dataset.train_Y.nnz:,} -> {train_Y.nnz:,} training labels by label propagation")
    if dataset.num_test == 0:
        log.info("the dataset has no test queries: no evaluation during or after training")
    elif cfg.eval_k > len(dataset.label_texts):
        log.info(f"eval_k {cfg.eval_k} is more than the {len(dataset.label_texts):,} labels: metrics at "
                 f"1..{len(dataset.label_texts):,}")
    unlabelled = int((np.diff(train_Y.indptr) == 0).sum())
    if unlabelled:
        log.info(f"{unlabelled:,} training queries have no label: they are never sampled")
    raw_graphs = _graphs(d, dataset, cfg, cache_dir, log)
    tokens = {"query": _tokens(d, encoder, dataset.train_texts, cache_dir, "train", log),
              "label": _tokens(d, encoder, dataset.label_texts, cache_dir, "labels", log),
              **{f"anchor:{n}": _tokens(d, encoder, dataset.anchor_sets[n].texts, cache_dir, f"anchors-{n}", log)
                 for n in raw_graphs}}

    gather = d.enabled and cfg.gather_across_ranks
    sampler = BatchSampler(train_Y, dict(raw_graphs), cfg.batch_size, seed=cfg.seed, rank=0 if gather else d.rank,
                           world=1 if gather else d.world, num_random_negatives=cfg.random_negatives)
    total_steps = _total_steps(cfg, sampler)
    batch_encoder = BatchEncoder(encoder, every_tower=d.enabled).to(d.device)
    module: torch.nn.Module = batch_encoder
    if d.enabled:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    optimizer = make_optimizer(batch_encoder, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total_steps, cfg.warmup))
    reg_optimizer = make_reg_optimizer(optimizer) if cfg.graph and cfg.reg_step == "separate" else None
    base_weights = cfg.component_weights(list(raw_graphs))
    components = [c for c in component_names(list(raw_graphs)) if base_weights[c]]
    reliance = Reliance(components, mode=cfg.reliance, lr=cfg.reliance_lr)
    return Run(cfg, dataset, splits, d, out, log, progress, encoder, module, optimizer, scheduler, reg_optimizer,
               sampler, raw_graphs, dict(raw_graphs), tokens, base_weights, components, reliance, total_steps,
               collapse=CollapseWatch(advice=collapse_advice(cfg)),
               data=data_fingerprint(dataset) if out is not None else None)


def _graphs(d: distributed.Dist, dataset: Dataset, cfg: TrainConfig, cache_dir: Path | None, log: RunLog
            ) -> dict[str, Graphs]:
    """The densified training graphs from the run's cache. Under torchrun rank 0 densifies a first
    run's graphs while the others wait, then they read its cache (as `_tokens` does)."""
    if d.enabled and cache_dir is not None:
        if d.main:
            build_graphs(dataset, cfg, cache_dir, log)
        d.barrier()
    return build_graphs(dataset, cfg, cache_dir, log)


def _tokens(d: distributed.Dist, encoder: Encoder, texts: list[str], cache_dir: Path | None, name: str,
            log: RunLog) -> TokenCache:
    """The texts' token ids from the run's cache (one that fails its check is rebuilt, said in the log).
    Under torchrun rank 0 tokenises a first run's texts while the others wait, then they read its cache
    (where the run directory is not shared between machines, a rank that finds no cache tokenises them itself)."""
    if d.enabled and cache_dir is not None:
        if d.main:
            tokenize_cached(encoder, texts, cache_dir, name, log.info)
        d.barrier()
    return tokenize_cached(encoder, texts, cache_dir, name, log.info)


def _encoder(cfg: TrainConfig, d: distributed.Dist, log: RunLog) -> Encoder:
    """The encoder to train, on the run's device, in training mode, its dropout as configured."""
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
    return encoder


# ---------------------------------------------------------------- an epoch


def _pruned(run: Run, epoch: int) -> dict[str, Graphs]:
    """The graphs pruned with the encoder as it is now. Under torchrun rank 0 prunes and sends them to
    the others, which hold no embeddings for it and get the same graphs, bit for bit."""
    d = run.d
    pruned = prune_graphs(run.raw_graphs, run.encoder, run.dataset, run.cfg, run.log, epoch, run.state.global_step,
                          run.progress and d.main, run.tokens) if d.main else None
    if not d.enabled:
        return pruned
    return {name: Graphs(*(None if getattr(raw, side) is None
                           else distributed.broadcast_csr(getattr(pruned[name], side) if d.main else None, d)
                           for side in ("query", "label")))
            for name, raw in run.raw_graphs.items()}


def _total_steps(cfg: TrainConfig, sampler: BatchSampler) -> int:
    """The steps the run will take (its learning-rate schedule spans them): every epoch's, those of
    the shuffle or of the batches each epoch's clusters make, up to max_steps."""
    if cfg.cluster_batching:  # an epoch keeps the clusters of the last refresh
        total = sum(sampler.cluster_steps(cluster_size_at(e - e % cfg.cluster_refresh, cfg)) for e in range(cfg.epochs))
    else:
        total = cfg.epochs * sampler.steps_per_epoch()
    return total if cfg.max_steps is None else min(total, cfg.max_steps)


def _start_epoch(run: Run, epoch: int) -> None:
    """The schedules at the start of an epoch: prune the graphs, re-cluster the queries."""
    cfg = run.cfg
    if run.graphs and prunes_at(epoch, cfg):
        run.graphs = _pruned(run, epoch)
        run.sampler.graphs = run.graphs
    if cfg.cluster_batching and epoch % cfg.cluster_refresh == 0:
        run.sampler.set_batches(_cluster_batches(run, epoch))


def _cluster_batches(run: Run, epoch: int) -> list[np.ndarray]:
    """The epoch's batches of query clusters, with the encoder as it is now. Under torchrun each rank
    encodes its share of the queries and rank 0 clusters them all and sends the batches to the
    others: every rank trains on the same batches, whatever its GPU's rounding."""
    from ramen.clustering import cluster_batches

    cfg, d, tokens = run.cfg, run.d, run.tokens["query"]
    mine = distributed.shard(len(tokens), d)
    part = tokens.subset(np.arange(mine.start, mine.stop)) if d.enabled else tokens
    emb = distributed.gather_to_main(run.encoder.encode(part, cfg.encode_batch_size, desc="cluster queries",
                                                        progress=run.progress and d.main), len(tokens), d)
    pool = run.sampler.pool
    batches = (cluster_batches(emb[pool], pool, cluster_size_at(epoch, cfg), cfg.batch_size, seed=cfg.seed + epoch)
               if d.main else None)
    return distributed.broadcast_batches(batches, d)


def _train_epoch(run: Run, epoch: int, interrupts: Interrupts) -> None:
    """The steps of `epoch` from run.state.step on (up to max_steps), batches built a few ahead."""
    from ramen.progress import bar as progress_bar

    cfg, state, sampler = run.cfg, run.state, run.sampler
    queries = sampler.epoch_queries(epoch) if sampler.batches is None else None
    steps = range(state.step, min(sampler.steps_per_epoch(), state.step + run.total_steps - state.global_step))
    anchors = {k.removeprefix("anchor:"): t for k, t in run.tokens.items() if k.startswith("anchor:")}

    def make(step: int) -> Batch:  # on the prefetch thread
        batch = attach_tokens(sampler.batch(epoch, step, queries), run.tokens["query"], run.tokens["label"], anchors)
        return transfer.pin_batch(batch, run.d.device)

    prefetch = Prefetcher(make, steps)
    bar = progress_bar(total=len(steps) + state.step, initial=state.step, desc=f"epoch {epoch + 1}/{cfg.epochs}",
               disable=not (run.progress and run.d.main), unit="step", leave=True)
    try:
        for batch in prefetch:
            with interrupts.step():  # the update, the progress and the log move together
                value, qps, spread = _step(run, epoch, batch)
            warning = run.collapse.update(spread["label"])
            if warning and run.d.main:
                run.log.info(warning, warning="collapse")
            bar.set_postfix(loss=f"{value:.4f}", qps=f"{qps:.0f}", refresh=False)  # shown by update, at its interval
            bar.update(1)
    finally:
        prefetch.close()
        bar.close()


def _step(run: Run, epoch: int, batch: Batch) -> tuple[float, float, dict[str, float]]:
    """One step and its log record; (loss, queries/s, in-batch spread). A non-finite loss stops the run here."""
    state, t0 = run.state, time.perf_counter()
    mult = run.reliance.multipliers()
    weights = {c: run.base_weights[c] * mult[c] for c in run.components}
    lr = run.optimizer.param_groups[0]["lr"]  # the rate this step trains with: the step moves the scheduler on
    try:
        stats = train_step(run.module, run.encoder, run.optimizer, run.scheduler, batch, run.d, run.cfg, weights,
                           run.reliance, run.reg_optimizer)
    except ops.NonFiniteScores as exc:  # the CPU kernel's check of the embeddings
        raise _non_finite(run, str(exc), epoch, batch.step) from None
    value, parts, spread, rewards = stats.read()  # the step's one host synchronisation
    finite = math.isfinite(value)
    if run.d.enabled and not run.gather:  # each rank's own loss: every rank stops if any went non-finite
        finite = not distributed.any_rank(not finite, run.d)
    if not finite:
        shown = ", ".join(f"{k}={v:.4g}" for k, v in parts.items())
        what = f"loss is {value} (components: {shown})" if not math.isfinite(value) else \
            f"another rank's loss is not finite (this rank's: {value:.4g})"
        raise _non_finite(run, what, epoch, batch.step)
    if rewards:
        run.reliance.update(rewards)
    state.step = batch.step + 1
    state.global_step += 1
    qps = len(batch.query_ids) * (1 if run.gather else run.d.world) / (time.perf_counter() - t0)
    run.log.write({"event": "step", "epoch": epoch + 1, "step": batch.step, "global_step": state.global_step,
                   "loss": value, "losses": parts, "lr": lr, "qps": qps, "spread": spread,
                   "texts": int(sum(t[0].shape[0] for t in batch.tokens.values()))})
    return value, qps, spread


def _non_finite(run: Run, what: str, epoch: int, step: int) -> NonFiniteLoss:
    """The error that stops a run gone NaN or infinite: what, where, and the checkpoint to go back to."""
    return NonFiniteLoss(f"{what} at epoch {epoch + 1}, step {step} (global step {run.state.global_step})"
                         + (f". The last good checkpoint is {run.ckpt_path}" if run.checkpointed else
                            ". No checkpoint was written yet"))


def _log_reliance(run: Run, epoch: int) -> None:
    """The bandit's multipliers and mean rewards over the epoch."""
    if run.cfg.reliance == "fixed" or not run.components:
        return
    summary = run.reliance.summary()
    shown = ", ".join(f"{c} x{v['multiplier']:.2f} (reward {v['mean_reward']:+.3f})" for c, v in summary.items())
    run.log.write({"event": "reliance", "epoch": epoch + 1, "global_step": run.state.global_step,
                   "components": summary}, message=f"reliance after epoch {epoch + 1}: {shown}")


# ---------------------------------------------------------------- evaluation, checkpoints, the end


def _eval_due(cfg: TrainConfig, epoch: int) -> bool:
    """Whether the evaluation after epoch `epoch` (0-based) is due (the last one always comes at the end)."""
    return bool(cfg.eval_every) and (epoch + 1) % cfg.eval_every == 0 and epoch + 1 < cfg.epochs


def _unevaluated(run: Run, epoch: int, global_step: int | None = None) -> list[str]:
    """The splits with test queries that have no eval record after `epoch` (1-based; at `global_step`
    where given) in the log, which rank 0 holds: what a stop left unevaluated."""
    done = {r.get("split", "test") for r in run.log.records if r.get("event") == "eval" and r.get("epoch") == epoch
            and (global_step is None or r.get("global_step") == global_step)}
    return [split for split, ds in run.splits.items() if split not in done and ds.num_test]


def _evaluate(run: Run, epoch: int, splits: list[str] | None = None) -> np.ndarray | None:
    """Logs the metrics of every split (rank 0), or of `splits` (those a stop left unevaluated);
    returns the label embeddings it made, for the index."""
    cfg, vectors = run.cfg, None
    if run.d.main:
        model = Model(run.encoder, run.dataset.label_texts)
        vectors = model.label_vectors(run.tokens["label"], batch_size=cfg.encode_batch_size, progress=False)
        for split, ds in run.splits.items():
            if ds.num_test == 0 or (splits is not None and split not in splits):
                continue  # a dataset without test queries (said once at the start): nothing to evaluate
            if split not in run.eval_tokens:  # each split's queries, tokenised at the first evaluation
                run.eval_tokens[split] = tokenize_cached(run.encoder, ds.test_texts, run.cache_dir, f"eval-{split}",
                                                          run.log.info)
            m = model.evaluate(ds, k=cfg.eval_k, max_queries=cfg.eval_max_queries, seed=cfg.seed,
                               batch_size=cfg.encode_batch_size, progress=False, query_tokens=run.eval_tokens[split],
                               label_vectors=vectors)
            flat = {f"{name}@{k + 1}": float(v[k]) for name, v in m.items()
                    if isinstance(v, np.ndarray) and v.ndim == 1 for k in range(len(v))}
            shown = ", ".join(f"{k} {100 * flat[k]:.2f}" for k in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5")
                              if k in flat)
            run.log.write({"event": "eval", "split": split, "epoch": epoch + 1, "global_step": run.state.global_step,
                           "metrics": flat},
                          message=f"eval after epoch {epoch + 1}{'' if split == 'test' else f' ({split})'}: {shown}")
    run.d.barrier()
    return vectors


def _same_checkpoint(run: Run) -> None:
    """Under torchrun every rank must resume from rank 0's checkpoint (DDP does not align the weights
    after the start): a rank that finds none, or another one, stops every rank, naming it."""
    path = run.ckpt_path
    mine = checkpoint.stated_digest(path) if path is not None and path.is_file() else ""
    seen = [b.tobytes().decode() for b in distributed.gather_bytes(np.array(list(mine.encode()), np.uint8), run.d)]
    odd = [r for r, digest in enumerate(seen) if digest != seen[0] or not digest]
    if odd:
        raise ValueError(f"cannot resume {path} under torchrun: rank(s) {odd} find no checkpoint there or another one "
                         "than rank 0's; every rank must see the same run directory (a shared filesystem)")


def _save(run: Run) -> None:
    """The checkpoint, written by rank 0 where the run has a directory."""
    if run.ckpt_path is None:
        return
    rank_rng = distributed.gather_bytes(rng_state(run.d.device), run.d) if run.d.enabled else None  # every rank's
    if run.d.main:
        save_checkpoint(run.ckpt_path, run.encoder, run.optimizer, run.scheduler, run.state, run.cfg, run.graphs,
                        run.sampler.batches, run.reliance, run.reg_optimizer, run.data, rank_rng)
    run.d.barrier()  # no rank leaves before the file is written (torchrun stops the rest when one exits)
    run.checkpointed = True  # on every rank: the one rank 0 wrote


def _finish(run: Run) -> Model:
    """The last evaluation, then the model handed over for inference and, with a directory, saved
    with its label index (its search width tuned on training queries), the curves and the config."""
    state, cfg, dataset = run.state, run.cfg, run.dataset
    last = state.epoch - 1 if state.step == 0 else state.epoch  # the last epoch trained in
    # those evaluated there already: by a resumed finished run, or at a max_steps epoch end
    label_vectors = _evaluate(run, last, _unevaluated(run, last + 1, state.global_step))
    run.encoder.eval()  # handed over for inference, as a loaded model is: no dropout in a direct forward call
    model = Model(run.encoder, dataset.label_texts)
    if run.out is not None and run.d.main:
        # served as saved (`python -m ramen search RUN_DIR "..."`), its search width tuned on training queries
        rng = np.random.default_rng(cfg.seed)
        sample = rng.choice(len(dataset.train_texts), size=min(TUNE_QUERIES, len(dataset.train_texts)), replace=False)
        model.build_index(progress=run.progress, tune_texts=[dataset.train_texts[i] for i in np.sort(sample)],
                          label_tokens=run.tokens["label"], label_vectors=label_vectors)
        run.log.discard("index")  # a resumed finished run's: built again
        if model.tuning is not None:
            t = model.tuning
            run.log.write({"event": "index", "expansion_search": t["expansion_search"], "recall@10": t["recall"],
                           "reached": t["reached"], "sweep": t["sweep"], "queries": len(sample)},
                          message=f"label index: expansion_search {t['expansion_search']} gives recall@10 "
                                  f"{t['recall']:.3f} on {len(sample)} training queries"
                                  + ("" if t["reached"] else " (below the 0.95 target even at the widest search)"))
        model.save(run.out / "model")
        plot_curves(run.log.records, run.out / "curves.png")
        replace_file(run.out / "config.json", json.dumps(cfg.to_dict(), indent=1).encode())
    run.d.barrier()
    return model


class _CallableModule(types.ModuleType):
    """`ramen.train` is both this module and, through `ramen`'s lazy names, the function `train`;
    whichever a user's imports leave there, `ramen.train(dataset, config)` works."""

    def __call__(self, dataset: Dataset, config: TrainConfig | None = None, **kwargs: Any) -> Model:
        return train(dataset, config, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
