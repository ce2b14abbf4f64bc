"""Checkpoint files that load without unpickling and prove their contents.

A training checkpoint is a nested state (weights, optimizer moments, RNG states, graphs, batches,
settings). It is written as one safetensors file: every tensor and numpy array as a named tensor,
everything else as JSON in the header's metadata, with a SHA-256 of all of it beside them. Loading
parses the header (safetensors never unpickles), checks the digest, and rebuilds the state; a
file that fails any check is a ValueError naming it. Writes go to a temporary name, then rename.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "ramen-checkpoint"
VERSION = 1
_MAX_JSON_DEPTH = 64  # the state nests a few levels; a deeper header is hostile


def _flatten(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """A JSON-able tree of `value` with each tensor or array replaced by a reference into `tensors`."""
    if isinstance(value, torch.Tensor):
        name = str(len(tensors))
        tensors[name] = value.detach().cpu().contiguous().clone()
        return {"__tensor__": name}
    if isinstance(value, np.ndarray):
        name = str(len(tensors))
        tensors[name] = torch.from_numpy(np.ascontiguousarray(value).copy())
        return {"__ndarray__": name}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and not any(k.startswith("__") for k in value):
            return {k: _flatten(v, tensors) for k, v in value.items()}
        return {"__items__": [[_flatten(k, tensors), _flatten(v, tensors)] for k, v in value.items()]}
    if isinstance(value, tuple):
        return {"__tuple__": [_flatten(v, tensors) for v in value]}
    if isinstance(value, list):
        return [_flatten(v, tensors) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store a {type(value).__name__}")


def _unflatten(tree: Any, tensors: dict[str, torch.Tensor], path: Path, depth: int = 0) -> Any:
    if depth > _MAX_JSON_DEPTH:
        raise ValueError(f"{path}: the checkpoint's state nests deeper than {_MAX_JSON_DEPTH} levels")
    if isinstance(tree, list):
        return [_unflatten(v, tensors, path, depth + 1) for v in tree]
    if not isinstance(tree, dict):
        return tree
    if len(tree) == 1:
        (key, inner), = tree.items()
        if key in ("__tensor__", "__ndarray__"):
            if not isinstance(inner, str) or inner not in tensors:
                raise ValueError(f"{path}: the checkpoint refers to a tensor {inner!r} it does not hold")
            return tensors[inner] if key == "__tensor__" else tensors[inner].numpy()
        if key == "__tuple__" and isinstance(inner, list):
            return tuple(_unflatten(v, tensors, path, depth + 1) for v in inner)
        if key == "__items__" and isinstance(inner, list):
            if not all(isinstance(p, list) and len(p) == 2 for p in inner):
                raise ValueError(f"{path}: malformed checkpoint state (an item is not a key and a value)")
            return {_unflatten(k, tensors, path, depth + 1): _unflatten(v, tensors, path, depth + 1) for k, v in inner}
    return {k: _unflatten(v, tensors, path, depth + 1) for k, v in tree.items()}


def _digest(state_json: str, tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(state_json.encode())
    for name in sorted(tensors, key=int):
        t = tensors[name]
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Writes `state` (nested dicts, lists, tuples, tensors, numpy arrays, numbers, strings) to
    `path` atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    state_json = json.dumps(_flatten(state, tensors))
    metadata = {"format": FORMAT, "version": str(VERSION), "state": state_json,
                "sha256": _digest(state_json, tensors)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)


def stated_digest(path: str | os.PathLike) -> str:
    """The SHA-256 the checkpoint at `path` states in its header ("" without a readable one), read
    without loading its tensors: tells whether two processes see the same checkpoint."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            digest = (f.metadata() or {}).get("sha256", "")
    except Exception:  # noqa: BLE001 - a missing or unreadable file states nothing
        return ""
    return digest if isinstance(digest, str) else ""


def load(path: str | os.PathLike) -> dict[str, Any]:
    """The state `save` wrote to `path`; a ValueError naming the file if it is not such a file,
    is damaged, or its contents do not match their digest."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no checkpoint file there")
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK":
        raise ValueError(f"{path} is a pickled torch checkpoint from an older ramen; ramen no longer unpickles "
                         "checkpoints (a crafted one runs code): start the run again")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # noqa: BLE001 - safetensors raises its own error types on a bad file
        raise ValueError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if metadata.get("format") != FORMAT or metadata.get("version") != str(VERSION):
        raise ValueError(f"{path}: not a ramen checkpoint of version {VERSION} "
                         f"(format {metadata.get('format')!r}, version {metadata.get('version')!r})")
    state_json = metadata.get("state", "")
    if not all(name.isdigit() for name in tensors):
        raise ValueError(f"{path}: unexpected tensor names in the checkpoint")
    if _digest(state_json, tensors) != metadata.get("sha256"):
        raise ValueError(f"{path}: the checkpoint's contents do not match their SHA-256 (a damaged or altered file)")
    try:
        tree = json.loads(state_json)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"{path}: the checkpoint's state is not valid JSON ({exc})") from None
    state = _unflatten(tree, tensors, path)
    if not isinstance(state, dict):
        raise ValueError(f"{path}: the checkpoint's state is not a table")
    return state
