"""Suite `scale`: every stage of a training run but the encoder's forward and backward pass, at the
RAMEN paper's scale (LF-WikiSeeAlsoTitles-320K's shape: 693K training queries, 177K test queries,
312K labels, 2.46M + 656K anchors, 27M query-anchor edges) or a stated fraction of it.

Per stage: wall time, throughput and resident memory (the process's peak during the stage, from
the kernel's reset high-water mark, and how far it rose above the stage's start). The stages run
in one process, in a run's order, each on what the earlier ones left, as `ramen.train` holds them;
the tiny encoder (32-d) stands in for the real one, whose cost is the `train` and `encode` suites'.
Targets: the whole suite's peak <= 12 GB; sampling and prefetching a batch of 1024 queries with two
anchor sets <= 20 ms on one core (a DistilBERT step of the paper's batch takes a few hundred ms on
an H100); floors where one exists (reading or writing the same bytes as plain files).
"""
from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ramen.bench.common import Row, StageMemory

SUITE = "scale"
PAPER = "paper"
QUICK_SIZE = "small"
SAMPLING_TARGET_MS = 20.0  # per batch of 1024 queries, two anchor sets, one core
PEAK_TARGET_GB = 12.0  # the whole run
BATCH = 1024
TUNE_QUERIES = 500
# fields of the "paper" preset that a fraction scales (the rest, e.g. degrees, are per item)
_SCALED = ("num_train", "num_test", "num_labels", "num_topics", "hyperlink_anchors", "category_anchors")


def dataset_config(size: str) -> tuple[str, dict[str, int]]:
    """(synthetic preset, overrides) of `size`: a preset name ("paper", "medium", "small",
    "tiny") or a fraction of the paper's shape in (0, 1], such as "0.25" (every count scaled, the
    degrees kept)."""
    from ramen.datasets.synthetic import PRESETS

    if size in PRESETS:
        return size, {}
    try:
        frac = float(size)
    except ValueError:
        raise ValueError(f"size: expected one of {sorted(PRESETS)} or a fraction of {PAPER!r} in (0, 1], "
                         f"got {size!r}") from None
    if not 0 < frac <= 1:
        raise ValueError(f"size: a fraction of {PAPER!r} must be in (0, 1], got {size!r}")
    return PAPER, {f: max(1, int(round(PRESETS[PAPER][f] * frac))) for f in _SCALED}


@dataclasses.dataclass
class Stage:
    """One measured stage: `work` items of `unit` in `seconds`, and its resident memory."""

    name: str
    seconds: float
    work: float
    unit: str
    memory: StageMemory
    peer: float | None = None  # a floor or target, in the row's metric
    peer_name: str = ""
    metric: str = ""  # the row's metric; default `unit`/s
    better: str = "higher"
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)

    def value(self) -> float:
        return self.work / self.seconds if self.metric == "" else self.work

    def row(self) -> Row:
        gb = 2.0 ** 30
        settings = {"wall_s": round(self.seconds, 3), "peak_rss_GB": round(self.memory.peak / gb, 3),
                    "rss_rise_GB": round((self.memory.peak - self.memory.start) / gb, 3),
                    "rss_end_GB": round(self.memory.end / gb, 3), **self.settings}
        return Row(SUITE, self.name, self.metric or "throughput", self.value(), self.peer, self.peer_name,
                   self.metric or f"{self.unit}/s", self.better, settings)


