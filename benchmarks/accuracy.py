"""The accuracy study (issue 7): RAMEN against the plain dual encoder, its ablations, AugGT and a
graph-at-inference baseline in the spirit of OAK, with the same encoder, budget and seeds.

    python benchmarks/accuracy.py run [--quick] [--datasets ...] [--arms ...] [--seeds 0 1 2] [--runs DIR]
                                      [--threads N]
    python benchmarks/accuracy.py report [--runs DIR] [--out benchmarks/results/accuracy.md]
    python benchmarks/accuracy.py estimate [--datasets ...] [--arms ...] [--threads N]   # s/step, hours
    python -m ramen.bench --suite accuracy [--quick]        # run, then report

Each (dataset, arm, seed) trains with `ramen.train` into RUNS/<dataset>/<arm>/seed<k>/ (log.jsonl,
checkpoint.pt, model/), is evaluated once at the end on the test split (exact search, k = 5, with
the label-decile breakdown) and writes result.json there; the plain and RAMEN runs also write
oak.json (the OAK-style baseline and single-query latencies). A rerun skips finished runs and
resumes interrupted ones from their last checkpoint, so the study survives being killed and
restarted; a run directory made with other settings is an error, never silently reused.
`report` reads only the JSON files and writes the Markdown report and its PNG plots.

Protocol, identical for every arm of a dataset:
- one fixed split (Wikispeedia: the converter's seeded 80/20 draw, seed 0), and a held-out slice
  of `HELD_OUT` of the training queries (seed 0) removed from training for every arm: it chooses
  the OAK-style baseline's m and alpha (and is what issue 8's rewards can use), never the test
  split;
- the dataset's training budget (BUDGET; QUICK_BUDGET for --quick) with the arm's TrainConfig
  overrides (ARMS);
- seeds 0, 1, 2 (the seed of initialisation, batches and densification; the split stays fixed).
Adding an arm is one line in ARMS. This file is both the library and the CLI;
`ramen/bench/accuracy.py` loads it from the source tree.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import json
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python benchmarks/accuracy.py` uses the checkout's ramen
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ramen import metrics  # noqa: E402
from ramen.config import TrainConfig  # noqa: E402
from ramen.data import Dataset  # noqa: E402

K = 5  # metrics at k = 1..K
HELD_OUT = 0.1  # fraction of training queries held out of training (chooses the OAK-style m, alpha)
SPLIT_SEED = 0
SEEDS = (0, 1, 2)

# ---------------------------------------------------------------- arms and budgets

# arm -> TrainConfig overrides of the dataset's budget
ARMS: dict[str, dict[str, Any]] = {
    "plain": {"graph": False},
    "ramen": {},
    "no-prune": {"prune": False},
    "no-query-graph": {"query_graph": False},
    "no-label-graph": {"label_graph": False},
    "auggt": {"aug_gt": True},
}
ARM_TITLES = {
    "plain": "plain dual encoder (no graph)",
    "ramen": "RAMEN",
    "no-prune": "RAMEN without pruning",
    "no-query-graph": "RAMEN without the query graph (no R_x)",
    "no-label-graph": "RAMEN without the label graph (no R_z)",
    "auggt": "AugGT (graph adds training labels, no regulariser)",
}
OAK_ARMS = ("plain", "ramen")  # encoders the OAK-style baseline is built on
OAK_M = (1, 3, 5, 10, 20)  # anchors retrieved per query (the grid searched on held-out queries)
OAK_ALPHA = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)  # weight of the anchors' mean (0: the encoder alone)

# The yardstick's budget (../shared/notes/wikispeedia-yardstick.md), every setting pinned so that a
# change of TrainConfig's defaults cannot change the study silently. RAMEN's graph schedule: walks
# densify the graphs once; 5 warm-up epochs on the unpruned graph, then prune (cosine > 0) every 5
# epochs, i.e. once, before epoch 6 of 10.
BUDGET: dict[str, Any] = dict(
    encoder="all-MiniLM-L6-v2", pooling="mean", max_length=32, label_tower=False,
    epochs=10, batch_size=128, lr=5e-5, weight_decay=0.01, warmup=0.05, grad_clip=1.0,
    margin=0.3, num_negatives=10, softmax_temperature=None, positives_all=False,
    lambda_x=1.0, lambda_z=1.0, densify=True, walk_length=400, restart_prob=0.8, densify_top_k=10,
    prune_threshold=0.0, warmup_epochs=5, prune_every=5, aug_gt_top_k=10,
    cluster_batching=False, anchor_bank=False, eval_every=0,
)
# --quick: a tiny random encoder on synthetic("tiny"), one epoch, pruning before it (a pipeline check).
QUICK_BUDGET: dict[str, Any] = dict(
    encoder="tiny", max_length=32, epochs=1, batch_size=32, lr=1e-3, warmup=0.05, margin=0.3,
    num_negatives=10, walk_length=20, warmup_epochs=0, prune_every=1, prune_threshold=0.0,
    encode_batch_size=64, dropout=0.0, eval_every=0,
)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A dataset of the study: how to load it (None: absent, skipped) and its training budget."""

    name: str
    load: Callable[[], Dataset | None]
    budget: dict[str, Any]
    source: str  # how the data is made, for the report


def find_wikispeedia() -> Path:
    """$RAMEN_WIKISPEEDIA, else shared/data/wikispeedia beside the checkout (or one level up)."""
    if os.environ.get("RAMEN_WIKISPEEDIA"):
        return Path(os.environ["RAMEN_WIKISPEEDIA"])
    candidates = [p / "shared" / "data" / "wikispeedia" for p in (ROOT.parent, ROOT.parent.parent)]
    return next((c for c in candidates if c.is_dir()), candidates[0])


