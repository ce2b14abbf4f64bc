"""The accuracy study (issue 7): RAMEN against the plain dual encoder, its ablations, AugGT and a
graph-at-inference baseline in the spirit of OAK, with the same encoder, budget and seeds.

    python benchmarks/accuracy.py run [--quick] [--datasets ...] [--arms ...] [--seeds 0 1 2] [--runs DIR]
                                      [--threads N]
    python benchmarks/accuracy.py report [--runs DIR] [--out benchmarks/results/accuracy.md]
    python benchmarks/accuracy.py estimate [--datasets ...] [--arms ...] [--threads N]   # s/step, hours
    python benchmarks/accuracy.py heldout --arms ... [--seeds ...]   # held-out-query metrics beside test
    python benchmarks/accuracy.py zeroshot [--datasets ...]   # the untrained encoder: the floor of every arm
    python -m ramen.bench --suite accuracy [--quick]        # run, then report

Each (dataset, arm, seed) trains with `ramen.train` into RUNS/<dataset>/<arm>/seed<k>/ (log.jsonl,
checkpoint.safetensors, model/), is evaluated once at the end on the test split (exact search, k = 5, with
the label-decile breakdown) and writes result.json there; the plain and RAMEN runs also write
oak.json (the OAK-style baseline and single-query latencies). A rerun skips finished runs and
resumes interrupted ones from their last checkpoint, so the study survives being killed and
restarted; a run directory made with other settings is an error, never silently reused.
`report` reads only the JSON files and writes the Markdown report and its PNG plots
(benchmarks/accuracy_report.py).

Protocol, identical for every arm of a dataset:
- one fixed split (Wikispeedia, FOLDOC: the converter's seeded 80/20 draw, seed 0), and a held-out slice
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
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
if __name__ == "__main__" and any((ROOT / "src" / "ramen").glob("_C*.so")):
    sys.path.insert(0, str(ROOT / "src"))  # built in place (tools/build-inplace): use the checkout's ramen
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from ramen import metrics  # noqa: E402
from ramen.config import RETIRED_AT, TrainConfig, without_retired  # noqa: E402
from ramen.datasets import Dataset  # noqa: E402
from ramen.datasets.held_out import hold_out  # noqa: E402

K = 5  # metrics at k = 1..K
HELD_OUT = 0.1  # fraction of training queries held out of training (chooses the OAK-style m, alpha)
SPLIT_SEED = 0
SEEDS = (0, 1, 2)

# ---------------------------------------------------------------- arms and budgets

# arm -> TrainConfig overrides of the dataset's budget
PAPER_ARM_SETTINGS: dict[str, dict[str, Any]] = {  # issue 7
    "plain": {"graph": False},
    "ramen": {},
    "no-prune": {"prune": False},
    "no-query-graph": {"query_graph": False},
    "no-label-graph": {"label_graph": False},
    "auggt": {"aug_gt": True},
}
# Issue 8's levers. Each runs alone on top of the paper's recipe ("ramen"), and on top of "allneg"
# (the regularisers against all in-batch anchors), because the paper's 10 hardest anchor negatives
# drive every loss component to the margin (a collapse the other levers cannot undo).
LEVERS: dict[str, dict[str, Any]] = {
    "allneg": {"reg_num_negatives": None},
    "lambda-0.1": {"lambda_x": 0.1, "lambda_z": 0.1},
    "lambda-0.3": {"lambda_x": 0.3, "lambda_z": 0.3},
    "lambda-0.03": {"lambda_x": 0.03, "lambda_z": 0.03},
    "bandit": {"reliance": "bandit"},
    "schedule": {"reliance": "schedule", "lambda_warmup": 0.1, "lambda_decay_from": 0.7},
    "soft-prune": {"soft_prune": True},
    "reg-head": {"reg_head": True},  # regularisers in a learned linear map of the space, not the space itself
    "reg-head-fast": {"reg_head": True, "reg_head_lr": 1e-3},  # the same map at 20x the encoder's lr
    "prune-q20": {"prune_quantile": 0.2},
    "identity": {"anchor_identity": "exclude"},
    "identity-positive": {"anchor_identity": "positive"},
    "pull": {"regulariser": "pull"},
    "no-densify": {"densify": False},
    "bank": {"anchor_bank": True},  # anchors embedded without gradient, refreshed every epoch
    "category-only": {"anchor_sets": ["category"]},  # one anchor set at a time (both datasets name
    "hyperlink-only": {"anchor_sets": ["hyperlink"]},  # theirs hyperlink and category)
    "hyperlink-rx-off": {"lambdas": {"hyperlink": [0.0, 1.0]}},  # no R_x for hyperlink; R_z and category kept
    "graph-neg": {"graph_negatives": 1},  # per query, one label its anchors stand for joins the batch as a negative
    "random-neg": {"random_negatives": 1},  # the control: one uniform label per query
    "hub-1": {"anchor_degree_power": 1.0},  # a row's anchor drawn in inverse proportion to the anchor's degree
    "rx-only": {"label_graph": False},  # the paper's ablations, on top of allneg
    "rz-only": {"query_graph": False},
    "task-allneg": {"num_negatives": None},  # the task loss against all in-batch labels, not the 10 hardest
    "reg-sep": {"reg_step": "separate"},  # task and regularisers normalised by Adam moments of their own
    "bf16": {"cpu_bf16": True},  # issue 28: the encoder under bf16 autocast on the CPU (AMX), not a lever
    # issue 28's training lengths, evaluated after every epoch on test and held-out queries (curves)
    "e10": {"eval_every": 1},
    "e30": {"epochs": 30, "eval_every": 1},
    "e60": {"epochs": 60, "eval_every": 1},
    # issue 28's NGAME batches for a 30-epoch run: the paper's schedule (300 epochs; clusters refreshed
    # every 5, cluster size doubled every 25) scaled to the run: refreshed every epoch (5/300 of a run
    # is under one), doubled every 2.5 epochs (25/300 of 30), from 8 queries to the whole batch of 128
    "ngame30": {"cluster_batching": True, "cluster_size": 8, "cluster_refresh": 1, "cluster_double_at": [3, 5, 8, 10]},
    # the same schedule scaled to the study's 10-epoch budget (doubled after 0.83, 1.67, 2.5 and 3.33
    # epochs, rounded), beside the synthetic benchmark's 10-epoch float32 arms of 3 seeds each
    "ngame10": {"cluster_batching": True, "cluster_size": 8, "cluster_refresh": 1, "cluster_double_at": [1, 2, 3, 3]},
    # the same scaled to 60 epochs (doubled every 5 = 25/300 of 60): does the lead NGAME batches gave
    # the plain encoder at 30 epochs hold when plain, still rising at 30, trains on to 60?
    "ngame60": {"cluster_batching": True, "cluster_size": 8, "cluster_refresh": 1, "cluster_double_at": [5, 10, 15, 20]},
}
LEVER_TITLES = {
    "allneg": "regularisers against all in-batch anchors",
    "lambda-0.1": "lambda 0.1",
    "lambda-0.3": "lambda 0.3",
    "lambda-0.03": "lambda 0.03",
    "bandit": "reliance bandit (gradient agreement)",
    "schedule": "lambda ramp 10% then decay from 70%",
    "soft-prune": "soft pruning (rows weighted by edge cosine)",
    "reg-head": "regularisers on a learned linear head (identity at start), dropped after training",
    "reg-head-fast": "regularisers on a learned linear head (identity at start, lr 1e-3), dropped after training",
    "prune-q20": "pruning the lowest 20% of edge cosines",
    "identity": "anchors naming a true label never negatives",
    "identity-positive": "anchors naming a true label counted as positives",
    "pull": "pull-only regularisers",
    "no-densify": "without densification",
    "bank": "anchors embedded without gradient (refreshed every epoch)",
    "category-only": "the category anchor set alone",
    "hyperlink-only": "the hyperlink anchor set alone",
    "hyperlink-rx-off": "no R_x for the hyperlink set (its R_z and the category set kept)",
    "graph-neg": "one label per query that its anchors stand for added as a negative",
    "random-neg": "one uniformly drawn label per query added as a negative (control)",
    "hub-1": "anchors drawn in inverse proportion to their degree",
    "rx-only": "R_x only (no label graph)",
    "rz-only": "R_z only (no query graph)",
    "task-allneg": "the task loss against all in-batch labels (not the 10 hardest)",
    "reg-sep": "task and regularisers each normalised by its own Adam (the task's step is plain's)",
    "bf16": "bf16 autocast on the CPU",
    "e10": "10 epochs, evaluated every epoch",
    "e30": "30 epochs, evaluated every epoch",
    "e60": "60 epochs, evaluated every epoch",
    "ngame30": "NGAME cluster batches (refreshed every epoch, size 8 doubled at epochs 3, 5, 8, 10)",
    "ngame10": "NGAME cluster batches (refreshed every epoch, size 8 doubled at epochs 1, 2, 3 and twice at 3)",
    "ngame60": "NGAME cluster batches (refreshed every epoch, size 8 doubled at epochs 5, 10, 15, 20)",
}
# Levers retired from TrainConfig (ramen.config.RETIRED): their arms stay for the reports of the runs
# made before, and run only at commit RETIRED_AT.
RETIRED_LEVERS = frozenset({"schedule", "soft-prune", "reg-head", "reg-head-fast", "prune-q20", "identity",
                            "identity-positive", "pull", "bank", "graph-neg", "hub-1"})
# Levers that act on the task loss alone, also measured without regularisers.
PLAIN_LEVERS = ("graph-neg", "random-neg", "task-allneg")
# Combinations of those on the plain dual encoder: "plain+" then "+"-joined names of LEVERS.
LENGTHS = ("e10", "e30", "e60")  # issue 28: plain, light-graph, lambda 1 and lambda 1 with its own step, in bf16
PLAIN_COMBINATIONS = ("plain+random-neg+task-allneg", "plain+bf16", *(f"plain+bf16+{e}" for e in LENGTHS))
# Combinations of levers on top of "allneg": each a "+"-joined name of LEVERS.
COMBINATIONS = ("allneg+category-only+lambda-0.1", "allneg+category-only+lambda-0.3", "allneg+bank+lambda-0.1",
                "allneg+reg-head+lambda-0.1", "allneg+identity-positive+lambda-0.1", "allneg+reg-head-fast+lambda-0.1",
                "allneg+graph-neg+lambda-0.1", "allneg+random-neg+lambda-0.1", "allneg+hub-1+lambda-0.1",
                "allneg+hub-1+lambda-0.3", "allneg+rx-only+lambda-0.1", "allneg+rz-only+lambda-0.1",
                "allneg+reg-sep+lambda-0.1", "allneg+lambda-0.1+bf16",
                *(f"{arm}+{e}" for arm in ("allneg+lambda-0.1+bf16", "allneg+bf16", "allneg+reg-sep+bf16")
                  for e in LENGTHS))
# issue 28: NGAME batches for plain, light-graph, the paper's recipe and lambda 1, beside the +e30 arms
NGAME_COMBINATIONS = ("plain+ngame30+bf16+e30", "allneg+lambda-0.1+ngame30+bf16+e30", "ramen+ngame30+bf16+e30",
                      "allneg+ngame30+bf16+e30", "ramen+bf16+e30",
                      "plain+ngame10", "allneg+lambda-0.1+ngame10", "ramen+ngame10", "allneg+ngame10",
                      "plain+ngame60+bf16+e60", "allneg+lambda-0.1+ngame60+bf16+e60",
                      # at the CLI's default length, beside plain+bf16+e10 (issue 28: is NGAME a safe default?)
                      "plain+ngame10+bf16+e10",
                      # the +ngame10 arms' random-batch twins rerun with held-out curves (the same settings)
                      "plain+e10", "allneg+lambda-0.1+e10", "ramen+e10", "allneg+e10")


def _combined(name: str) -> dict[str, Any]:
    """The overrides of a "+"-joined arm name, each part a paper arm or a lever (later parts win)."""
    parts = {**PAPER_ARM_SETTINGS, **LEVERS}
    return {k: v for part in name.split("+") for k, v in parts[part].items()}


def _combined_title(name: str) -> str:
    """The title of a "+"-joined arm name: its base arm, then the titles of its levers."""
    base, *levers = name.split("+")
    return {"allneg": "RAMEN, all anchor negatives, ", "plain": "plain dual encoder, ",
            "ramen": "RAMEN (the paper's recipe), "}[base] + ", ".join(
        LEVER_TITLES[lever] for lever in levers)


# Every arm built from parts: each lever on allneg, the combinations, the task-loss levers on plain.
COMBINED = (*(f"allneg+{k}" for k in LEVERS if k not in ("allneg", "pull", "bf16", "ngame30", "ngame10", "ngame60",
                                                       *LENGTHS)),
            *COMBINATIONS, *(f"plain+{k}" for k in PLAIN_LEVERS), *PLAIN_COMBINATIONS, *NGAME_COMBINATIONS)
ARMS: dict[str, dict[str, Any]] = {**PAPER_ARM_SETTINGS, **LEVERS, **{name: _combined(name) for name in COMBINED}}
PAPER_ARMS = tuple(PAPER_ARM_SETTINGS)
ARM_TITLES = {
    "plain": "plain dual encoder (no graph)",
    "ramen": "RAMEN (the paper's recipe)",
    "no-prune": "RAMEN without pruning",
    "no-query-graph": "RAMEN without the query graph (no R_x)",
    "no-label-graph": "RAMEN without the label graph (no R_z)",
    "auggt": "AugGT (graph adds training labels, no regulariser)",
    **{k: f"RAMEN, {v}" for k, v in LEVER_TITLES.items()},
    **{name: _combined_title(name) for name in COMBINED},
}
OAK_ARMS = ("plain", "ramen")  # encoders the OAK-style baseline is built on
OAK_M = (1, 3, 5, 10, 20)  # anchors retrieved per query (the grid searched on held-out queries)
OAK_ALPHA = (0.0, 0.1, 0.25, 0.5, 1.0, 2.0)  # weight of the anchors' mean (0: the encoder alone)

# The yardstick's budget (../shared/notes/wikispeedia-yardstick.md), every setting pinned so that a
# change of TrainConfig's defaults cannot change the study silently. RAMEN's graph schedule: walks
# densify the graphs once; 5 warm-up epochs on the unpruned graph, then prune (cosine > 0) every 5
# epochs, i.e. once, before epoch 6 of 10.
BUDGET: dict[str, Any] = dict(
    encoder="all-MiniLM-L6-v2", pooling="mean", max_length=32, label_tower=False, graph=True,
    epochs=10, batch_size=128, lr=5e-5, weight_decay=0.01, warmup=0.05, grad_clip=1.0,
    margin=0.3, num_negatives=10, reg_num_negatives=10, softmax_temperature=None,
    lambda_x=1.0, lambda_z=1.0, densify=True, walk_length=400, restart_prob=0.8, densify_top_k=10,
    prune_threshold=0.0, warmup_epochs=5, prune_every=5, aug_gt_top_k=10,
    cluster_batching=False, eval_every=0, cpu_bf16=False,
)
# --quick: a tiny random encoder on synthetic("tiny"), one epoch, pruning before it (a pipeline check).
QUICK_BUDGET: dict[str, Any] = dict(
    encoder="tiny", max_length=32, graph=True, epochs=1, batch_size=32, lr=1e-3, warmup=0.05, margin=0.3,
    num_negatives=10, walk_length=20, warmup_epochs=0, prune_every=1, prune_threshold=0.0,
    encode_batch_size=64, dropout=0.0, eval_every=0, cpu_bf16=False,
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


def find_foldoc() -> Path:
    """$RAMEN_FOLDOC, else the file Debian's dict-foldoc installs (/usr/share/dictd/foldoc.dict.dz)."""
    from ramen.datasets.foldoc import DEFAULT_PATH

    return Path(os.environ["RAMEN_FOLDOC"]) if os.environ.get("RAMEN_FOLDOC") else DEFAULT_PATH