class Runner:
    """Runs the stages in order, keeping what each leaves for the next (as a training run would)."""

    def __init__(self, size: str, tmp: Path, *, sampling_batches: int, progress: bool = False):
        self.size = size
        self.tmp = tmp
        self.sampling_batches = sampling_batches
        self.progress = progress
        self.stages: list[Stage] = []

    def measure(self, name: str, fn: Callable[[], tuple[float, str] | dict[str, Any]], **row: Any) -> Stage:
        """Times `fn` (which returns (work, unit) or a dict of Stage fields) and records its memory."""
        with StageMemory() as mem:
            t0 = time.perf_counter()
            out = fn()
            seconds = time.perf_counter() - t0
        fields = dict(zip(("work", "unit"), out)) if isinstance(out, tuple) else dict(out)
        stage = Stage(name, fields.pop("seconds", seconds), memory=mem, **{**fields, **row})
        self.stages.append(stage)
        gb = 2.0 ** 30
        print(f"  {name}: {stage.seconds:.2f} s, {stage.value():,.4g} {stage.metric or stage.unit + '/s'}, "
              f"peak RSS {mem.peak / gb:.2f} GB (+{(mem.peak - mem.start) / gb:.2f})", flush=True)
        return stage

    # ---------------------------------------------------------------- the stages

    def run(self) -> list[Stage]:
        import torch

        from ramen.config import TrainConfig

        torch.set_num_threads(1)  # one core, as a rank's data work has beside its GPU
        preset, overrides = dataset_config(self.size)
        self.cfg = TrainConfig(encoder="tiny", graph=True, batch_size=BATCH, seed=0)  # light-graph's graphs
        self._generate(preset, overrides)
        self._tokenise()
        self._densify()
        self._sampling()
        self._prune()
        self._index_and_evaluate()
        self._checkpoint()
        return self.stages

    def _generate(self, preset: str, overrides: dict[str, int]) -> None:
        from ramen.datasets import load_xc, save_xc
        from ramen.datasets.synthetic import synthetic

        holder: dict[str, Any] = {}

        def generate() -> tuple[float, str]:
            holder["ds"] = synthetic(preset, seed=0, **overrides)
            return float(_texts(holder["ds"])), "texts"

        stage = self.measure("generate synthetic dataset", generate)
        ds = holder.pop("ds")
        stage.settings.update(_shape(ds))
        path = self.tmp / "dataset.npz"
        self.measure("save dataset (.npz)", lambda: (save_xc(ds, path) or path.stat().st_size / 2**20, "MB"))
        del ds
        floor = _read_bytes_rate(path)

        def load() -> tuple[float, str]:
            holder["ds"] = load_xc(path)
            return path.stat().st_size / 2**20, "MB"

        self.measure("load dataset (.npz)", load, peer=floor, peer_name="read the file's bytes")
        self.ds = holder.pop("ds")

    def _tokenise(self) -> None:
        from ramen.encoder import Encoder
        from ramen.run_cache import tokenize_cached

        torch_seed(self.cfg.seed)
        self.encoder = Encoder("tiny", max_length=self.cfg.max_length, seed=self.cfg.seed)
        cache = self.tmp / "cache"
        cache.mkdir(exist_ok=True)
        ds, enc = self.ds, self.encoder
        groups = {"train": ds.train_texts, "eval-test": ds.test_texts, "labels": ds.label_texts,
                  **{f"anchors-{n}": a.texts for n, a in ds.anchor_sets.items()}}
        tokens: dict[str, Any] = {}

        def build() -> dict[str, Any]:
            for name, texts in groups.items():
                tokens[name] = tokenize_cached(enc, texts, cache, name)
            return {"work": float(sum(len(t) for t in tokens.values())), "unit": "texts",
                    "settings": {"tokens": int(sum(int(np.sum(t.lengths)) for t in tokens.values())),
                                 "max_length": enc.max_length}}

        self.measure("tokenise every text (and write the cache)", build, peer=_tokenizer_rate(enc, ds.train_texts),
                     peer_name="the tokenizer's own encode_batch")
        tokens.clear()

        def reload() -> tuple[float, str]:
            for name, texts in groups.items():
                tokens[name] = tokenize_cached(enc, texts, cache, name)
                int(np.asarray(tokens[name].ids).sum())  # page it in, as batches will
            return float(sum(len(t) for t in tokens.values())), "texts"

        self.measure("reload the token cache (memory map)", reload)
        self.tokens = tokens

    def _densify(self) -> None:
        from ramen.runlog import RunLog
        from ramen.training_graphs import build_graphs

        log = RunLog(None, echo=False)
        cache = self.tmp / "cache"
        holder: dict[str, Any] = {}

        def densify() -> dict[str, Any]:
            holder["graphs"] = build_graphs(self.ds, self.cfg, cache, log)
            rows = sum(g.shape[0] for gs in holder["graphs"].values() for g in (gs.query, gs.label) if g is not None)
            edges = sum(g.nnz for gs in holder["graphs"].values() for g in (gs.query, gs.label) if g is not None)
            return {"work": float(rows * self.cfg.walk_length), "unit": "hops",
                    "settings": {"rows": rows, "edges_after": edges, "walk_length": self.cfg.walk_length,
                                 "top_k": self.cfg.densify_top_k}}

        self.measure("densify every graph (walks, cache write)", densify)
        holder.clear()
        def reload() -> tuple[float, str]:
            holder["graphs"] = build_graphs(self.ds, self.cfg, cache, log)
            return float(sum(g.nnz for gs in holder["graphs"].values() for g in (gs.query, gs.label)
                             if g is not None)), "edges"

        self.measure("densified graphs from the cache", reload)
        self.graphs = holder.pop("graphs")

    def _sampling(self) -> None:
        from ramen import transfer
        from ramen.batching import BatchSampler, attach_tokens

        import torch

        t = self.tokens
        anchors = {n: t[f"anchors-{n}"] for n in self.graphs}
        sampler = BatchSampler(self.ds.train_Y, self.graphs, BATCH, seed=self.cfg.seed)
        steps = min(self.sampling_batches, sampler.steps_per_epoch())
        cpu = torch.device("cpu")

        def sample() -> dict[str, Any]:
            queries = sampler.epoch_queries(0)
            walls, cpus = [], []
            for step in range(steps):
                t0, c0 = time.perf_counter(), time.thread_time()
                batch = attach_tokens(sampler.batch(0, step, queries), t["train"], t["labels"], anchors)
                transfer.pin_batch(batch, cpu)
                walls.append(time.perf_counter() - t0)
                cpus.append(time.thread_time() - c0)
            return {"work": 1e3 * float(np.median(cpus)), "seconds": float(sum(walls)),
                    "settings": {"batches": steps, "batch": BATCH, "anchor_sets": len(anchors),
                                 "median_wall_ms": round(1e3 * float(np.median(walls)), 2),
                                 "max_cpu_ms": round(1e3 * max(cpus), 2), "first_cpu_ms": round(1e3 * cpus[0], 2)}}

        # CPU time of the one thread that builds batches: the machine may be shared (wall time in settings)
        self.measure("sample + tokens of a batch (1 core, CPU ms)", sample, unit="ms", metric="ms/batch", better="lower",
                     peer=SAMPLING_TARGET_MS, peer_name="target")
        self.sampler = sampler

    def _prune(self) -> None:
        from ramen.graph import prune_edges

        t, enc, bs = self.tokens, self.encoder, self.cfg.encode_batch_size
        emb: dict[str, np.ndarray] = {}

        def embed() -> dict[str, Any]:
            emb["query"] = enc.encode(t["train"], bs, progress=self.progress, desc="embed queries")
            emb["label"] = enc.encode(t["labels"], bs, tower="label", progress=self.progress, desc="embed labels")
            for n in self.graphs:
                emb[f"anchor:{n}"] = enc.encode(t[f"anchors-{n}"], bs, progress=self.progress, desc=f"embed {n}")
            return {"work": float(sum(len(e) for e in emb.values())), "unit": "texts",
                    "settings": {"encoder": "tiny", "dim": enc.dim, "batch": bs}}

        self.measure("embed queries, labels, anchors for pruning", embed)

        def kernel() -> dict[str, Any]:
            edges = 0
            for n, g in self.graphs.items():
                for side, E in (("query", g.query), ("label", g.label)):
                    if E is not None:
                        rows, cols = emb[side], emb[f"anchor:{n}"]
                        prune_edges(E, rows, cols, threshold=self.cfg.prune_threshold)
                        edges += E.nnz
            return float(edges), "edges"

        self.measure("prune kernel (every densified edge)", kernel)
        self.label_vectors = emb.pop("label")
        emb.clear()

    def _index_and_evaluate(self) -> None:
        from ramen.model import Model

        ds, t = self.ds, self.tokens
        model = Model(self.encoder, ds.label_texts)
        rng = np.random.default_rng(self.cfg.seed)
        tune = np.sort(rng.choice(len(ds.train_texts), size=min(TUNE_QUERIES, len(ds.train_texts)), replace=False))

        def build() -> dict[str, Any]:
            model.build_index(progress=False, label_vectors=self.label_vectors)
            return {"work": float(len(self.label_vectors)), "unit": "labels",
                    "settings": {"dim": self.encoder.dim}}

        self.measure("label index build (HNSW)", build)

        def tune_index() -> dict[str, Any]:
            index = model.index
            queries = model.encode(t["train"].subset(tune), progress=False)
            model.tuning = index.tune(queries, k=10)
            return {"work": float(len(tune)), "unit": "queries",
                    "settings": {"expansion_search": model.tuning["expansion_search"],
                                 "recall@10": round(model.tuning["recall"], 4)}}

        self.measure("label index tuning (recall@10 >= 0.95)", tune_index)
        test = t["eval-test"]
        n, labels, dim = len(ds.test_texts), len(ds.label_texts), self.encoder.dim
        results: dict[str, Any] = {}

        def evaluate(exact: bool, max_queries: int | None = None) -> Callable[[], dict[str, Any]]:
            def run() -> dict[str, Any]:
                m = model.evaluate(ds, k=5, exact=exact, max_queries=max_queries, seed=self.cfg.seed, progress=False,
                                   query_tokens=test, label_vectors=self.label_vectors)
                q = n if max_queries is None else min(n, max_queries)
                results[(exact, max_queries)] = float(m["P"][0])
                return {"work": float(q), "unit": "queries",
                        "settings": {"labels": labels, "P@1": round(100 * float(m["P"][0]), 3),
                                     **({"cost": f"{q} x {labels} x {dim} multiply-adds + a top-5 per block"}
                                        if exact else {})}}
            return run

        via_index = self.measure(f"evaluate {n:,} test queries (label index)", evaluate(False))
        model.index = None  # the exact evaluation builds its own (a blocked matmul)
        self.measure(f"evaluate {n:,} test queries (exact blocked top-k)", evaluate(True),
                     peer=via_index.value(), peer_name="via the label index")
        subset = min(n, 10_000)
        self.measure(f"evaluate a seeded subset of {subset:,} (exact)", evaluate(True, subset))

    def _checkpoint(self) -> None:
        import torch

        from ramen import checkpoint
        from ramen.losses import component_names
        from ramen.reliance import Reliance
        from ramen.step import BatchEncoder, lr_lambda, make_optimizer
        from ramen.train_state import Progress, _csr_from, save_checkpoint

        cfg = self.cfg
        enc = self.encoder.train()
        optimizer = make_optimizer(BatchEncoder(enc), cfg)
        for p in enc.parameters():  # one step, so that the optimizer holds its moments
            p.grad = torch.zeros_like(p)
        optimizer.step()
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(1000, cfg.warmup))
        reliance = Reliance(component_names(list(self.graphs)), mode="fixed")
        path = self.tmp / "checkpoint.safetensors"
        arrays = [a for g in self.graphs.values() for m in (g.query, g.label) if m is not None
                  for a in (m.indptr, m.indices, m.data)]
        write_floor = _write_bytes_rate(arrays, self.tmp / "floor.bin")

        def write() -> tuple[float, str]:
            save_checkpoint(path, enc, optimizer, scheduler, Progress(0, 1, 1), cfg, self.graphs, None, reliance)
            return path.stat().st_size / 2**20, "MB"

        self.measure("checkpoint write", write, peer=write_floor, peer_name="write the graphs' bytes")
        read_floor = _read_bytes_rate(path)
        holder: dict[str, Any] = {}

        def resume() -> tuple[float, str]:
            state = checkpoint.load(path)
            holder["graphs"] = {n: (_csr_from(g["query"], path), _csr_from(g["label"], path))
                                for n, g in state["graphs"].items()}
            return path.stat().st_size / 2**20, "MB"

        self.measure("resume: checkpoint load and check", resume, peer=read_floor, peer_name="read the file's bytes")
        for n, g in self.graphs.items():  # resume continues exactly: the same graphs, the same batches
            for saved, now in zip(holder["graphs"][n], (g.query, g.label)):
                assert (saved is None) == (now is None) and (saved is None or (saved != now).nnz == 0), \
                    f"the resumed {n} graph differs from the saved one"


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def _texts(ds) -> int:  # noqa: ANN001
    return len(ds.train_texts) + len(ds.test_texts) + len(ds.label_texts) + sum(
        len(a.texts) for a in ds.anchor_sets.values())