def dataset_specs(wikispeedia_dir: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    from ramen.data import wikispeedia
    from ramen.synthetic import synthetic

    wiki = Path(wikispeedia_dir) if wikispeedia_dir else find_wikispeedia()
    return {
        "wikispeedia": DatasetSpec("wikispeedia", lambda: wikispeedia(wiki, seed=SPLIT_SEED) if wiki.is_dir() else None,
                                   BUDGET, f"ramen.data.wikispeedia({str(wiki)!r}, seed={SPLIT_SEED})"),
        "synthetic-small": DatasetSpec("synthetic-small", lambda: synthetic("small", seed=0), BUDGET,
                                       "ramen.synthetic.synthetic('small', seed=0) (default parameters)"),
        "synthetic-medium": DatasetSpec("synthetic-medium", lambda: synthetic("medium", seed=0), BUDGET,
                                        "ramen.synthetic.synthetic('medium', seed=0) (default parameters)"),
        "synthetic-tiny": DatasetSpec("synthetic-tiny", lambda: synthetic("tiny", seed=0), QUICK_BUDGET,
                                      "ramen.synthetic.synthetic('tiny', seed=0), tiny random encoder (--quick)"),
    }


FULL_DATASETS = ("wikispeedia", "synthetic-small")
QUICK_DATASETS = ("synthetic-tiny",)


@dataclasses.dataclass(frozen=True)
class Study:
    """What to run: datasets x arms x seeds, and the OAK-style baseline's settings."""

    datasets: tuple[str, ...] = FULL_DATASETS
    arms: tuple[str, ...] = tuple(ARMS)
    seeds: tuple[int, ...] = SEEDS
    held_out: float = HELD_OUT
    oak: bool = True
    oak_m: tuple[int, ...] = OAK_M
    oak_alpha: tuple[float, ...] = OAK_ALPHA
    latency_queries: int = 200
    threads: int | None = None  # torch threads for training and evaluation (None: torch's default)
    budget: dict[str, Any] = dataclasses.field(default_factory=dict)  # TrainConfig overrides of every budget

    def specs(self, wikispeedia_dir: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
        """The datasets with this study's budget overrides applied."""
        return {name: dataclasses.replace(spec, budget={**spec.budget, **self.budget})
                for name, spec in dataset_specs(wikispeedia_dir).items()}

    @classmethod
    def quick(cls, **overrides: Any) -> "Study":
        return cls(**{**dict(datasets=QUICK_DATASETS, seeds=(0,), oak_m=(1, 5), oak_alpha=(0.0, 0.5),
                             latency_queries=20, threads=1), **overrides})

    def validate(self) -> "Study":
        unknown = [a for a in self.arms if a not in ARMS]
        if unknown:
            raise ValueError(f"arms: unknown {unknown}; known: {list(ARMS)}")
        if not 0.0 <= self.held_out < 1.0:
            raise ValueError(f"held_out must be in [0, 1), got {self.held_out}")
        if not self.seeds:
            raise ValueError("seeds: give at least one seed")
        if self.oak and (not self.oak_m or min(self.oak_m) < 1 or not self.oak_alpha):
            raise ValueError("oak_m must be positive integers and oak_alpha non-empty")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if "seed" in self.budget:
            raise ValueError("budget: the seed is set per run (seeds), not in the budget")
        TrainConfig(**self.budget).validate()  # unknown fields and bad values fail here
        return self


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `n` (None: unchanged) inside, restored after."""
    import torch

    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def arm_config(budget: dict[str, Any], arm: str, seed: int) -> TrainConfig:
    """The TrainConfig of one run: the dataset's budget, the arm's overrides, the seed."""
    return TrainConfig(**{**budget, **ARMS[arm], "seed": int(seed)}).validate()


# ---------------------------------------------------------------- the held-out slice


@dataclasses.dataclass
class HeldOut:
    """Training queries kept out of training: texts, labels, graph links, self-label filter."""

    rows: np.ndarray  # their rows in the full training split
    texts: list[str]
    Y: sp.csr_matrix
    links: dict[str, sp.csr_matrix]  # anchor set -> (n, anchors)
    filter: np.ndarray | None  # (n, 2) (row, label) pairs never to predict


@dataclasses.dataclass
class Prepared:
    """A dataset ready for the study: the training data of every arm and the held-out slice."""

    name: str
    train: Dataset  # the dataset with the held-out queries removed from its training split
    held: HeldOut
    info: dict[str, Any]  # sizes and split: part of each run's identity
    source: str


def hold_out(dataset: Dataset, fraction: float, seed: int = SPLIT_SEED) -> tuple[Dataset, HeldOut]:
    """Removes a seeded `fraction` of the training queries from `dataset` (returned as HeldOut).

    Where the dataset filters a test query's own text out of its predictions (Wikispeedia: articles
    are queries and labels), a held-out query's own label, found by identical text, is filtered too.
    """
    n = dataset.num_train
    held = np.sort(np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))])
    keep = np.setdiff1d(np.arange(n), held)
    anchor_sets = {name: dataclasses.replace(a, train_X_A=a.train_X_A[keep]) for name, a in dataset.anchor_sets.items()}
    train = dataclasses.replace(dataset, train_texts=[dataset.train_texts[i] for i in keep],
                                train_Y=dataset.train_Y[keep], anchor_sets=anchor_sets).validate()
    texts = [dataset.train_texts[i] for i in held]
    filt = None
    if dataset.test_filter is not None and len(dataset.test_filter):
        label_of = {t: j for j, t in enumerate(dataset.label_texts)}
        pairs = [(r, label_of[t]) for r, t in enumerate(texts) if t in label_of]
        filt = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    links = {name: a.train_X_A[held] for name, a in dataset.anchor_sets.items()}
    return train, HeldOut(held, texts, dataset.train_Y[held], links, filt)


def prepare(spec: DatasetSpec, held_out: float) -> Prepared | None:
    dataset = spec.load()
    if dataset is None:
        return None
    train, held = hold_out(dataset, held_out)
    info = {"train": train.num_train, "held_out": len(held.texts), "test": dataset.num_test,
            "labels": dataset.num_labels, "held_out_fraction": held_out, "split_seed": SPLIT_SEED,
            "anchor_sets": {n: a.num_anchors for n, a in dataset.anchor_sets.items()}}
    return Prepared(spec.name, train, held, info, spec.source)


# ---------------------------------------------------------------- files


def run_dir(runs: Path, dataset: str, arm: str, seed: int) -> Path:
    return Path(runs) / dataset / arm / f"seed{seed}"


def write_json(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_jsonable))
    os.replace(tmp, path)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_jsonable))


def ramen_version() -> dict[str, Any]:
    import ramen

    out: dict[str, Any] = {"version": ramen.__version__}
    try:
        out["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        out["dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        out["commit"] = None
    return out


def _flat(result: dict[str, Any]) -> dict[str, float]:
    """{"P@1": ..., "nDCG@5": ...} from metrics.evaluate's arrays (fractions)."""
    return {f"{name}@{k + 1}": float(v[k]) for name, v in result.items()
            if isinstance(v, np.ndarray) and v.ndim == 1 for k in range(len(v))}


def _deciles(d: dict[str, np.ndarray]) -> dict[str, list]:
    return {key: np.asarray(v).tolist() for key, v in d.items()}


def _claim(path: Path, identity: dict[str, Any]) -> None:
    """Writes run.json naming the run's settings, or checks that an existing one names the same."""
    identity = _roundtrip(identity)
    if path.exists():
        old = json.loads(path.read_text())
        if old != identity:
            keys = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
            if "config" in keys:
                oc, nc = old.get("config", {}), identity["config"]
                keys += [f"config.{k}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
            raise ValueError(f"{path.parent} holds a run with other settings (differing: {', '.join(keys)}); "
                             "delete that directory or pass another --runs")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, identity)


def _say(text: str) -> None:
    from tqdm.auto import tqdm

    tqdm.write(text)
    sys.stdout.flush()


# ---------------------------------------------------------------- one training run


def train_run(data: Prepared, spec: DatasetSpec, arm: str, seed: int, runs: Path, *,
              progress: bool = True) -> tuple[str, dict[str, Any]]:
    """Trains and evaluates one (dataset, arm, seed), or reads its result: (status, result)."""
    from ramen.bench.common import machine_info
    from ramen.train import train

    run = run_dir(runs, data.name, arm, seed)
    cfg = arm_config(spec.budget, arm, seed)
    identity = {"dataset": data.name, "arm": arm, "seed": seed, "overrides": ARMS[arm],
                "config": cfg.to_dict(), "data": data.info}
    _claim(run / "run.json", identity)
    result_path = run / "result.json"
    if result_path.exists():
        return "skipped", json.loads(result_path.read_text())
    resume = (run / "checkpoint.pt").exists()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model = train(data.train, cfg, out_dir=run, resume=resume, progress=progress)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = model.evaluate(data.train, k=K, exact=True, deciles=True, batch_size=cfg.encode_batch_size, progress=False)
    eval_s = time.perf_counter() - t0
    steps = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r.get("event") == "step"]
    step_s = np.array([cfg.batch_size / r["qps"] for r in steps if r.get("qps")])
    result = {
        "kind": "ramen-accuracy-run", "format": 1, **identity, "source": data.source,
        "metrics": _flat(m), "deciles": _deciles(m["deciles"]),
        "steps": len(steps), "step_seconds": {"median": float(np.median(step_s)) if len(step_s) else None,
                                              "sum": float(step_s.sum())},
        "train_seconds": train_s, "resumed": resume, "eval_seconds": eval_s,
        "load": {"before": list(load_before), "after": list(os.getloadavg())},
        "machine": machine_info(), "ramen": ramen_version(), "command": _command(),
        "finished": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    write_json(result_path, result)
    return ("resumed" if resume else "trained"), _roundtrip(result)


def _command() -> str:
    return " ".join([Path(sys.executable).name, *sys.argv])


# ---------------------------------------------------------------- the OAK-style baseline


def _oak_peer():
    """benchmarks/peers/oak_style.py beside this file (loaded by path: benchmarks/ is no package)."""
    import importlib.util

    if "ramen_peer_oak_style" not in sys.modules:
        path = Path(__file__).resolve().parent / "peers" / "oak_style.py"
        spec = importlib.util.spec_from_file_location("ramen_peer_oak_style", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules["ramen_peer_oak_style"] = module
    return sys.modules["ramen_peer_oak_style"]


def _search_metrics(index, q: np.ndarray, true_Y: sp.csr_matrix, train_Y: sp.csr_matrix, inv_p: np.ndarray,
                    filt: np.ndarray | None, deciles: bool = False) -> dict[str, Any]:
    extra = 0 if filt is None or len(filt) == 0 else int(np.bincount(filt[:, 0], minlength=len(q)).max())
    ids, _ = index.search(q, K + extra)
    out: dict[str, Any] = {"metrics": _flat(metrics.evaluate(ids, true_Y, inv_propensity=inv_p, k=K, filter=filt))}
    if deciles:
        out["deciles"] = _deciles(metrics.decile_breakdown(ids, true_Y, train_Y, inv_propensity=inv_p, k=K,
                                                            filter=filt))
    return out


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def time_pipelines(pipelines: dict[str, Callable[[int], list[float]]], rows: np.ndarray, *, rounds: int = 2,
                   warmup: int = 5) -> dict[str, list[list[float]]]:
    """Each pipeline's timestamps per query, one thread for torch. Each pipeline sweeps all `rows` in
    turn (after `warmup` untimed queries), so that consecutive queries differ as in serving; the
    order of the pipelines reverses every round, so drifting machine load hits each alike."""
    out: dict[str, list[list[float]]] = {name: [] for name in pipelines}
    order = list(pipelines)
    with torch_threads(1):
        for _ in range(rounds):
            for name in order:
                for r in rows[:warmup]:
                    pipelines[name](int(r))
                out[name] += [pipelines[name](int(r)) for r in rows]
            order.reverse()
    return out


def oak_run(data: Prepared, spec: DatasetSpec, arm: str, seed: int, runs: Path, study: Study, *,
            progress: bool = True) -> tuple[str, dict[str, Any]]:
    """The OAK-style baseline on the encoder of one finished run, and single-query latencies."""
    from ramen.bench.common import machine_info
    from ramen.index import LabelIndex
    from ramen.model import Model

    peer = _oak_peer()
    run = run_dir(runs, data.name, arm, seed)
    settings = _roundtrip({"m": study.oak_m, "alpha": study.oak_alpha, "latency_queries": study.latency_queries,
                           "k": K})
    path = run / "oak.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("settings") == settings:
            return "skipped", old
    ds, held = data.train, data.held
    model = Model.load(run / "model")
    bs = arm_config(spec.budget, arm, seed).encode_batch_size  # as in train_run's evaluation: same numbers
    emb = {"test": model.encode(ds.test_texts, batch_size=bs, progress=False),
           "held": model.encode(held.texts, batch_size=bs, progress=False),
           "labels": model.encode(ds.label_texts, batch_size=bs, tower="label", progress=False)}
    names = list(ds.anchor_sets)
    anchors = np.concatenate([model.encode(ds.anchor_sets[n].texts, batch_size=bs, progress=False) for n in names])
    inv_p = metrics.inv_propensity(ds.train_Y, ds.A, ds.B)
    labels = LabelIndex(model.encoder.dim, exact=True)
    labels.add(np.arange(len(emb["labels"]), dtype=np.int64), emb["labels"])
    aug = peer.AnchorAugmented(anchors, exact=True)

    def on_test(q: np.ndarray) -> dict[str, Any]:
        return _search_metrics(labels, q, ds.test_Y, ds.train_Y, inv_p, ds.test_filter, deciles=True)

    def on_held(q: np.ndarray) -> dict[str, float]:
        return _search_metrics(labels, q, held.Y, ds.train_Y, inv_p, held.filter)["metrics"]

    if len(held.texts) == 0:
        raise ValueError("the OAK-style baseline needs held-out training queries to choose m and alpha (held_out > 0)")
    # choose (m, alpha) by P@1 on the held-out queries; ties go to the smaller alpha, then the smaller m
    ids, scores = aug.retrieve(emb["held"], max(study.oak_m))
    grid = []
    for m in study.oak_m:
        for alpha in study.oak_alpha:
            q = peer.mix(emb["held"], aug.anchors, ids[:, :m], scores[:, :m], alpha)
            grid.append({"m": m, "alpha": alpha, **{k: v for k, v in on_held(q).items() if k in ("P@1", "P@5", "PSP@1")}})
    best = max(grid, key=lambda g: (g["P@1"], -g["alpha"], -g["m"]))
    result: dict[str, Any] = {"kind": "ramen-accuracy-oak", "format": 1, "dataset": data.name, "arm": arm,
                              "seed": seed, "settings": settings, "grid": grid,
                              "chosen": {"m": best["m"], "alpha": best["alpha"]}}
    result["encoder_only"] = on_test(emb["test"])
    result["oak_style"] = on_test(aug.enrich(emb["test"], best["m"], best["alpha"]))

    have_links = all(ds.anchor_sets[n].test_X_A is not None for n in names)
    if have_links:  # the paper's "OAK + Oracle": the test query's own graph links
        test_links = sp.hstack([ds.anchor_sets[n].test_X_A for n in names]).tocsr()
        held_links = sp.hstack([held.links[n] for n in names]).tocsr()
        oracle_grid = [{"alpha": a, **{k: v for k, v in on_held(peer.enrich_with_links(emb["held"], aug.anchors,
                                                                                        held_links, a)).items()
                                       if k in ("P@1", "P@5", "PSP@1")}} for a in study.oak_alpha]
        best_o = max(oracle_grid, key=lambda g: (g["P@1"], -g["alpha"]))
        result["oracle_grid"] = oracle_grid
        result["oracle_links"] = {"alpha": best_o["alpha"],
                                  **on_test(peer.enrich_with_links(emb["test"], aug.anchors, test_links, best_o["alpha"]))}

    # single-query latency, one thread, approximate (HNSW) indexes as served
    if model.index is None:
        model.build_index(progress=False)
    label_hnsw = model.index
    anchor_hnsw = peer.AnchorAugmented(anchors, exact=False)
    m_lat, alpha_lat = best["m"], best["alpha"]
    encode = model.encoder.encode

    def encoder_only(r: int) -> list[float]:  # what RAMEN serves
        t = [time.perf_counter()]
        label_hnsw.search(encode([ds.test_texts[r]], 1, progress=False), K, threads=1)
        return t + [time.perf_counter()]

    def oak_style(r: int) -> list[float]:  # the anchor search runs even where alpha = 0 was chosen
        t = [time.perf_counter()]
        q = encode([ds.test_texts[r]], 1, progress=False)
        t.append(time.perf_counter())
        a_ids, a_scores = anchor_hnsw.retrieve(q, m_lat, threads=1)
        q = peer.mix(q, anchor_hnsw.anchors, a_ids, a_scores, alpha_lat)
        t.append(time.perf_counter())
        label_hnsw.search(q, K, threads=1)
        return t + [time.perf_counter()]

    pipelines = {"encoder_only": encoder_only, "oak_style": oak_style}
    if have_links:
        def oracle_links(r: int) -> list[float]:
            t = [time.perf_counter()]
            q = encode([ds.test_texts[r]], 1, progress=False)
            q = peer.enrich_with_links(q, anchor_hnsw.anchors, test_links[r], result["oracle_links"]["alpha"])
            label_hnsw.search(q, K, threads=1)
            return t + [time.perf_counter()]

        pipelines["oracle_links"] = oracle_links
    rows = np.random.default_rng(0).permutation(len(ds.test_texts))[: study.latency_queries]
    stamps = time_pipelines(pipelines, rows)
    times = {name: [1e3 * (t[-1] - t[0]) for t in ts] for name, ts in stamps.items()}
    for i, stage in enumerate(("oak_encode", "oak_anchor", "oak_label")):
        times[stage] = [1e3 * (t[i + 1] - t[i]) for t in stamps["oak_style"]]
    result["latency_ms"] = {k: _percentiles(v) for k, v in times.items() if v}
    result["latency_setup"] = {"queries": int(len(rows)), "rounds": 2, "threads": 1, "label_index": repr(label_hnsw),
                               "anchor_index": repr(anchor_hnsw.index), "anchors": int(len(anchors)),
                               "load": list(os.getloadavg())}
    result["machine"] = machine_info()
    result["command"] = _command()
    result["finished"] = datetime.datetime.now().isoformat(timespec="seconds")
    write_json(path, result)
    return "done", _roundtrip(result)


# ---------------------------------------------------------------- the study


def run_study(study: Study, runs: str | os.PathLike, *, wikispeedia_dir: str | os.PathLike | None = None,
              progress: bool = True) -> list[dict[str, Any]]:
    """Runs every missing (dataset, arm, seed) of `study` under `runs`; returns every result dict.
    Seeds are the outer loop, so a study stopped early holds whole seeds of every arm."""
    study = study.validate()
    runs = Path(runs)
    specs = study.specs(wikispeedia_dir)
    unknown = [d for d in study.datasets if d not in specs]
    if unknown:
        raise ValueError(f"datasets: unknown {unknown}; known: {list(specs)}")
    with torch_threads(study.threads):
        return _run_datasets(study, runs, specs, progress)


def _run_datasets(study: Study, runs: Path, specs: dict[str, DatasetSpec], progress: bool) -> list[dict[str, Any]]:
    out = []
    for name in study.datasets:
        spec = specs[name]
        data = prepare(spec, study.held_out)
        if data is None:
            _say(f"[accuracy] {name}: data not found ({spec.source}): skipped")
            continue
        _say(f"[accuracy] {name}: {data.info['train']:,} training queries ({data.info['held_out']:,} held out), "
             f"{data.info['test']:,} test, {data.info['labels']:,} labels")
        total = len(study.seeds) * len(study.arms)
        done = 0
        for seed in study.seeds:
            for arm in study.arms:
                done += 1
                where = f"{name}/{arm}/seed{seed}"
                _say(f"[accuracy] ({done}/{total}) {where}: training")
                status, result = train_run(data, spec, arm, seed, runs, progress=progress)
                m = result["metrics"]
                _say(f"[accuracy] {where}: {status}; P@1 {100 * m['P@1']:.2f}, PSP@1 {100 * m['PSP@1']:.2f}")
                out.append(result)
                if study.oak and arm in OAK_ARMS:
                    status, oak = oak_run(data, spec, arm, seed, runs, study, progress=progress)
                    lat = oak["latency_ms"]
                    _say(f"[accuracy] {where}: OAK-style {status}; P@1 {100 * oak['oak_style']['metrics']['P@1']:.2f} "
                         f"(m={oak['chosen']['m']}, alpha={oak['chosen']['alpha']}), p50 {lat['oak_style']['p50']:.2f} ms "
                         f"vs encoder-only {lat['encoder_only']['p50']:.2f} ms")
    return out


# ---------------------------------------------------------------- planning


def time_steps(dataset: Dataset, cfg: TrainConfig, steps: int = 3, warm: int = 3) -> dict[str, float]:
    """Median seconds of `steps` training steps (after `warm` warm-up steps) of `cfg` on `dataset`, set up
    as `ramen.train` sets up a run (densified graphs of the arm's sides, AugGT labels, one
    `train_step` per batch), and the mean number of texts encoded per step."""
    import torch

    from ramen import distributed
    from ramen.batching import BatchSampler, attach_tokens
    from ramen.encoder import Encoder
    from ramen.runlog import RunLog
    from ramen.train import BatchEncoder, augment_ground_truth, build_graphs, lr_lambda, train_step

    d = distributed.Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    encoder = Encoder(cfg.encoder, pooling=cfg.pooling, max_length=cfg.max_length, seed=cfg.seed).to(d.device)
    train_Y = augment_ground_truth(dataset, cfg) if cfg.aug_gt else dataset.train_Y.tocsr()
    graphs = build_graphs(dataset, cfg, None, RunLog(None, echo=False))
    sampler = BatchSampler(train_Y, graphs, cfg.batch_size, seed=cfg.seed)
    tq = encoder.tokenize(dataset.train_texts, progress=False)
    tl = encoder.tokenize(dataset.label_texts, progress=False)
    ta = {n: encoder.tokenize(dataset.anchor_sets[n].texts, progress=False) for n in graphs}
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(1000, cfg.warmup))
    lambdas = {n: cfg.lambdas_for(n) for n in graphs}
    module = BatchEncoder(encoder)
    # a few distinct batches, each stepped once untimed first: a long run sees its shapes again
    batches = [attach_tokens(sampler.batch(0, s), tq, tl, ta) for s in range(min(warm, sampler.steps_per_epoch()))]
    times, texts = [], []
    for i in range(len(batches) + steps):
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        train_step(module, encoder, optimizer, scheduler, b, d, cfg, lambdas, None)
        if d.device.type == "cuda":
            torch.cuda.synchronize()
        if i >= len(batches):
            times.append(time.perf_counter() - t0)
            texts.append(sum(ids.shape[0] for ids, _ in b.tokens.values()))
    return {"step_s": float(np.median(times)), "texts": float(np.mean(texts)),
            "steps_per_epoch": sampler.steps_per_epoch()}


def estimate(study: Study, *, steps: int = 3, wikispeedia_dir: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """Measured seconds per training step of each (dataset, arm) and the training time it implies
    for the study. Leaves out per-run overheads: densification, pruning passes, evaluation, the
    OAK-style runs."""
    specs = study.validate().specs(wikispeedia_dir)
    rows = []
    for name in study.datasets:
        data = prepare(specs[name], study.held_out)
        if data is None:
            _say(f"[accuracy] {name}: data not found: skipped")
            continue
        for arm in study.arms:
            cfg = arm_config(specs[name].budget, arm, 0)
            load = os.getloadavg()[0]
            with torch_threads(study.threads):
                m = time_steps(data.train, cfg, steps)
            run_steps = cfg.epochs * m["steps_per_epoch"]
            rows.append({"dataset": name, "arm": arm, "step_s": m["step_s"], "texts_per_step": m["texts"],
                         "steps_per_run": run_steps, "run_min": run_steps * m["step_s"] / 60,
                         "study_min": len(study.seeds) * run_steps * m["step_s"] / 60, "load": load})
            r = rows[-1]
            _say(f"[accuracy] {name}/{arm}: {r['step_s']:.2f} s/step ({r['texts_per_step']:.0f} texts), "
                 f"{run_steps} steps a run: {r['run_min']:.1f} min a run, {r['study_min']:.0f} min for "
                 f"{len(study.seeds)} seeds (load {load:.1f})")
    return rows


def write_estimate(rows: list[dict[str, Any]], study: Study, path: Path, *, steps: int) -> None:
    """Appends the measurements of `estimate` as a Markdown section (command, machine, load) to `path`."""
    import torch

    from ramen.bench.common import machine_info

    m = machine_info()
    with torch_threads(study.threads):
        threads = torch.get_num_threads()
    total = sum(r["study_min"] for r in rows)
    lines = [f"## {datetime.datetime.now().isoformat(timespec='minutes')}: `{_command()}`", "",
             f"{m.get('cpu')}, {m.get('cores')} cores, torch {m.get('torch')} with {threads} thread(s); median of "
             f"{steps} steps after 3 warm-up steps; 1-min load when each arm started in the table. Training steps "
             f"only (no densification, pruning passes, evaluation or OAK-style runs).", "",
             *_table(["dataset", "arm", "s/step", "texts/step", "steps a run", "min a run",
                      f"min for {len(study.seeds)} seeds", "load"],
                     [[r["dataset"], r["arm"], f"{r['step_s']:.2f}", f"{r['texts_per_step']:.0f}", str(r["steps_per_run"]),
                       f"{r['run_min']:.1f}", f"{r['study_min']:.0f}", f"{r['load']:.1f}"] for r in rows]),
             "", f"Total: {total:.0f} min ({total / 60:.1f} h).", "", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------- reading results


def load_results(runs: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(run results, OAK results) found under `runs`, sorted by dataset, arm order, seed."""
    runs = Path(runs)
    order = {a: i for i, a in enumerate(ARMS)}

    def key(r: dict[str, Any]) -> tuple:
        return (r["dataset"], order.get(r["arm"], len(order)), r["arm"], r["seed"])

    res = sorted((json.loads(p.read_text()) for p in runs.glob("*/*/seed*/result.json")), key=key)
    oak = sorted((json.loads(p.read_text()) for p in runs.glob("*/*/seed*/oak.json")), key=key)
    return res, oak


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; nan for one value) and count."""
    a = np.asarray(list(values), dtype=np.float64)
    if len(a) == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else math.nan, len(a)


def group(results: list[dict[str, Any]]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """dataset -> arm -> results (one per seed), in order."""
    out: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for r in results:
        out.setdefault(r["dataset"], {}).setdefault(r["arm"], []).append(r)
    return out


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
    """dataset -> arm -> metric -> (mean, std, seeds), metrics as fractions."""
    return {ds: {arm: {k: mean_std(r["metrics"][k] for r in rs) for k in rs[0]["metrics"]} for arm, rs in arms.items()}
            for ds, arms in group(results).items()}


# ---------------------------------------------------------------- the report

REPORT_METRICS = ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5")
FINDINGS_START, FINDINGS_END = "<!-- findings:start -->", "<!-- findings:end -->"
FINDINGS_PLACEHOLDER = ("_To be written from the numbers above once the full study has run: where RAMEN helps, "
                        "where it does not, head vs tail, and the cost of graph-at-inference._")


def _pm(mean: float, std: float, scale: float = 100.0, digits: int = 2) -> str:
    if math.isnan(mean):
        return "-"
    s = f"{scale * mean:.{digits}f}"
    return s if math.isnan(std) else f"{s} ± {scale * std:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def _arm_table(arms: dict[str, list[dict[str, Any]]]) -> list[str]:
    rows = []
    for arm, rs in arms.items():
        cells = [f"{arm}", str(len(rs))]
        cells += [_pm(*mean_std(r["metrics"][k] for r in rs)[:2]) for k in REPORT_METRICS]
        step = mean_std(r["step_seconds"]["median"] for r in rs if r["step_seconds"]["median"])
        wall = mean_std(r["train_seconds"] / 60 for r in rs if not r.get("resumed"))
        cells += [_pm(step[0], step[1], 1.0), _pm(wall[0], wall[1], 1.0, 1), str(rs[0]["steps"])]
        rows.append(cells)
    return _table(["arm", "seeds", *REPORT_METRICS, "s/step", "train min", "steps"], rows)


def _delta_table(arms: dict[str, list[dict[str, Any]]]) -> list[str]:
    """Per-seed paired differences to the plain arm (same seed): mean ± std, in points."""
    if "plain" not in arms:
        return ["(no plain arm: no differences)"]
    base = {r["seed"]: r["metrics"] for r in arms["plain"]}
    keys = ("P@1", "P@5", "PSP@1", "PSP@5")
    rows = []
    for arm, rs in arms.items():
        if arm == "plain":
            continue
        paired = [r for r in rs if r["seed"] in base]
        cells = [arm, str(len(paired))]
        for k in keys:
            mean, std, n = mean_std(r["metrics"][k] - base[r["seed"]][k] for r in paired)
            mark = "" if n < 2 or math.isnan(std) else (" (>1 sd)" if abs(mean) > std else "")
            cells.append(("+" if mean > 0 else "") + _pm(mean, std) + mark)
        rows.append(cells)
    return _table(["arm", "paired seeds", *(f"Δ{k}" for k in keys)], rows)


def _decile_table(arms: dict[str, list[dict[str, Any]]], field: str, col: int) -> list[str]:
    first = next(iter(arms.values()))[0]["deciles"]
    n_bins = len(first["labels"])
    rows = []
    for b in range(n_bins):
        name = f"{b + 1}" + (" (head)" if b == 0 else " (tail)" if b == n_bins - 1 else "")
        cells = [name, f"{first['labels'][b]:,}", f"{100 * first['train_share'][b]:.1f}"]
        cells += [_pm(*mean_std(r["deciles"][field][b][col] for r in rs)[:2]) for rs in arms.values()]
        rows.append(cells)
    return _table(["decile", "labels", "train %", *arms], rows)


def _oak_table(oaks: list[dict[str, Any]]) -> list[str]:
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for o in oaks:
        by.setdefault((o["dataset"], o["arm"]), []).append(o)
    rows = []
    for (ds, arm), os_ in by.items():
        base_p50 = mean_std(o["latency_ms"]["encoder_only"]["p50"] for o in os_)[0]
        for method, title in (("encoder_only", "encoder only (RAMEN's inference)"),
                              ("oak_style", "OAK-style: retrieved anchors"),
                              ("oracle_links", "OAK-style + oracle links")):
            have = [o for o in os_ if method in o]
            if not have:
                continue
            cells = [ds, arm, title]
            cells += [_pm(*mean_std(o[method]["metrics"][k] for o in have)[:2]) for k in ("P@1", "P@5", "PSP@1", "PSP@5")]
            if method == "oak_style":
                chosen = sorted({f"m={o['chosen']['m']}, α={o['chosen']['alpha']}" for o in have})
            elif method == "oracle_links":
                chosen = sorted({f"α={o[method]['alpha']}" for o in have})
            else:
                chosen = ["-"]
            cells.append("; ".join(chosen))
            lat = [o["latency_ms"][method] for o in have if method in o["latency_ms"]]
            p50, p99 = mean_std(x["p50"] for x in lat), mean_std(x["p99"] for x in lat)
            cells += [_pm(p50[0], p50[1], 1.0, 2), _pm(p99[0], p99[1], 1.0, 2),
                      f"{p50[0] / base_p50:.2f}" if lat and base_p50 > 0 else "-"]
            rows.append(cells)
    return _table(["dataset", "encoder", "inference", "P@1", "P@5", "PSP@1", "PSP@5", "chosen on held-out",
                   "p50 ms", "p99 ms", "p50 / encoder-only"], rows)


def _oak_breakdown(oaks: list[dict[str, Any]]) -> list[str]:
    rows = []
    for o in oaks:
        lat = o["latency_ms"]
        rows.append([o["dataset"], o["arm"], str(o["seed"]), f"{lat['oak_encode']['p50']:.2f}",
                     f"{lat['oak_anchor']['p50']:.3f}", f"{lat['oak_label']['p50']:.3f}",
                     f"{o['latency_setup']['anchors']:,}", f"{o['latency_setup']['load'][0]:.1f}"])
    return _table(["dataset", "encoder", "seed", "encode p50 ms", "anchor search + mix p50 ms",
                   "label search p50 ms", "anchors indexed", "load (1 min)"], rows)


def _plots(grouped: dict[str, dict[str, list[dict[str, Any]]]], out_dir: Path, stem: str) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for ds, arms in grouped.items():
        names = list(arms)
        x = np.arange(len(names))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key in zip(axes, ("P@1", "PSP@1")):
            stats = [mean_std(100 * r["metrics"][key] for r in arms[a]) for a in names]
            means = [s[0] for s in stats]
            errs = [0.0 if math.isnan(s[1]) else s[1] for s in stats]
            ax.bar(x, means, yerr=errs, capsize=4, color=["#888888" if a == "plain" else "#3b75af" for a in names])
            for i, a in enumerate(names):
                ax.plot([i] * len(arms[a]), [100 * r["metrics"][key] for r in arms[a]], "k.", ms=4)
            ax.set_xticks(x, names, rotation=30, ha="right")
            ax.set_ylabel(f"{key} (%)")
            ax.set_title(f"{ds}: {key}, mean ± sd over seeds")
            lo = min(m - e for m, e in zip(means, errs))
            ax.set_ylim(max(0.0, lo - 0.15 * (max(means) - lo + 1.0)), None)
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"{stem}_{_slug(ds)}_arms.png"))
        plt.close(fig)

        n_bins = len(next(iter(arms.values()))[0]["deciles"]["labels"])
        fig, ax = plt.subplots(figsize=(12, 4))
        width = 0.8 / len(names)
        for i, a in enumerate(names):
            stats = [mean_std(100 * r["deciles"]["P"][b][K - 1] for r in arms[a]) for b in range(n_bins)]
            ax.bar(np.arange(n_bins) + (i - (len(names) - 1) / 2) * width, [s[0] for s in stats], width,
                   yerr=[0.0 if math.isnan(s[1]) else s[1] for s in stats], capsize=2, label=a)
        ax.set_xticks(np.arange(n_bins), [f"{b + 1}" + ("\nhead" if b == 0 else "\ntail" if b == n_bins - 1 else "")
                                          for b in range(n_bins)])
        ax.set_xlabel("label-frequency decile (equal shares of training positives)")
        ax.set_ylabel(f"contribution to P@{K} (%)")
        ax.set_title(f"{ds}: P@{K} by label decile, mean ± sd over seeds")
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        written.append(_save(fig, out_dir / f"{stem}_{_slug(ds)}_deciles.png"))
        plt.close(fig)
    return written


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", s).strip("-")


def _save(fig, path: Path) -> Path:
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)
    return path


def _kept_findings(path: Path) -> str:
    """The findings text between the markers of an existing report (kept across regenerations)."""
    if path.exists():
        text = path.read_text()
        a, b = text.find(FINDINGS_START), text.find(FINDINGS_END)
        if a >= 0 and b > a:
            return text[a + len(FINDINGS_START):b].strip("\n")
    return FINDINGS_PLACEHOLDER


def write_report(runs: str | os.PathLike, out: str | os.PathLike) -> tuple[Path, list[Path]]:
    """Writes the Markdown report `out` and its PNG plots beside it from the JSONs under `runs`."""
    runs, out = Path(runs), Path(out)
    results, oaks = load_results(runs)
    if not results:
        raise ValueError(f"no result.json under {runs}: run the study first (python benchmarks/accuracy.py run)")
    out.parent.mkdir(parents=True, exist_ok=True)
    grouped = group(results)
    plots = _plots(grouped, out.parent, out.stem)
    first = results[0]
    machine = first["machine"]
    loads = [x for r in results for x in (r["load"]["before"][0], r["load"]["after"][0])]
    versions = ", ".join(f"{k} {machine[k]}" for k in ("python", "numpy", "scipy", "torch", "transformers", "usearch")
                         if k in machine)
    commits = sorted({f"{r['ramen'].get('commit')}{' (dirty)' if r['ramen'].get('dirty') else ''}" for r in results})
    commands = sorted({r["command"] for r in results} | {o.get("command", "") for o in oaks} - {""})
    lines = [
        "# Accuracy study: RAMEN against the plain dual encoder, its ablations, AugGT and graph-at-inference",
        "",
        f"Generated by `python benchmarks/accuracy.py report --runs {runs}` from {len(results)} runs "
        f"({datetime.datetime.now().isoformat(timespec='minutes')}). Code: `benchmarks/accuracy.py` (protocol in its "
        "docstring), OAK-style peer `benchmarks/peers/oak_style.py`.",
        "",
        "## How it was run",
        "",
        "Commands that produced these runs:",
        "",
        *(f"    {c}" for c in commands),
        "",
        f"- Seeds: {sorted({r['seed'] for r in results})} (initialisation, batch order, densification walks); one fixed "
        "data split per dataset.",
        f"- Machine: {machine.get('cpu')}, {machine.get('cores')} cores, torch threads "
        f"{', '.join(sorted({str(r['machine'].get('torch_threads')) for r in results}))}"
        f"{', GPU ' + machine['gpu'] if 'gpu' in machine else ''}; 1-min load average during the runs "
        f"{min(loads):.1f} to {max(loads):.1f} (the machine is shared: times are indicative).",
        f"- Versions: {versions}; ramen {first['ramen'].get('version')} at commit(s) {', '.join(commits)}.",
        "- Metrics: exact search, k = 5, test split, propensity A, B of each dataset; mean ± sample standard "
        "deviation (ddof 1) over seeds, in %. `s/step`: median training step; `train min`: wall time of `ramen.train` "
        "(runs resumed after an interruption left out).",
        "",
        "Data and budget:",
        "",
    ]
    for ds, arms in grouped.items():
        r0 = next(iter(arms.values()))[0]
        info = r0["data"]
        budget = {k: v for k, v in r0["config"].items() if k not in ("seed",) and k not in r0["overrides"]}
        shown = ", ".join(f"{k}={budget[k]}" for k in ("encoder", "epochs", "batch_size", "lr", "warmup", "margin",
                                                       "num_negatives", "densify", "walk_length", "restart_prob",
                                                       "densify_top_k", "warmup_epochs", "prune_every",
                                                       "prune_threshold", "lambda_x", "lambda_z") if k in budget)
        lines += [f"- **{ds}**: {r0['source']}; {info['train']:,} training queries ({info['held_out']:,} more held "
                  f"out of training, seed {info['split_seed']}), {info['test']:,} test queries, {info['labels']:,} "
                  f"labels; anchor sets {', '.join(f'{n} ({c:,})' for n, c in info['anchor_sets'].items())}. "
                  f"Budget: {shown}."]
    lines += ["", "Arms (TrainConfig overrides of the budget):", ""]
    ran = {r["arm"]: r["overrides"] for r in results}
    lines += [f"- `{a}`: {ARM_TITLES.get(a, a)}: `{json.dumps(o)}`" for a, o in ran.items()]
    lines += ["", "## Results", ""]
    for ds, arms in grouped.items():
        lines += [f"### {ds}", "", *_arm_table(arms), "",
                  "Difference to the plain dual encoder, paired by seed (points; `>1 sd`: the mean difference exceeds "
                  "its standard deviation over seeds):", "", *_delta_table(arms), "",
                  f"![P@1 and PSP@1 per arm]({out.stem}_{_slug(ds)}_arms.png)", "",
                  f"Contribution of each label decile to P@{K} (head to tail; the deciles sum to P@{K}; labels sorted "
                  "by training frequency, each decile holding a tenth of the training positives):", "",
                  *_decile_table(arms, "P", K - 1), "",
                  "Contribution of each label decile to P@1:", "", *_decile_table(arms, "P", 0), "",
                  f"Recall@{K} within each decile (the share of the decile's test positives found in the top {K}):",
                  "", *_decile_table(arms, "R", K - 1), "",
                  f"![P@{K} by label decile]({out.stem}_{_slug(ds)}_deciles.png)", ""]
    lines += ["## Graph at inference: an OAK-style baseline", ""]
    if oaks:
        lines += [
            "RAMEN's inference is the encoder alone (encode the query, search the labels). The OAK-style baseline "
            "(`benchmarks/peers/oak_style.py`) takes the same trained encoder and uses the graph at inference: it "
            "retrieves the query's top-m anchors (all anchor sets in one index) and searches the labels with "
            "normalize(q + α · cosine-weighted mean of the anchors). m and α are chosen by P@1 on the held-out "
            "training queries (grid m ∈ " + str(list(oaks[0]['settings']['m'])) + ", α ∈ "
            + str(list(oaks[0]['settings']['alpha'])) + "; α = 0 is the encoder alone), never on test. "
            "'+ oracle links' mixes in the test query's own graph links instead (the paper's OAK + Oracle: no "
            "deployed system has them for a novel query). It has no trained combiner, so it is a floor of what "
            "OAK's learned fusion could add and of what it costs.",
            "",
            "Accuracy: exact search. Latency: one query at a time, one thread (torch and index), the HNSW label index "
            "that `ramen.train` saves and an HNSW anchor index (defaults); each pipeline sweeps "
            f"{oaks[0]['latency_setup']['queries']} test queries in turn after 5 warm-up ones, twice, the order of "
            "the pipelines reversed in the second round; mean over seeds of each seed's p50 / p99. The OAK-style "
            "pipeline runs its anchor search even where α = 0 was chosen.",
            "", *_oak_table(oaks), "", "Where the OAK-style time goes (p50 per stage):", "", *_oak_breakdown(oaks), ""]
    else:
        lines += ["(not run)", ""]
    lines += ["## Findings", "", FINDINGS_START, _kept_findings(out), FINDINGS_END, ""]
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    return out, plots


# ---------------------------------------------------------------- CLI


def _parse_setting(text: str) -> tuple[str, Any]:
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise SystemExit(f"--set takes FIELD=VALUE, got {text!r}")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value  # a bare string such as an encoder name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/accuracy.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate every missing run (resumes interrupted ones)")
    run.add_argument("--quick", action="store_true", help="synthetic('tiny'), tiny encoder, 1 seed, 1 epoch (~1 min)")
    run.add_argument("--datasets", nargs="+", help=f"default: {' '.join(FULL_DATASETS)} ({QUICK_DATASETS[0]} with --quick)")
    run.add_argument("--arms", nargs="+", choices=list(ARMS), help="default: all")
    run.add_argument("--seeds", nargs="+", type=int, help="default: 0 1 2 (0 with --quick)")
    run.add_argument("--runs", type=Path, help="run directories (default runs/accuracy, runs/accuracy-quick)")
    run.add_argument("--wikispeedia", type=Path, help="Wikispeedia SNAP files (default $RAMEN_WIKISPEEDIA or "
                                                      "../shared/data/wikispeedia beside the checkout)")
    run.add_argument("--no-oak", action="store_true", help="skip the OAK-style baseline and latencies")
    run.add_argument("--latency-queries", type=int, help="test queries timed one at a time (default 200, 20 quick)")
    run.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 with --quick). On a shared "
                                                 "machine 1 thread avoids OpenMP's slowdown under contention")
    run.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                     help="override a TrainConfig field of every budget (JSON value), e.g. --set epochs=1 to "
                          "check the pipeline; runs made so are kept apart from the study's by their config")
    run.add_argument("--report", type=Path, help="also write the report here when done")
    run.add_argument("--no-progress", action="store_true")
    est = sub.add_parser("estimate", help="measure s/step of each arm and the study's training time it implies")
    est.add_argument("--quick", action="store_true")
    est.add_argument("--datasets", nargs="+")
    est.add_argument("--arms", nargs="+", choices=list(ARMS))
    est.add_argument("--seeds", nargs="+", type=int)
    est.add_argument("--steps", type=int, default=3, help="timed steps per arm (after 3 warm-up steps)")
    est.add_argument("--wikispeedia", type=Path)
    est.add_argument("--threads", type=int)
    est.add_argument("--out", type=Path, help="append the measurements as a Markdown section to this file")
    rep = sub.add_parser("report", help="write the Markdown report and plots from the result files")
    rep.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    rep.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy.md")
    args = parser.parse_args(argv)

    if args.command in ("run", "estimate"):
        overrides: dict[str, Any] = {}
        for field, value in (("datasets", args.datasets), ("arms", args.arms), ("seeds", args.seeds),
                             ("latency_queries", getattr(args, "latency_queries", None)),
                             ("threads", args.threads)):
            if value is not None:
                overrides[field] = tuple(value) if isinstance(value, list) else value
        if getattr(args, "no_oak", False):
            overrides["oak"] = False
        if getattr(args, "set", None):
            overrides["budget"] = dict(_parse_setting(x) for x in args.set)
        study = (Study.quick(**overrides) if args.quick else Study(**overrides)).validate()
        if args.command == "estimate":
            rows = estimate(study, steps=args.steps, wikispeedia_dir=args.wikispeedia)
            total = sum(r["study_min"] for r in rows)
            print(f"training steps alone: {total:.0f} min ({total / 60:.1f} h) for {len(study.seeds)} seeds")
            if args.out:
                write_estimate(rows, study, args.out, steps=args.steps)
                print(f"appended to {args.out}")
            return 0
        runs = args.runs or Path("runs/accuracy-quick" if args.quick else "runs/accuracy")
        run_study(study, runs, wikispeedia_dir=args.wikispeedia, progress=not args.no_progress)
        if args.report:
            path, plots = write_report(runs, args.report)
            print(f"wrote {path} and {len(plots)} plots")
        return 0
    path, plots = write_report(args.runs, args.out)
    print(f"wrote {path} and {len(plots)} plots: {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
