"""The training graphs of a run: the anchor sets it uses, densified once by random walks with restart
(cached on disk), then pruned with the current encoder on the paper's schedule; and AugGT's labels.

    `warmup_epochs` on the unpruned graph, then pruned (cosine > threshold) every `prune_every` epochs.
"""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from ramen import memory
from ramen.batching import Graphs
from ramen.config import TrainConfig
from ramen.datasets import Dataset
from ramen.encoder import Encoder
from ramen.datasets.archive import read_npz
from ramen.datasets.xc import pack_csr, unpack_csr
from ramen.files import file_sha256, temp_path
from ramen.digest import content_key
from ramen.runlog import RunLog
from ramen.tokens import TokenCache


def used_anchor_sets(dataset: Dataset, cfg: TrainConfig) -> list[str]:
    """The anchor sets a run regularises with: those configured (all by default) with a non-zero weight.
    A set named in `anchor_sets` or `lambdas` that the dataset lacks is an error (a typo would
    otherwise leave that set at the default weight), with the graph on or off."""
    for field, named in (("anchor_sets", cfg.anchor_sets or []), ("lambdas", list(cfg.lambdas))):
        missing = [n for n in named if n not in dataset.anchor_sets]
        if missing:
            raise ValueError(f"TrainConfig.{field}: anchor sets {missing} are not in the dataset "
                             f"(it has {sorted(dataset.anchor_sets)})")
    if not cfg.graph or cfg.aug_gt:
        return []
    names = list(dataset.anchor_sets) if cfg.anchor_sets is None else list(cfg.anchor_sets)
    return [n for n in names if any(cfg.lambdas_for(n))]


def densified(E: sp.csr_matrix, cfg: TrainConfig, cache_dir: Path | None, tag: str, log: RunLog,
              name: str = "") -> sp.csr_matrix:
    """E after the random walk with restart (cached on disk), or E itself when densify is off for it."""
    if not cfg.densify:
        return E.tocsr()
    from ramen.graph import densify

    key = content_key(E, cfg.walk_length, cfg.restart_prob, cfg.densify_top_k, cfg.seed)
    path = cache_dir / f"densified-{tag}-{key}.npz" if cache_dir else None
    if path is not None and path.exists():
        try:
            return _load_densified(path, E.shape)
        except (OSError, ValueError) as exc:
            log.info(f"densified graph cache {path} failed its check, densifying again: {exc}")
    t0 = time.perf_counter()
    out = densify(E.tocsr(), walk_length=cfg.walk_length, restart_prob=cfg.restart_prob,
                  top_k=cfg.densify_top_k, seed=cfg.seed)
    log.info(f"densified {tag}: {E.nnz:,} -> {out.nnz:,} edges in {time.perf_counter() - t0:.1f} s",
             graph=tag, edges_before=int(E.nnz), edges_after=int(out.nnz))
    if path is not None:
        tmp = temp_path(path)  # every rank densifies and may write the cache at once
        arrays: dict[str, np.ndarray] = {}
        pack_csr(arrays, "graph", out)
        np.savez_compressed(tmp, **arrays)
        digest = file_sha256(tmp)
        os.replace(tmp, path)
        tmp = temp_path(_checksum_path(path))  # written last: the cache is complete once it is there
        tmp.write_text(digest)
        os.replace(tmp, _checksum_path(path))
    return out


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _load_densified(path: Path, shape: tuple[int, int]) -> sp.csr_matrix:
    """A densified graph `densified` cached, after checking it against its SHA-256 and its structure
    (a CSR matrix of `shape`, finite weights): a ValueError naming the file where either fails."""
    if file_sha256(path) != _checksum_path(path).read_text().strip():  # a missing checksum: OSError
        raise ValueError("it does not match its checksum (damaged, altered or cut short)")
    m = unpack_csr(read_npz(path), "graph")  # its structure checked in full (ids in range, indptr ascending)
    if m is None or m.shape != tuple(shape):
        raise ValueError(f"holds {'no graph' if m is None else f'a {m.shape} matrix'}, not the graph's {tuple(shape)}")
    if not np.isfinite(m.data).all():
        raise ValueError("holds non-finite weights")
    return m


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


def prune_graphs(raw: dict[str, Graphs], encoder: Encoder, dataset: Dataset, cfg: TrainConfig,
                 log: RunLog, epoch: int, global_step: int, progress: bool = True,
                 tokens: dict[str, TokenCache] | None = None) -> dict[str, Graphs]:
    """Keeps the edges of the densified graphs whose endpoints have cosine > threshold now.
    `tokens` ("query", "label", "anchor:<set>"), where given, are embedded instead of the texts.
    Queries and labels are embedded whole; an anchor set is embedded and pruned a block at a time
    (the same graphs) where that holds less memory (`memory.prune_in_blocks`)."""
    from ramen.graph import prune_edges, prune_edges_by_column_blocks

    tokens = tokens or {}
    bs = cfg.encode_batch_size
    pruned = {}
    report: dict[str, Any] = {}
    emb: dict[str, np.ndarray] = {}

    def rows(side: str) -> np.ndarray:
        if side not in emb:
            texts = dataset.train_texts if side == "query" else dataset.label_texts
            emb[side] = encoder.encode(tokens.get(side, texts), bs, tower=side,
                                       desc=f"embed {side}s", progress=progress)
        return emb[side]

    for name, g in raw.items():
        sides = [(side, E) for side, E in (("query", g.query), ("label", g.label)) if E is not None]
        graphs = [(E, rows(side)) for side, E in sides]
        texts = tokens.get(f"anchor:{name}", dataset.anchor_sets[name].texts)
        graph_bytes = sum(E.data.nbytes + E.indices.nbytes + E.indptr.nbytes for _, E in sides)
        if not memory.prune_in_blocks(len(texts), encoder.dim, graph_bytes):
            anchors = encoder.encode(texts, bs, desc=f"embed {name}", progress=progress)
            kept = [prune_edges(E, row_emb, anchors, threshold=cfg.prune_threshold) for E, row_emb in graphs]
        else:
            block = max(1, memory.PRUNE_BLOCK_BYTES // (4 * encoder.dim))
            blocks = encoder.encode_blocks(texts, bs, block_size=block, desc=f"embed {name}", progress=progress)
            kept = prune_edges_by_column_blocks(graphs, blocks, threshold=cfg.prune_threshold)
        by_side = dict(zip((side for side, _ in sides), kept))
        for side, E in sides:
            report[f"{name}/{side}"] = [int(by_side[side].nnz), int(E.nnz)]
        pruned[name] = Graphs(by_side.get("query"), by_side.get("label"))
    text = ", ".join(f"{k} kept {v[0]:,}/{v[1]:,}" for k, v in report.items())
    log.write({"event": "prune", "epoch": epoch, "global_step": global_step, "kept": report},
              message=f"pruned at epoch {epoch + 1}: {text}")
    return pruned


def prunes_at(epoch: int, cfg: TrainConfig) -> bool:
    """Whether the graphs are pruned at the start of `epoch` (0-based)."""
    return cfg.prune and epoch >= cfg.warmup_epochs and (epoch - cfg.warmup_epochs) % cfg.prune_every == 0


def cluster_size_at(epoch: int, cfg: TrainConfig) -> int:
    """NGAME's cluster size at `epoch`: cluster_size, doubled at each epoch of cluster_double_at passed."""
    return cfg.cluster_size * 2 ** sum(1 for e in cfg.cluster_double_at if epoch >= e)

