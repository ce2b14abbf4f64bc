"""ramen: graph-regularised dual encoders for extreme classification.

Train a text encoder whose training is regularised by metadata graphs (RAMEN, Mittal et al.,
WWW 2025) and serve it with an encoder plus a nearest-neighbour label index. Heavy submodules
(torch, transformers) load on first use, so `import ramen` stays fast.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> submodule that defines it
_LAZY = {
    "Dataset": "ramen.datasets",
    "AnchorSet": "ramen.datasets",
    "load_xc": "ramen.datasets",
    "save_xc": "ramen.datasets",
    "read_sparse": "ramen.datasets",
    "write_sparse": "ramen.datasets",
    "describe": "ramen.datasets",
    "wikispeedia": "ramen.datasets",
    "foldoc": "ramen.datasets",
    "evaluate": "ramen.metrics",
    "inv_propensity": "ramen.metrics",
    "decile_breakdown": "ramen.metrics",
    "format_table": "ramen.metrics",
    "synthetic": "ramen.datasets",
    "TrainConfig": "ramen.config",
    "recipe": "ramen.recipes",
    "RECIPES": "ramen.recipes",
    "train": "ramen.train",
    "select_graph_weight": "ramen.selection",
    "Selection": "ramen.selection",
    "hold_out": "ramen.datasets.held_out",
    "Model": "ramen.model",
    "Encoder": "ramen.encoder",
    "triplet_loss": "ramen.ops",
    "LabelIndex": "ramen.index",
    "ShardedLabelIndex": "ramen.sharded_index",
    "random_walk_with_restart": "ramen.graph",
    "bipartite_walk": "ramen.graph",
    "densify": "ramen.graph",
    "prune_edges": "ramen.graph",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ramen' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