def dataset_specs(wikispeedia_dir: str | os.PathLike | None = None) -> dict[str, DatasetSpec]:
    from ramen.datasets import foldoc, wikispeedia
    from ramen.datasets.synthetic import synthetic

    wiki = Path(wikispeedia_dir) if wikispeedia_dir else find_wikispeedia()
    dictd = find_foldoc()
    return {
        "wikispeedia": DatasetSpec("wikispeedia", lambda: wikispeedia(wiki, seed=SPLIT_SEED) if wiki.is_dir() else None,
                                   BUDGET, f"ramen.data.wikispeedia({str(wiki)!r}, seed={SPLIT_SEED})"),
        "foldoc": DatasetSpec("foldoc", lambda: foldoc(dictd, seed=SPLIT_SEED) if dictd.exists() else None, BUDGET,
                              f"ramen.data.foldoc({str(dictd)!r}, seed={SPLIT_SEED})"),
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
    arms: tuple[str, ...] = PAPER_ARMS
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
    retired = [part for part in arm.split("+") if part in RETIRED_LEVERS]
    if retired:
        raise ValueError(f"arm {arm!r}: {', '.join(retired)} retired from TrainConfig (measured to do nothing, "
                         f"graph_levers.md); its runs stay in benchmarks/results/accuracy-runs, and ramen at commit "
                         f"{RETIRED_AT} reruns them")
    # the budget's graph settings serve the graph arms; a plain arm leaves them unread, at their defaults
    return TrainConfig(**{**budget, **ARMS[arm], "seed": int(seed)}).validate().without_idle()


# ---------------------------------------------------------------- the held-out slice


@dataclasses.dataclass
class Prepared:
    """A dataset ready for the study: the training data of every arm and the held-out slice."""

    name: str
    train: Dataset  # the dataset with the held-out queries removed from its training split
    held: Dataset  # the same, with the held-out training queries as its test split
    held_rows: np.ndarray  # their rows in the full training split
    info: dict[str, Any]  # sizes and split: part of each run's identity
    source: str


def prepare(spec: DatasetSpec, held_out: float) -> Prepared | None:
    dataset = spec.load()
    if dataset is None:
        return None
    split = hold_out(dataset, held_out, SPLIT_SEED)
    info = {"train": split.train.num_train, "held_out": split.held.num_test, "test": dataset.num_test,
            "labels": dataset.num_labels, "held_out_fraction": held_out, "split_seed": SPLIT_SEED,
            "anchor_sets": {n: a.num_anchors for n, a in dataset.anchor_sets.items()}}
    return Prepared(spec.name, split.train, split.held, split.rows, info, spec.source)


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
        if isinstance(old.get("config"), dict):  # a field added since the run started holds its default there
            defaults = _roundtrip(TrainConfig().to_dict())
            kept = without_retired(old["config"], f"{path}: ")  # and a retired one is gone (at its default)
            old["config"] = {**{k: v for k, v in defaults.items() if k not in kept}, **kept}
            with contextlib.suppress(TypeError, ValueError):  # settings its switches leave unread: as arm_config
                old["config"] = _roundtrip(TrainConfig(**old["config"]).without_idle().to_dict())
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
    """Trains and evaluates one (dataset, arm, seed), or reads its result: (status, result). Status
    "busy" (and an empty result): another process is training that run now."""
    run = run_dir(runs, data.name, arm, seed)
    cfg = arm_config(spec.budget, arm, seed)
    identity = {"dataset": data.name, "arm": arm, "seed": seed, "overrides": ARMS[arm],
                "config": cfg.to_dict(), "data": data.info}
    _claim(run / "run.json", identity)
    result_path = run / "result.json"
    if result_path.exists():
        return "skipped", json.loads(result_path.read_text())
    with _run_lock(run) as mine:
        if not mine:
            return "busy", {}
        if result_path.exists():  # another process finished it between the check above and the lock
            return "skipped", json.loads(result_path.read_text())
        return _train_and_evaluate(data, cfg, identity, run, progress)


@contextlib.contextmanager
def _run_lock(run: Path) -> Iterator[bool]:
    """An exclusive lock on a run directory for as long as one process trains it: yields False
    where another process holds it, so several study processes share the runs instead of training
    the same one twice. The operating system drops the lock when its process dies."""
    import fcntl

    with open(run / ".lock", "a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _train_and_evaluate(data: Prepared, cfg: TrainConfig, identity: dict[str, Any], run: Path,
                        progress: bool) -> tuple[str, dict[str, Any]]:
    from ramen.bench.common import machine_info
    from ramen.train import CHECKPOINT, train

    result_path = run / "result.json"
    resume = (run / CHECKPOINT).exists()
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    model = train(data.train, cfg, out_dir=run, resume=resume, progress=progress,
                  eval_sets={"heldout": data.held})
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    m = model.evaluate(data.train, k=K, exact=True, deciles=True, batch_size=cfg.encode_batch_size, progress=False)
    eval_s = time.perf_counter() - t0
    logged = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    # a resumed run logs again the steps after its last checkpoint: the last entry of a step is the kept one
    steps = list({r["global_step"]: r for r in logged if r.get("event") == "step"}.values())
    # the evaluations during training (eval_every), per split: test and the held-out training queries
    curves: dict[str, dict[int, dict[str, float]]] = {}
    for r in logged:
        if r.get("event") == "eval":
            curves.setdefault(r.get("split", "test"), {})[int(r["epoch"])] = r["metrics"]
    step_s = np.array([cfg.batch_size / r["qps"] for r in steps if r.get("qps")])
    result = {
        "kind": "ramen-accuracy-run", "format": 1, **identity, "source": data.source,
        "metrics": _flat(m), "deciles": _deciles(m["deciles"]),
        "curves": {split: [{"epoch": e, **m} for e, m in sorted(c.items())] for split, c in curves.items()},
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


def _sibling(name: str, relative: str):
    """A module of benchmarks/ loaded by path (benchmarks/ is no package), once."""
    import importlib.util

    key = f"ramen_benchmark_{name}"
    if key not in sys.modules:
        path = Path(__file__).resolve().parent / relative
        spec = importlib.util.spec_from_file_location(key, path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]


def _oak_peer():
    """The OAK-style peer (ramen.bench.peers.oak_style)."""
    from ramen.bench.peers import oak_style

    return oak_style


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


def _trained_model(run: Path, spec: DatasetSpec, arm: str, seed: int) -> tuple[Any, int]:
    """A finished run's model, encoding as the run's own evaluations did (bf16 autocast where the arm
    trained under it), and the encode batch size they used."""
    from ramen import precision
    from ramen.model import Model

    cfg = arm_config(spec.budget, arm, seed)
    model = Model.load(run / "model")
    model.encoder.bf16 = precision.bf16_enabled(model.encoder.device, gpu=cfg.bf16, cpu=cfg.cpu_bf16)
    return model, cfg.encode_batch_size


def heldout_run(data: Prepared, spec: DatasetSpec, arm: str, seed: int, runs: Path) -> dict[str, float] | None:
    """Metrics of one finished run's encoder on the held-out training queries (cached in heldout.json):
    what a user can choose a recipe by without looking at the test split. None if the run is unfinished."""
    from ramen.index import LabelIndex

    run = run_dir(runs, data.name, arm, seed)
    path = run / "heldout.json"
    if path.exists():
        return json.loads(path.read_text())["metrics"]
    if not (run / "result.json").exists():
        return None
    ds, held = data.train, data.held
    model, bs = _trained_model(run, spec, arm, seed)
    labels = LabelIndex(model.encoder.dim, exact=True)
    labels.add(np.arange(ds.num_labels, dtype=np.int64),
               model.encode(ds.label_texts, batch_size=bs, tower="label", progress=False))
    q = model.encode(held.test_texts, batch_size=bs, progress=False)
    inv_p = metrics.inv_propensity(ds.train_Y, ds.A, ds.B)
    out = _search_metrics(labels, q, held.test_Y, ds.train_Y, inv_p, held.test_filter)["metrics"]
    write_json(path, {"dataset": data.name, "arm": arm, "seed": seed, "queries": held.num_test, "metrics": out})
    return out


def at_one(ids: np.ndarray, true_Y: sp.csr_matrix, inv_p: np.ndarray, filt: np.ndarray | None) -> dict[str, list]:
    """Per query, from ranked label ids (filtered pairs skipped, -1 padding ignored): `hit` (its top
    label is true), `gain` (inv_p of that label if true, else 0) and `best` (the largest inv_p among its
    true labels). P@1 = mean(hit) and PSP@1 = mean(gain) / mean(best), as ramen.metrics computes them:
    what a bootstrap over queries resamples."""
    skip = set(map(tuple, np.asarray(filt).tolist())) if filt is not None and len(filt) else set()
    true_Y = sp.csr_matrix(true_Y)
    hit, gain, best = [], [], []
    for row in range(len(ids)):
        top = next((int(j) for j in ids[row] if j >= 0 and (row, int(j)) not in skip), -1)
        truth = true_Y.indices[true_Y.indptr[row]:true_Y.indptr[row + 1]]
        h = int(top >= 0 and top in set(truth.tolist()))
        hit.append(h)
        gain.append(float(inv_p[top]) if h else 0.0)
        best.append(float(inv_p[truth].max()) if len(truth) else 0.0)
    return {"hit": hit, "gain": gain, "best": best}


def per_query_run(data: Prepared, spec: DatasetSpec, arm: str, seed: int, runs: Path) -> dict[str, Any] | None:
    """One finished run's per-query P@1 and PSP@1 terms on the held-out and test queries (cached in
    perquery.json), checked against the run's own final metrics; None if the run or its model is gone."""
    from ramen.index import LabelIndex

    run = run_dir(runs, data.name, arm, seed)
    path = run / "perquery.json"
    if path.exists():
        return json.loads(path.read_text())
    if not (run / "result.json").exists() or not (run / "model").is_dir():
        return None
    result = json.loads((run / "result.json").read_text())
    ds = data.train
    model, bs = _trained_model(run, spec, arm, seed)
    labels = LabelIndex(model.encoder.dim, exact=True)
    labels.add(np.arange(ds.num_labels, dtype=np.int64),
               model.encode(ds.label_texts, batch_size=bs, tower="label", progress=False))
    inv_p = metrics.inv_propensity(ds.train_Y, ds.A, ds.B)
    out: dict[str, Any] = {"dataset": data.name, "arm": arm, "seed": seed}
    recorded = {"test": result["metrics"]}
    if result.get("curves", {}).get("heldout"):
        recorded["heldout"] = result["curves"]["heldout"][-1]
    for split, split_ds in (("test", ds), ("heldout", data.held)):
        filt = split_ds.test_filter
        extra = 0 if filt is None or len(filt) == 0 else int(np.bincount(filt[:, 0], minlength=split_ds.num_test).max())
        ids, _ = labels.search(model.encode(split_ds.test_texts, batch_size=bs, progress=False), 1 + extra)
        terms = at_one(ids, split_ds.test_Y, inv_p, filt)
        p1 = float(np.mean(terms["hit"]))
        psp1 = float(np.sum(terms["gain"]) / np.sum(terms["best"]))
        if split in recorded and not (math.isclose(p1, recorded[split]["P@1"], abs_tol=1e-6)
                                      and math.isclose(psp1, recorded[split]["PSP@1"], abs_tol=1e-6)):
            raise ValueError(f"{run}: per-query {split} P@1 {p1:.6f} / PSP@1 {psp1:.6f} differ from the run's "
                             f"{recorded[split]['P@1']:.6f} / {recorded[split]['PSP@1']:.6f}")
        out[split] = terms
    write_json(path, out)
    return out


def heldout_table(study: Study, runs: Path, *, wikispeedia_dir: str | os.PathLike | None = None) -> str:
    """A Markdown table: held-out and test P@1 / PSP@1 (mean ± sd over the finished seeds) per arm."""
    specs = dataset_specs(wikispeedia_dir)
    lines = []
    for name in study.datasets:
        data = prepare(specs[name], study.held_out)
        if data is None:
            continue
        lines += [f"{name}: {data.held.num_test} held-out training queries", "",
                  "| arm | seeds | held-out P@1 | held-out PSP@1 | test P@1 | test PSP@1 |", "|---|---|---|---|---|---|"]
        for arm in study.arms:
            held, test = [], []
            for seed in study.seeds:
                m = heldout_run(data, specs[name], arm, seed, runs)
                if m is not None:
                    held.append(m)
                    test.append(json.loads((run_dir(runs, name, arm, seed) / "result.json").read_text())["metrics"])
            if not held:
                continue
            cells = [_report().plus_minus(*mean_std(m[k] for m in ms)[:2])
                     for ms in (held, test) for k in ("P@1", "PSP@1")]
            lines.append(f"| {arm} | {len(held)} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def zero_shot(data: Prepared, spec: DatasetSpec, runs: Path) -> dict[str, Any]:
    """The floor every arm must clear: the budget's encoder untrained (no step taken; its precision
    as the budget sets it), on the test split and on the held-out training queries, exact search.
    Cached in RUNS/<dataset>/zeroshot.json; a cache made with another encoder or split is redone."""
    from ramen import precision
    from ramen.bench.common import machine_info
    from ramen.encoder import Encoder
    from ramen.model import Model

    cfg = TrainConfig(**spec.budget).validate()
    identity = _roundtrip({"dataset": data.name, "encoder": cfg.encoder, "pooling": cfg.pooling,
                           "max_length": cfg.max_length, "label_tower": cfg.label_tower, "cpu_bf16": cfg.cpu_bf16,
                           "data": data.info})
    path = Path(runs) / data.name / "zeroshot.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("identity") == identity:
            return old
    encoder = Encoder(cfg.encoder, pooling=cfg.pooling, max_length=cfg.max_length, label_tower=cfg.label_tower)
    encoder.bf16 = precision.bf16_enabled(encoder.device, gpu=cfg.bf16, cpu=cfg.cpu_bf16)
    model = Model(encoder)
    out: dict[str, Any] = {"kind": "ramen-zero-shot", "format": 1, "identity": identity, "source": data.source}
    for split, ds in (("test", data.train), ("heldout", data.held)):
        m = model.evaluate(ds, k=K, exact=True, deciles=split == "test", batch_size=cfg.encode_batch_size,
                           progress=False)
        out[split] = {"queries": ds.num_test, "metrics": _flat(m)}
        if "deciles" in m:
            out[split]["deciles"] = _deciles(m["deciles"])
    out.update(machine=machine_info(), ramen=ramen_version(), command=_command(),
               finished=datetime.datetime.now().isoformat(timespec="seconds"))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, out)
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
           "held": model.encode(held.test_texts, batch_size=bs, progress=False),
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
        return _search_metrics(labels, q, held.test_Y, ds.train_Y, inv_p, held.test_filter)["metrics"]

    if held.num_test == 0:
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
        held_links = sp.hstack([held.anchor_sets[n].test_X_A for n in names]).tocsr()
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
                if status == "busy":
                    _say(f"[accuracy] {where}: another process is training it: skipped")
                    continue
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
    from ramen.step import BatchEncoder, lr_lambda, make_optimizer, train_step
    from ramen.training_graphs import augment_ground_truth, build_graphs

    d = distributed.Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.seed)
    encoder = Encoder(cfg.encoder, pooling=cfg.pooling, max_length=cfg.max_length, seed=cfg.seed).to(d.device).train()
    train_Y = augment_ground_truth(dataset, cfg) if cfg.aug_gt else dataset.train_Y.tocsr()
    graphs = build_graphs(dataset, cfg, None, RunLog(None, echo=False))
    sampler = BatchSampler(train_Y, graphs, cfg.batch_size, seed=cfg.seed)
    tq = encoder.tokenize(dataset.train_texts, progress=False)
    tl = encoder.tokenize(dataset.label_texts, progress=False)
    ta = {n: encoder.tokenize(dataset.anchor_sets[n].texts, progress=False) for n in graphs}
    module = BatchEncoder(encoder).to(d.device)
    optimizer = make_optimizer(module, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(1000, cfg.warmup))
    weights = cfg.component_weights(list(graphs))
    # a few distinct batches, each stepped once untimed first: a long run sees its shapes again
    batches = [attach_tokens(sampler.batch(0, s), tq, tl, ta) for s in range(min(warm, sampler.steps_per_epoch()))]
    times, texts = [], []
    for i in range(len(batches) + steps):
        b = batches[i % len(batches)]
        t0 = time.perf_counter()
        train_step(module, encoder, optimizer, scheduler, b, d, cfg, weights)
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
             *_report()._table(["dataset", "arm", "s/step", "texts/step", "steps a run", "min a run",
                      f"min for {len(study.seeds)} seeds", "load"],
                     [[r["dataset"], r["arm"], f"{r['step_s']:.2f}", f"{r['texts_per_step']:.0f}", str(r["steps_per_run"]),
                       f"{r['run_min']:.1f}", f"{r['study_min']:.0f}", f"{r['load']:.1f}"] for r in rows]),
             "", f"Total: {total:.0f} min ({total / 60:.1f} h).", "", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write("\n".join(lines))


# ---------------------------------------------------------------- the report (benchmarks/accuracy_report.py)


def _report():
    return _sibling("accuracy_report", "accuracy_report.py")


def load_results(runs: str | os.PathLike) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(run results, OAK results) under `runs`, sorted by dataset, arm (ARMS order), seed."""
    return _report().load_results(runs, tuple(ARMS))


def write_report(runs: str | os.PathLike, out: str | os.PathLike, *, arms: Iterable[str] | None = None,
                 title: str | None = None, versus: Iterable[Sequence[str]] = ()) -> tuple[Path, list[Path]]:
    """The Markdown report `out` and its PNG plots beside it, from the result files under `runs`
    (only `arms`, in that order, where given; `versus`: (control, arm, ...) groups compared by seed
    to their control as well as to plain)."""
    report = _report()
    versus = [tuple(v) for v in versus]
    for group in versus:
        if len(group) < 2:
            raise ValueError(f"--versus takes a control arm and at least one arm to compare, got {' '.join(group)!r}")
        unknown = [a for a in group if a not in ARMS]
        if unknown:
            raise ValueError(f"--versus: unknown arm(s) {', '.join(unknown)}")
    return report.write_report(runs, out, arm_order=tuple(ARMS), arm_titles=ARM_TITLES,
                               arms=tuple(arms) if arms else None, title=title or report.DEFAULT_TITLE,
                               versus=versus)


def summary(results: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, tuple[float, float, int]]]]:
    """dataset -> arm -> metric -> (mean, std, seeds), metrics as fractions."""
    return _report().summary(results)


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (ddof 1; nan for one value) and count."""
    return _report().mean_std(values)


# ---------------------------------------------------------------- CLI


def _parse_setting(text: str) -> tuple[str, Any]:
    field, sep, value = text.partition("=")
    if not sep or not field:
        raise SystemExit(f"--set takes FIELD=VALUE, got {text!r}")
    try:
        return field, json.loads(value)
    except json.JSONDecodeError:
        return field, value  # a bare string such as an encoder name


def _finished_runs_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a command over finished runs: which datasets, arms and seeds, where."""
    parser.add_argument("--datasets", nargs="+", default=["wikispeedia"])
    parser.add_argument("--arms", nargs="+", choices=list(ARMS), required=True)
    parser.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS))
    parser.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--wikispeedia", type=Path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/accuracy.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train and evaluate every missing run (resumes interrupted ones)")
    run.add_argument("--quick", action="store_true", help="synthetic('tiny'), tiny encoder, 1 seed, 1 epoch, 1 thread (~15 s)")
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
    held = sub.add_parser("heldout", help="held-out-query metrics of finished runs beside their test metrics "
                                          "(choose a recipe without the test split)")
    _finished_runs_arguments(held)
    perq = sub.add_parser("perquery", help="per-query P@1 / PSP@1 terms of finished runs (perquery.json), for a "
                                           "bootstrap over queries in regime_report.py")
    _finished_runs_arguments(perq)
    perq.add_argument("--threads", type=int)
    zero = sub.add_parser("zeroshot", help="the untrained encoder's metrics (the floor) on test and held-out queries")
    zero.add_argument("--datasets", nargs="+", default=list(FULL_DATASETS))
    zero.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    zero.add_argument("--wikispeedia", type=Path)
    zero.add_argument("--threads", type=int)
    rep = sub.add_parser("report", help="write the Markdown report and plots from the result files")
    rep.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    rep.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "accuracy.md")
    rep.add_argument("--arms", nargs="+", choices=list(ARMS), help="only these arms, in this order (default: all)")
    rep.add_argument("--title", help="the report's heading")
    rep.add_argument("--versus", nargs="+", action="append", default=[], metavar="ARM",
                     help="CONTROL ARM...: also compare these arms to their matched control, paired by seed "
                          "(repeatable)")
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
    if args.command == "heldout":
        study = Study(datasets=tuple(args.datasets), arms=tuple(args.arms), seeds=tuple(args.seeds)).validate()
        print(heldout_table(study, args.runs, wikispeedia_dir=args.wikispeedia))
        return 0
    if args.command == "perquery":
        specs = dataset_specs(args.wikispeedia)
        for name in args.datasets:
            data = prepare(specs[name], HELD_OUT) if name in specs else None
            if data is None:
                _say(f"[accuracy] {name}: unknown or data not found: skipped")
                continue
            for arm in args.arms:
                for seed in args.seeds:
                    with torch_threads(args.threads):
                        got = per_query_run(data, specs[name], arm, seed, args.runs)
                    _say(f"[accuracy] {name}/{arm}/seed{seed}: " + ("per-query terms written" if got else
                                                                    "not finished (or no model): skipped"))
        return 0
    if args.command == "zeroshot":
        specs = dataset_specs(args.wikispeedia)
        unknown = [d for d in args.datasets if d not in specs]
        if unknown:
            raise ValueError(f"datasets: unknown {unknown}; known: {list(specs)}")
        for name in args.datasets:
            data = prepare(specs[name], HELD_OUT)
            if data is None:
                _say(f"[accuracy] {name}: data not found ({specs[name].source}): skipped")
                continue
            with torch_threads(args.threads):
                z = zero_shot(data, specs[name], args.runs)
            for split in ("test", "heldout"):
                m = z[split]["metrics"]
                print(f"{name} zero-shot, {split} ({z[split]['queries']} queries): P@1 {100 * m['P@1']:.2f}, "
                      f"P@5 {100 * m['P@5']:.2f}, PSP@1 {100 * m['PSP@1']:.2f}, PSP@5 {100 * m['PSP@5']:.2f}")
        return 0
    path, plots = write_report(args.runs, args.out, arms=args.arms, title=args.title, versus=args.versus)
    print(f"wrote {path} and {len(plots)} plots: {', '.join(p.name for p in plots)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as exc:  # bad settings, a run directory made otherwise, no results: no traceback
        sys.exit(f"error: {exc}")
