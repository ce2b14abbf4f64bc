"""A structural check of a usearch index file before usearch's loader, which trusts its bytes, reads it.

usearch 2.x writes (docs/format.md of usearch, and what it writes here): the vectors as a matrix
(rows and bytes per row as u32, then the rows); a 64-byte head ("usearch", the version as three
u16, the metric, scalar, key and slot kinds as one byte each, then the present count, the deleted
count and the dimensions as u64); the graph's own head (nodes, connectivity, level-0 connectivity,
top level and entry slot, u64 each); each node's level (i16); then the nodes in slot order, each
its key (u64) and level (i16), then per level 0..level a link count (u32) and a full row of u32
slots. A hostile file could make the loader or a later search read past its buffers; this checks
every size, count, level and link against the file and against the same index saved empty, so that
what reaches usearch is laid out as usearch writes it. O(file size), vectorised in chunks of nodes.
"""
from __future__ import annotations

from typing import Any

import numpy as np

_HEAD = 64  # usearch's file head
_SAME_HEAD = 17  # of it, what every file of one configuration shares: magic, version, kinds
_GRAPH_HEAD = 40
_NODE_HEAD = 10  # key u64, level i16
_FREE_KEY = np.uint64(2**64 - 1)  # the key of a removed node's slot
_CHUNK = 1 << 16  # nodes checked at a time (bounded memory at any size)


def check_usearch_file(data: Any, empty: Any, keys_below: int) -> None:
    """Raises ValueError naming what is wrong unless `data` (bytes or a buffer) is laid out as usearch writes an index
    configured as `empty` (that index saved with nothing in it), with every key a removed slot or
    below `keys_below`."""
    b = np.frombuffer(data, np.uint8)
    e = np.frombuffer(empty, np.uint8)
    _need(len(b) >= 8, "shorter than its matrix header")
    rows, width = (int(v) for v in _u(b, 0, "<u4", 2))
    _need(width == int(_u(e, 4, "<u4", 1)[0]), f"rows of {width} bytes, expected {int(_u(e, 4, '<u4', 1)[0])}")
    head = 8 + rows * width
    _need(head + _HEAD + _GRAPH_HEAD <= len(b), f"{rows} rows of {width} bytes leave no room for the graph")
    _need(bytes(b[head:head + _SAME_HEAD]) == bytes(e[8:8 + _SAME_HEAD]),
          "head differs from this usearch's for these settings (magic, version, metric or kinds)")
    present, _, dims = (int(v) for v in _u(b, head + _SAME_HEAD, "<u8", 3))
    _need(dims == int(_u(e, 8 + _SAME_HEAD + 16, "<u8", 1)[0]), f"{dims} dimensions, not the index's")
    core = head + _HEAD
    size, conn, conn0, top, entry = (int(v) for v in _u(b, core, "<u8", 5))
    ref = _u(e, 8 + _HEAD, "<u8", 3)
    _need((conn, conn0) == (int(ref[1]), int(ref[2])), f"connectivity {conn}/{conn0}, not the index's")
    _need(size == rows, f"{size} nodes but {rows} vector rows")
    _need(present <= size and size < 2**32, f"{present} present of {size} nodes")
    _need(top < 2**15 and (size == 0 or entry < size), f"top level {top} or entry slot {entry} out of range")
    levels_at = core + _GRAPH_HEAD
    _need(levels_at + 2 * size <= len(b), "truncated in the node levels")
    levels = _u(b, levels_at, "<i2", size).astype(np.int64)
    _need(size == 0 or (levels.min() >= 0 and levels.max() <= top and levels[entry] == top),
          "a node level outside [0, top level], or the entry below the top level")
    row0, row = 4 + 4 * conn0, 4 + 4 * conn  # a level's link count and slots
    sizes = _NODE_HEAD + row0 + levels * row
    starts = levels_at + 2 * size + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    _need(levels_at + 2 * size + int(sizes.sum()) == len(b), "nodes do not end where the file does")
    live = []
    for lo in range(0, size, _CHUNK):
        at, lv = starts[lo:lo + _CHUNK], levels[lo:lo + _CHUNK]
        keys = _gather(b, at, "<u8")
        _need(((keys == _FREE_KEY) | (keys < np.uint64(keys_below))).all(), "a node key that is no row of the index")
        _need((_gather(b, at + 8, "<i2") == lv).all(), "a node's own level disagrees with the level list")
        for level in range(int(lv.max()) + 1 if len(lv) else 0):
            has = lv >= level
            base = at[has] + _NODE_HEAD + (0 if level == 0 else row0 + (level - 1) * row)
            cap = conn0 if level == 0 else conn
            counts = _gather(b, base, "<u4").astype(np.int64)
            _need((counts <= cap).all(), f"a level-{level} link count above {cap}")
            links = _gather(b, (base[:, None] + 4 + 4 * np.arange(cap)).ravel(), "<u4").reshape(len(base), cap)
            used = links[np.arange(cap) < counts[:, None]].astype(np.int64)
            _need((used < size).all(), f"a level-{level} link past the {size} nodes")
            _need((levels[used] >= level).all(), f"a level-{level} link to a node below level {level}")
        live.append(keys[keys != _FREE_KEY])
    live_keys = np.concatenate(live) if live else np.zeros(0, np.uint64)
    _need(len(np.unique(live_keys)) == len(live_keys), "two nodes with one key")


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"not a usearch index as usearch writes it: {what}")


def _u(b: np.ndarray, at: int, dtype: str, count: int) -> np.ndarray:
    """`count` little-endian values of `dtype` at byte `at` (bounds checked)."""
    size = np.dtype(dtype).itemsize * count
    _need(0 <= at and at + size <= len(b), "truncated")
    return b[at:at + size].view(dtype)


def _gather(b: np.ndarray, at: np.ndarray, dtype: str) -> np.ndarray:
    """One little-endian `dtype` at each byte offset in `at` (unaligned; all checked in bounds)."""
    width = np.dtype(dtype).itemsize
    if len(at) == 0:
        return np.zeros(0, dtype)
    _need(int(at.min()) >= 0 and int(at.max()) + width <= len(b), "truncated")
    return b[at[:, None] + np.arange(width)].view(dtype).ravel()