def _shape(ds) -> dict[str, int]:  # noqa: ANN001
    out = {"train": ds.num_train, "test": ds.num_test, "labels": ds.num_labels}
    for n, a in ds.anchor_sets.items():
        out[f"{n}_anchors"] = a.num_anchors
        out[f"{n}_edges"] = int(a.train_X_A.nnz + a.label_A.nnz + (a.test_X_A.nnz if a.test_X_A is not None else 0))
    return out


def _tokenizer_rate(encoder, texts: list[str], sample: int = 20_000) -> float:  # noqa: ANN001
    """Texts/s of the Hugging Face tokenizer's Rust backend alone (`encode_batch`, no padding to
    arrays) on a sample of `texts`: the floor of tokenising."""
    part = texts[:sample]
    t0 = time.perf_counter()
    encoder.tokenizer.backend_tokenizer.encode_batch(part)
    return len(part) / (time.perf_counter() - t0)


def _read_bytes_rate(path: Path) -> float:
    """MB/s of reading `path`'s bytes into memory (from the page cache: it was just written)."""
    t0 = time.perf_counter()
    size = len(path.read_bytes())
    return size / 2**20 / (time.perf_counter() - t0)


def _write_bytes_rate(arrays: list[np.ndarray], path: Path) -> float:
    """MB/s of writing `arrays`' bytes to one file and syncing it (the floor of a checkpoint write)."""
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for a in arrays:
            f.write(memoryview(np.ascontiguousarray(a)).cast("B"))
        f.flush()
        os.fsync(f.fileno())
    size = path.stat().st_size
    rate = size / 2**20 / (time.perf_counter() - t0)
    path.unlink()
    return rate


