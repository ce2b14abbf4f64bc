"""Memory model of a training run, and the check that stops a run too large for the machine
before its long work starts (issue 26).

What a run adds to the resident set once its dataset is loaded, stage by stage, from the arrays'
dtypes (benchmarks/results/scale.md checks it against the `scale` suite's measurements):

    token caches    (4 * max_length + 4) bytes a text: int32 ids and length (train queries,
                    labels, the anchors of every used set; test queries at the first evaluation)
    densified graph 8 bytes an edge (int32 column, float32 weight) + 8 a row, for nnz + top_k * rows
                    edges; densifying one graph also holds its transposed structure (4 bytes an
                    edge + 4 a column)
    pruning         float32 embeddings of the queries and the labels (4 * dim bytes a text) and
                    of one anchor set, or of a PRUNE_BLOCK_BYTES block of it with three copies of
                    its graphs (transposed, kept, reassembled) where that is less; and the pruned
                    graphs beside the densified ones
    evaluation      float32 label vectors twice (the run's, the exact index's copy), the evaluated
                    queries' vectors, and a few 64 MB score blocks
    label index     HNSW: float16 vectors (2 * dim bytes) and 2 * 16 level-0 links (4 bytes each) a label
    checkpoint      the graphs' arrays twice (a copy to hash, the file's serialisation)
    optimizer       the encoder's parameters four times (weights, gradients, AdamW's two moments)

Every rank of a torchrun job on one machine holds all of it (the dataset, graphs and token
caches are not sharded), so the check multiplies by the ranks on this machine (LOCAL_WORLD_SIZE).
"""
from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

GB = 2 ** 30
EDGE_BYTES = 8  # int32 column + float32 weight
ROW_BYTES = 8  # an int64 indptr entry (int32 where it fits: 4)
SCORE_BLOCKS = 5 * 64 * 2 ** 20  # exact search: a 64 MB score block, its negation, int64 partition
PRUNE_BLOCK_BYTES = 512 << 20  # anchor embeddings pruning holds at once; a larger set comes in blocks
HNSW_LINKS = 2 * 16  # level-0 links a label (DEFAULT_CONNECTIVITY 16)
AVAILABLE_ENV = "RAMEN_MEMORY_AVAILABLE"  # bytes (or "12GB") to take as available instead of MemAvailable


class NotEnoughMemory(MemoryError):
    """The run's estimated peak exceeds the memory available: raised before the long work starts."""


def token_bytes(max_length: int) -> int:
    """Bytes a text takes in a token cache: int32 ids padded to max_length and an int32 length."""
    return 4 * int(max_length) + 4


@dataclasses.dataclass
class Estimate:
    """Bytes the run holds at the peak of each stage, beyond its loaded dataset (one rank)."""

    stages: dict[str, int]
    ranks: int = 1  # ranks of the job on this machine

    def peak(self) -> tuple[str, int]:
        """(stage, bytes) of the largest stage, times the ranks on this machine."""
        stage = max(self.stages, key=self.stages.get)
        return stage, self.stages[stage] * self.ranks

    def table(self) -> str:
        return ", ".join(f"{k} {v / GB:.2f} GB" for k, v in self.stages.items())


