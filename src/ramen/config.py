"""TrainConfig: every training setting and paper ablation in one dataclass (CLI, files, checkpoints)."""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run. The default is the plain dual encoder (`graph=False`): no graph
    recipe has beaten it on held-out training queries (issue 28: Wikispeedia at 10 and 30 epochs, a
    second Wikispeedia split, FOLDOC, a dictionary-style dataset; benchmarks/results/regime.md).
    `graph=True` turns on the graph settings below, which are the best graph recipe measured
    ("light-graph": the paper's schedule with lambda 0.1 against all in-batch anchors).

    Paper ablations: `graph=False` (the plain dual encoder), `query_graph=False` (no R_x),
    `label_graph=False` (no R_z), `prune=False`, `aug_gt=True` (labels added through the graph by
    label propagation, no regulariser), `lambdas` (per anchor set weights).

    A setting only a switch reads (the graph's with `graph` and not `aug_gt`, the cluster schedule with
    `cluster_batching`: `idle_fields`) set with its switch off would do nothing: `train` refuses it.
    """

    # encoder
    encoder: str = "all-MiniLM-L6-v2"  # a built-in name or a local Hugging Face model directory
    pooling: str = "mean"  # "mean" or "cls"
    max_length: int = 32  # tokens per text (longer texts are truncated); at most the encoder's max_position_embeddings
    label_tower: bool = False  # a separate encoder tower for labels
    dropout: float | None = None  # override the model's dropout probabilities (None: keep)
    # optimisation
    epochs: int = 10  # passes over the training queries
    max_steps: int | None = None  # stop after this many steps in all (cutting an epoch short), then evaluate and save: a smoke test of a big run
    batch_size: int = 128  # queries per step
    lr: float = 5e-5  # AdamW peak learning rate
    weight_decay: float = 0.01  # AdamW weight decay (not on biases and norms)
    warmup: float = 0.05  # fraction of all steps with a linear learning-rate warm-up
    grad_clip: float = 1.0  # gradient norm clipping (0: off)
    margin: float = 0.3  # triplet margin gamma
    num_negatives: int | None = 10  # hardest in-batch negatives per positive (None: all)
    # the paper's 10 hardest collapsed the encoder on the built-in benchmark (benchmarks/results/recipe.md)
    reg_num_negatives: int | None = None  # hardest in-batch anchor negatives per positive in R_x, R_z (None: all)
    softmax_temperature: float | None = None  # NGAME's "aggressive" weighting of hinge terms
    # graph regularisation
    graph: bool = False  # graph regularisation (off: the plain dual encoder, the default; on: the settings below, light-graph)
    anchor_sets: list[str] | None = None  # which anchor sets to use (None: all of the dataset's)
    query_graph: bool = True  # R_x: queries vs anchors
    label_graph: bool = True  # R_z: labels vs anchors
    # lambda 1 (the paper's) lost 3 P@1 to the plain encoder on Wikispeedia; 0.1 was the best measured
    lambda_x: float = 0.1  # weight of R_x (queries vs anchors)
    lambda_z: float = 0.1  # weight of R_z (labels vs anchors)
    lambdas: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # name -> [lambda_x, lambda_z]
    densify: bool = True  # random walk with restart before training
    walk_length: int = 400  # hops per walk
    restart_prob: float = 0.8  # probability of returning to the start before a hop
    densify_top_k: int = 10  # most visited anchors added per row
    prune: bool = True  # prune edges with the encoder during training
    warmup_epochs: int = 5  # epochs on the unpruned graph before the first pruning
    prune_every: int = 5  # epochs between prunings
    prune_threshold: float = 0.0  # keep edges with cosine > threshold
    aug_gt: bool = False  # AugGT ablation: add labels through the graph, no regulariser
    aug_gt_top_k: int = 10  # labels added per training query by label propagation
    # levers measured to matter (issue 8, graph_levers.md); the others are retired (RETIRED below)
    reliance: str = "fixed"  # per-anchor-set weights: "fixed" or "bandit" (adapted from gradient agreement, as the paper's)
    reliance_lr: float = 0.01  # learning rate of the reliance bandit
    random_negatives: int = 0  # per query, labels drawn uniformly and added to the batch (the control of graph_negatives)
    reg_step: str = "joint"  # "joint": one AdamW step on task + regularisers; "separate": the task and the regularisers each normalised by their own Adam moments, the regularisers' step scaled by the largest lambda (the task's step is then plain's, whatever the graph's weight)
    # batching
    cluster_batching: bool = False  # batches of whole balanced clusters of query embeddings (NGAME)
    cluster_size: int = 8  # queries per cluster
    cluster_refresh: int = 5  # epochs between re-clusterings
    cluster_double_at: list[int] = dataclasses.field(default_factory=list)  # epochs where cluster_size doubles
    # evaluation, logging, checkpoints, hardware
    eval_every: int = 1  # epochs between evaluations on the test split (0: only at the end)
    eval_k: int = 5  # metrics at 1..eval_k, during training and in the final report (at most the number of labels)
    eval_max_queries: int | None = None  # evaluate on a seeded subset of test queries during training
    seed: int = 0  # every random choice derives from it
    device: str = "auto"  # "auto", "cpu", "cuda", "cuda:1", ...
    bf16: bool = True  # bf16 autocast on GPUs (training steps, encoding, pruning, evaluation)
    # on CPUs with native bf16 (AMX or AVX512-BF16; ignored elsewhere): Wikispeedia steps 1.5-1.7x
    # faster, P@1 / PSP@1 within seed noise of float32 (benchmarks/results/bf16.md)
    cpu_bf16: bool = True  # bf16 autocast on the CPU too, where it computes bf16 natively
    encode_batch_size: int = 256  # texts per batch when embedding without gradient
    gather_across_ranks: bool = True  # in-batch candidates from every rank (exactly the 1-process batch)

    def validate(self) -> "TrainConfig":
        """The config itself when every field has its type and range; else a ValueError naming the field.
        Numpy scalars become the Python values they stand for (the config is written as JSON)."""
        for f in dataclasses.fields(self):
            value = _plain(getattr(self, f.name))
            setattr(self, f.name, value)
            if not has_type(value, str(f.type)):
                raise ValueError(f"TrainConfig: {f.name} must be {f.type}, got {value!r} ({type(value).__name__})")
        finite = {name: math.isfinite(getattr(self, name)) for name in (
            "lr", "weight_decay", "warmup", "grad_clip", "margin", "lambda_x", "lambda_z", "restart_prob",
            "prune_threshold", "reliance_lr")}
        checks = [
            *((ok, f"{name} must be finite") for name, ok in finite.items()),
            (self.max_length >= 2, "max_length must be >= 2 (the encoder's special tokens take 2)"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (self.grad_clip >= 0, "grad_clip must be >= 0 (0: off)"),
            (self.lambda_x >= 0 and self.lambda_z >= 0, "lambda_x and lambda_z must be >= 0"),
            (self.softmax_temperature is None or (math.isfinite(self.softmax_temperature)
                                                 and self.softmax_temperature > 0),
             "softmax_temperature must be > 0 and finite, or None"),
            (self.densify_top_k >= 1, "densify_top_k must be >= 1"),
            (self.aug_gt_top_k >= 1, "aug_gt_top_k must be >= 1"),
            (-1 <= self.prune_threshold <= 1, "prune_threshold must be a cosine in [-1, 1]"),
            (all(e >= 0 for e in self.cluster_double_at), "cluster_double_at must hold epochs >= 0"),
            (self.eval_k >= 1, "eval_k must be >= 1"),
            (self.eval_max_queries is None or self.eval_max_queries >= 1, "eval_max_queries must be >= 1 or None"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.encode_batch_size >= 1, "encode_batch_size must be >= 1"),
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.max_steps is None or (_count(self.max_steps) and self.max_steps >= 1),
             "max_steps must be an integer >= 1 or None"),
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (self.lr > 0, "lr must be > 0"),
            (0 <= self.warmup < 1, "warmup must be in [0, 1)"),
            (self.margin >= 0, "margin must be >= 0"),
            (self.num_negatives is None or self.num_negatives >= 1, "num_negatives must be >= 1 or None"),
            (self.reg_num_negatives is None or self.reg_num_negatives >= 1, "reg_num_negatives must be >= 1 or None"),
            (self.pooling in ("mean", "cls"), "pooling must be 'mean' or 'cls'"),
            (0 < self.restart_prob <= 1, "restart_prob must be in (0, 1]"),
            (self.walk_length >= 1, "walk_length must be >= 1"),
            (self.prune_every >= 1, "prune_every must be >= 1"),
            (self.warmup_epochs >= 0, "warmup_epochs must be >= 0"),
            (self.cluster_size >= 1 and (self.cluster_size <= self.batch_size or not self.cluster_batching),
             "cluster_size must be in [1, batch_size]"),
            (self.cluster_refresh >= 1, "cluster_refresh must be >= 1"),
            (self.eval_every >= 0, "eval_every must be >= 0"),
            (self.dropout is None or 0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.reliance in ("fixed", "bandit"), "reliance must be 'fixed' or 'bandit'"),
            (self.reliance_lr > 0, "reliance_lr must be > 0"),
            (self.reg_step in ("joint", "separate"), "reg_step must be 'joint' or 'separate'"),
            (_count(self.random_negatives), "random_negatives must be an integer >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"TrainConfig: {message}")
        for name, pair in self.lambdas.items():
            if not (isinstance(name, str) and isinstance(pair, (list, tuple)) and len(pair) == 2
                    and all(has_type(w, "float") and math.isfinite(w) and w >= 0 for w in pair)):
                raise ValueError(f"TrainConfig.lambdas[{name!r}] must be [lambda_x, lambda_z], two finite "
                                 f"weights >= 0, got {pair!r}")
        return self

    def lambdas_for(self, name: str) -> tuple[float, float]:
        """(lambda_x, lambda_z) of anchor set `name`, zero for a disabled side."""
        lx, lz = self.lambdas.get(name, (self.lambda_x, self.lambda_z))
        return (float(lx) if self.query_graph else 0.0, float(lz) if self.label_graph else 0.0)

    def component_weights(self, anchor_sets: list[str]) -> dict[str, float]:
        """Base lambda of each regulariser component: {"Rx/<set>": lambda_x, "Rz/<set>": lambda_z}."""
        weights = {}
        for name in anchor_sets:
            weights[f"Rx/{name}"], weights[f"Rz/{name}"] = self.lambdas_for(name)
        return weights

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def idle_fields(self) -> dict[str, str]:
        """The fields this config leaves unread, each with what would read it ('graph=True', ...): the
        graph's settings without `graph` or under `aug_gt` (which trains no regulariser), the cluster
        schedule without `cluster_batching`, the anchor sets without either graph use."""
        idle = {name: f"{switch}=True" for switch, names in IDLE_WITHOUT.items() if not getattr(self, switch)
                for name in names}
        if self.aug_gt:  # AugGT adds labels through the graph instead of regularising with it
            needs = "aug_gt=False" if self.graph else "graph=True and aug_gt=False"
            idle.update({"graph": "aug_gt=False", **{name: needs for name in GRAPH_ONLY}})
        if not (self.graph or self.aug_gt):
            idle["anchor_sets"] = "graph=True or aug_gt=True"
        return idle

    def idle_settings(self) -> list[str]:
        """'name=value' for each idle field (`idle_fields`) set away from its default: a setting that
        would do nothing, most likely meant with its switch on (a graph weight of 0 is the graph off)."""
        default = TrainConfig()
        idle = []
        for name in self.idle_fields():
            value = getattr(self, name)
            zero_weight = (name in ("lambda_x", "lambda_z") and value == 0) or (
                name == "lambdas" and all(w == 0 for pair in value.values() for w in pair))
            if value != getattr(default, name) and not zero_weight:
                idle.append(f"{name}={value!r}")
        return idle

    def idle_refusal(self, settings: list[str], spell: Callable[[str], str] = str, whose: str = "this config") -> str:
        """'<settings> only apply with <what reads them>, so <whose> would ignore them': the one wording of
        refusing idle settings, for the API and (with `spell` naming flags) the CLI."""
        fields = self.idle_fields()
        needs = sorted({spell(fields[s.split("=")[0].lstrip("-").replace("-", "_")]) for s in settings})
        one = len(settings) == 1
        return (f"{', '.join(settings)} only {'applies' if one else 'apply'} with {' / '.join(needs)}, so {whose} "
                f"would ignore {'it' if one else 'them'}")

    def without_idle(self) -> "TrainConfig":
        """This config with its idle fields (`idle_fields`) at their defaults: the same training."""
        default = TrainConfig()
        return dataclasses.replace(self, **{name: getattr(default, name) for name in self.idle_fields()})

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each field's trailing comment in this file: the CLI's help text."""
        import inspect
        import re

        found = re.findall(r"^    (\w+): [^#\n]*#\s*(.+)$", inspect.getsource(cls), flags=re.M)
        return dict(found)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = without_retired(d)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields: {', '.join(unknown)}")
        return cls(**d).validate()

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        """Reads a .toml or .json file of TrainConfig fields (the others keep their defaults)."""
        fields = cls.read_fields(path)
        try:
            return cls(**fields).validate()
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{path}: {exc}") from exc

    @classmethod
    def read_fields(cls, path: str | os.PathLike) -> dict[str, Any]:
        """The fields a .toml or .json config file sets, as written (names checked, values not)."""
        path = Path(path)
        text = path.read_text()
        if path.suffix == ".json":
            try:
                fields = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from exc
        else:
            try:
                import tomllib
            except ImportError as exc:  # Python 3.10
                raise ValueError(f"{path}: TOML configs need Python >= 3.11; use a .json config") from exc
            try:
                fields = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: {exc}") from exc
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: expected a table of TrainConfig fields, got {type(fields).__name__}")
        fields = without_retired(fields, f"{path}: ")
        unknown = sorted(set(fields) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"{path}: unknown TrainConfig fields: {', '.join(unknown)}")
        return fields


# settings only a run with the graph regulariser reads (graph=True): given to a plain run they do nothing
GRAPH_ONLY = ("query_graph", "label_graph", "lambda_x", "lambda_z", "lambdas", "densify", "walk_length", "restart_prob",
              "densify_top_k", "prune", "warmup_epochs", "prune_every", "prune_threshold", "reliance", "reliance_lr",
              "reg_num_negatives", "reg_step")
# switch -> the settings only a run with that switch on reads (TrainConfig.idle_fields)
IDLE_WITHOUT: dict[str, tuple[str, ...]] = {
    "graph": GRAPH_ONLY,
    "cluster_batching": ("cluster_size", "cluster_refresh", "cluster_double_at"),
    "aug_gt": ("aug_gt_top_k",),
}


# Levers the study measured to do nothing (benchmarks/results/graph_levers.md: each within seed noise
# of the recipe it was added to, or below plain), retired from TrainConfig with their defaults: a
# config that sets one to its default still loads (old run.json files list every field), any other
# value stops with the commit that can still run it.
RETIRED_AT = "c8bd786"
RETIRED: dict[str, Any] = {
    "positives_all": False, "anchor_bank": False, "densify_sets": None, "prune_quantile": None, "soft_prune": False,
    "reg_head": False, "reg_head_lr": None, "regulariser": "triplet", "anchor_identity": "off",
    "lambda_warmup": 0.0, "lambda_decay_from": 1.0, "graph_negatives": 0, "anchor_degree_power": 0.0,
}
RETIRED_VALUES = {"reliance": ("schedule",)}  # values retired from fields that stay


def without_retired(fields: dict[str, Any], where: str = "") -> dict[str, Any]:
    """`fields` without the retired ones at their defaults; a retired lever that is set raises
    ValueError naming it and the commit that can run it (`where`: a file or "" for flags)."""
    for name, value in fields.items():
        if (name in RETIRED and value != RETIRED[name]) or value in RETIRED_VALUES.get(name, ()):
            raise ValueError(f"{where}{name}={value!r}: this lever was retired (it measured no gain, "
                             "benchmarks/results/graph_levers.md); ramen at commit "
                             f"{RETIRED_AT} still runs it (git checkout {RETIRED_AT} && pip install .)")
    return {k: v for k, v in fields.items() if k not in RETIRED}


def _plain(value: Any) -> Any:
    """`value` with numpy scalars (also inside lists, tuples and dicts) as Python ones."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def has_type(value: Any, annotation: str) -> bool:
    """Whether `value` fits a field's annotation ("int", "float | None", "list[str] | None", ...): a
    bool is not a number, an int is a float, numpy scalars count as the Python kind they stand for."""
    for kind in (k.strip() for k in annotation.split("|")):
        if kind == "None" and value is None:
            return True
        if kind == "bool" and isinstance(value, (bool, np.bool_)):
            return True
        if kind in ("int", "float") and not isinstance(value, (bool, np.bool_)) and isinstance(
                value, numbers.Integral if kind == "int" else numbers.Real):
            return True
        if kind == "str" and isinstance(value, str):
            return True
        if kind.startswith("list[") and isinstance(value, (list, tuple)):
            return all(has_type(v, kind[5:-1]) for v in value)
        if kind.startswith("dict[") and isinstance(value, dict):
            return True  # lambdas: checked entry by entry in validate
    return False


def _count(value: Any) -> bool:
    """Whether `value` is a non-negative integer (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
