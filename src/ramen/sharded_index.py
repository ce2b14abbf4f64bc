"""Several label indexes, one per shard of the labels, searched as one: a catalogue across machines."""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from typing import Any

import numpy as np

from ramen.index import (LabelIndex, _check_k, _check_results_fit, _checked_labels, _checked_removal, _graph_threads, _threads,
                         normalize, top_k)


class ShardedLabelIndex:
    """Several label indexes (one per label shard, ids global) searched together: merged top-k.

    Build it from LabelIndex objects or saved files (loaded with `view` and checked against
    `expected_fingerprint`). Shards must share the dimension and fingerprint and hold disjoint ids.
    """

    def __init__(self, shards: Sequence[LabelIndex | str | os.PathLike], *, view: bool = False,
                 expected_fingerprint: str | None = None) -> None:
        if isinstance(shards, (str, os.PathLike, LabelIndex)) or len(shards) == 0:
            raise ValueError("shards must be a non-empty list of LabelIndex objects or index paths")
        loaded = [s if isinstance(s, LabelIndex) else LabelIndex.load(s, view=view, expected_fingerprint=expected_fingerprint)
                  for s in shards]
        dims = {s.dim for s in loaded}
        prints = {s.fingerprint for s in loaded}
        if len(dims) > 1:
            raise ValueError(f"shards have different dimensions: {sorted(dims)}")
        if len(prints) > 1:
            raise ValueError(f"shards were made by different models (fingerprints {sorted(prints)})")
        if expected_fingerprint is not None and prints != {expected_fingerprint}:
            raise ValueError(f"shards were made by model {prints.pop()!r}, not the expected {expected_fingerprint!r}")
        if len({id(s) for s in loaded}) != len(loaded):
            raise ValueError("shards holds one LabelIndex twice; each shard must be its own index")
        all_ids = np.concatenate([s._keys for s in loaded])
        if len(np.unique(all_ids)) != len(all_ids):
            raise ValueError("shards hold overlapping label ids; each label must live in one shard")
        self.shards = loaded
        self.dim = loaded[0].dim
        self.fingerprint = loaded[0].fingerprint

    def __len__(self) -> int:
        return sum(len(s) for s in self.shards)

    def __copy__(self) -> "ShardedLabelIndex":
        """copy.copy copies the shards too (`LabelIndex.__copy__`): a copy sharing them would change
        the original with its first add or remove."""
        return self.__deepcopy__({})

    def __deepcopy__(self, memo: dict[int, Any]) -> "ShardedLabelIndex":
        twin = ShardedLabelIndex.__new__(ShardedLabelIndex)
        memo[id(self)] = twin
        twin.shards = [copy.deepcopy(s, memo) for s in self.shards]
        twin.dim, twin.fingerprint = self.dim, self.fingerprint
        return twin

    def __repr__(self) -> str:
        return f"ShardedLabelIndex(shards={len(self.shards)}, dim={self.dim}, labels={len(self)})"

    def search(self, queries: Any, k: int = 10, *, threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-`k` over all shards, as `LabelIndex.search` (each shard searched, results merged by
        score), with every shard's read lock held: a search sees a change to several shards (a label
        moved between them) before or after, never half made."""
        k = _check_k(k)
        single = np.ndim(queries) == 1
        threads = _threads(threads)
        q = normalize(queries, self.dim, "queries")
        _check_results_fit(len(q), k, len(self), copies=2 * len(self.shards) + 1)  # each shard's, then merged
        with ExitStack() as held:
            for s in self.shards:
                held.enter_context(s._lock.read())
            parts = [s._search(q, k, threads) for s in self.shards]
        ids, scores = top_k(np.concatenate([p[1] for p in parts], axis=1),
                            np.concatenate([p[0] for p in parts], axis=1), k)
        return (ids[0], scores[0]) if single else (ids, scores)

    def contains(self, ids: Any) -> np.ndarray:
        """Boolean mask: which of `ids` are in some shard."""
        return np.logical_or.reduce([s.contains(ids) for s in self.shards])

    def add(self, ids: Any, vectors: Any, *, shard: int = -1, replace: bool = False,
            threads: int | None = None) -> None:
        """Adds labels to shard number `shard` (default the last). An id held by another shard
        raises unless `replace=True`, which moves it: searches see it in one shard or the other."""
        target = self.shards[self._check_shard(shard)]
        target._writable("add labels")
        a, x = _checked_labels(ids, vectors, self.dim)
        if len(a) == 0:
            return
        with self._all_writers():
            steps = []
            for s in self.shards:
                if s is not target and s.contains(a).any():
                    if not replace:
                        elsewhere = s.contains(a)
                        raise ValueError(f"{int(elsewhere.sum())} ids are already in another shard, e.g. "
                                         f"{int(a[elsewhere][0])}; pass replace=True to move them")
                    s._writable("move labels out of it")
                    steps.append(s._prepare_remove(a, missing_ok=True)[1])
            steps.append(target._prepare_add(a, x, replace, _graph_threads(threads)))
            self._publish(steps)

    def _check_shard(self, shard: Any) -> int:
        """`shard` as an index into the shards (negative counts from the end), else a ValueError naming it."""
        n = len(self.shards)
        if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)) or not -n <= shard < n:
            raise ValueError(f"shard must be an integer in [{-n}, {n}) for {n} shards, got {shard!r}")
        return int(shard)

    def remove(self, ids: Any, *, missing_ok: bool = False) -> int:
        """Removes labels from whichever shards hold them, at once; returns how many were removed."""
        a = _checked_removal(ids)
        with self._all_writers():
            found = self.contains(a) if len(a) else np.zeros(0, bool)
            if not found.all() and not missing_ok:
                raise ValueError(f"{int((~found).sum())} ids are not in any shard, e.g. {int(a[~found][0])}")
            counts, steps = [], []
            for s in self.shards:
                if s.contains(a).any():
                    s._writable("remove labels")
                    count, step = s._prepare_remove(a, missing_ok=True)
                    counts.append(count)
                    steps.append(step)
            self._publish(steps)
        return sum(counts)

    def _all_writers(self) -> ExitStack:
        """Every shard's writer lock, taken in shard order (as `_publish` takes the write locks)."""
        held = ExitStack()
        for s in self.shards:
            held.enter_context(s._writer)
        return held

    def _publish(self, steps: list[Callable[[], None]]) -> None:
        """Runs the last steps of a change with every shard's write lock held."""
        with ExitStack() as held:
            for s in self.shards:
                held.enter_context(s._lock.write())
            for step in steps:
                step()