def estimate_run(dataset: Any, cfg: Any, dim: int, params: int, anchor_sets: list[str], *, ranks: int = 1
                 ) -> Estimate:
    """The memory a training run of `cfg` on `dataset` adds, stage by stage (see the module
    docstring): `dim` the encoder's output width, `params` its parameter count, `anchor_sets` the
    sets it trains with."""
    tok = token_bytes(cfg.max_length)
    n_train, n_test, n_labels = len(dataset.train_texts), len(dataset.test_texts), len(dataset.label_texts)
    sets = [dataset.anchor_sets[n] for n in anchor_sets]
    top_k = cfg.densify_top_k if cfg.densify else 0

    def graph_bytes(nnz: int, rows: int) -> int:
        return (nnz + top_k * rows) * EDGE_BYTES + (rows + 1) * ROW_BYTES

    graphs = [(a.train_X_A, a.label_A) for a in sets]
    set_graphs = [graph_bytes(q.nnz, q.shape[0]) + graph_bytes(lab.nnz, lab.shape[0]) for q, lab in graphs]
    graph_total = sum(set_graphs)
    transpose = max((4 * (m.nnz + m.shape[1]) for pair in graphs for m in pair), default=0)
    optimizer = 4 * 4 * int(params)
    tokens = tok * (n_train + n_labels + sum(len(a.texts) for a in sets))
    held = optimizer + graph_total  # what stays from the densification on
    stages = {"densify": optimizer + graph_total + transpose}
    stages["tokenise"] = held + tokens + 8192 * 2048  # a chunk of the tokenizer's per-text objects
    held += tokens
    if sets and cfg.prune:
        anchors = max(prune_anchor_bytes(len(a.texts), dim, g) for a, g in zip(sets, set_graphs))
        stages["prune"] = held + graph_total + 4 * dim * (n_train + n_labels) + anchors
        held += graph_total  # the pruned graphs beside the densified ones
    q_eval = n_test if cfg.eval_max_queries is None else min(n_test, cfg.eval_max_queries)
    held += tok * n_test  # the test queries' token cache
    stages["evaluate"] = held + 2 * 4 * dim * n_labels + 4 * dim * q_eval + SCORE_BLOCKS
    stages["label index"] = held + 4 * dim * n_labels + n_labels * (2 * dim + 4 * HNSW_LINKS + 16)
    stages["checkpoint"] = held + 2 * graph_total
    return Estimate(stages, ranks)


def prune_in_blocks(n_anchors: int, dim: int, graph_bytes: int) -> bool:
    """Whether pruning one anchor set holds less in blocks (a PRUNE_BLOCK_BYTES block of its
    embeddings and three copies of its graphs, `ramen.graph.prune_edges_by_column_blocks`) than
    with every anchor's embedding at once."""
    return 4 * dim * n_anchors > PRUNE_BLOCK_BYTES + 3 * graph_bytes


def prune_anchor_bytes(n_anchors: int, dim: int, graph_bytes: int) -> int:
    """What pruning holds for one anchor set (`graph_bytes`: its query and label graphs), whole or in blocks."""
    if prune_in_blocks(n_anchors, dim, graph_bytes):
        return PRUNE_BLOCK_BYTES + 3 * graph_bytes
    return 4 * dim * n_anchors


def available_bytes() -> tuple[int, str]:
    """(bytes, where from): RAMEN_MEMORY_AVAILABLE when set (a number of bytes, or with a GB or
    MB suffix), else the kernel's MemAvailable; (huge, "unknown") where neither exists."""
    given = os.environ.get(AVAILABLE_ENV)
    if given:
        return _given_bytes(given), AVAILABLE_ENV
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "MemAvailable"
    except OSError:
        pass
    return 1 << 62, "unknown"


def _given_bytes(given: str) -> int:
    """RAMEN_MEMORY_AVAILABLE's bytes: a finite number of at least one byte (inf, a negative figure
    or zero would make every check pass or every run fail), else a ValueError quoting it."""
    text = given.strip().upper()
    scale = next((v for k, v in (("GB", GB), ("MB", 2 ** 20)) if text.endswith(k)), 1)
    try:
        value = float(text[:-2] if scale != 1 else text) * scale
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"{AVAILABLE_ENV}={given!r}: expected a positive, finite number of bytes, or one with a "
                         "GB or MB suffix")
    return int(value)


def check_fits(estimate: Estimate) -> str:
    """Raises NotEnoughMemory naming the stage and the estimate when the run's peak exceeds the
    memory available; returns a line for the log otherwise."""
    stage, need = estimate.peak()
    have, source = available_bytes()
    ranks = (f" ({estimate.stages[stage] / GB:.2f} GB for each of the {estimate.ranks} ranks on this machine)"
             if estimate.ranks > 1 else "")  # `need` is their sum
    if need > have:
        raise NotEnoughMemory(
            f"not enough memory for this run: its {stage} stage needs about {need / GB:.1f} GB beyond the "
            f"loaded dataset{ranks}, but {have / GB:.1f} GB are available ({source}). By stage: "
            f"{estimate.table()}. Fewer anchor sets or test queries to evaluate (eval_max_queries), no "
            f"densification or pruning, or a machine with more memory would fit; set {AVAILABLE_ENV} to "
            "override the figure.")
    return (f"memory: the run needs about {need / GB:.2f} GB at its peak ({stage}) beyond the loaded dataset"
            f"{ranks}; {have / GB:.1f} GB available ({source})")