def format_stages(stages: list[Stage]) -> str:
    """The per-stage table: wall time, throughput, peak RSS and its rise, target and ratio."""
    head = ("stage", "wall s", "throughput", "peak RSS GB", "rise GB", "floor/target", "ratio")
    gb = 2.0 ** 30
    body = []
    for s in stages:
        r = s.row()
        body.append((s.name, f"{s.seconds:.2f}", f"{s.value():,.4g} {r.unit}", f"{s.memory.peak / gb:.2f}",
                     f"{(s.memory.peak - s.memory.start) / gb:.2f}",
                     "-" if s.peer is None else f"{s.peer:,.4g} ({s.peer_name})",
                     "-" if r.ratio is None else f"{r.ratio:.3g}"))
    widths = [max(len(c) for c in col) for col in zip(head, *body)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(head, widths)), "-+-".join("-" * w for w in widths)]
    return "\n".join(lines + [" | ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body])


def run(quick: bool = False, size: str | None = None) -> list[Row]:
    """The suite at `size` (default: the paper's shape, or "small" with `quick`)."""
    size = size or (QUICK_SIZE if quick else PAPER)
    dataset_config(size)  # a bad size fails before any work
    print(f"scale: size {size}", flush=True)
    with tempfile.TemporaryDirectory(prefix="ramen-bench-scale-") as tmp:
        runner = Runner(size, Path(tmp), sampling_batches=20 if quick else 100)
        stages = runner.run()
    print(format_stages(stages))
    rows = [s.row() for s in stages]
    peak = max(s.memory.peak for s in stages) / 2**30
    rows.append(Row(SUITE, "whole suite", "peak RSS", peak, PEAK_TARGET_GB, "target", "GB", "lower",
                    {"size": size}))
    return rows
