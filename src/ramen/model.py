"""A trained RAMEN model for inference: the encoder, the label texts and a label index. No graph."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from ramen.encoder import Encoder

INDEX_FILE = "labels.index"


class Model:
    """Encoder + labels: `predict(texts, k)` embeds the texts and searches the label index by cosine."""

    def __init__(self, encoder: Encoder, label_texts: list[str] | None = None):
        self.encoder = encoder
        self.label_texts = list(label_texts) if label_texts is not None else None
        self.index = None
        self.tuning: dict | None = None  # LabelIndex.tune's result when build_index tuned the index

    def encode(self, texts: list[str], *, batch_size: int = 256, tower: str = "query",
               progress: bool = True) -> np.ndarray:
        """Unit embeddings (N x D float32) of `texts`."""
        return self.encoder.encode(texts, batch_size, tower=tower, progress=progress)

    def build_index(self, label_texts: list[str] | None = None, *, exact: bool = False, batch_size: int = 256,
                    progress: bool = True, tune_texts: list[str] | None = None, target_recall: float = 0.95,
                    **index_options: Any):
        """Embeds the labels with the label tower and indexes them (ids are label positions).

        With `tune_texts` (queries like the served ones), the index's search width is tuned to
        reach `target_recall` recall@10 on them (`LabelIndex.tune`); the result is in `self.tuning`.
        """
        from ramen.index import LabelIndex

        if label_texts is not None:
            self.label_texts = list(label_texts)
        if not self.label_texts:
            raise ValueError("build_index needs label texts (pass label_texts)")
        vectors = self.encode(self.label_texts, batch_size=batch_size, tower="label", progress=progress)
        index = LabelIndex(self.encoder.dim, exact=exact, fingerprint=self.encoder.fingerprint(), **index_options)
        index.add(np.arange(len(vectors), dtype=np.int64), vectors)
        self.index = index
        self.tuning = None
        if tune_texts:
            queries = self.encode(list(tune_texts), batch_size=batch_size, progress=progress)
            self.tuning = index.tune(queries, target_recall=target_recall, k=min(10, len(vectors)))
        return index

    def predict(self, texts: list[str] | str, k: int = 10, *, batch_size: int = 256,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(label ids, cosine scores), each (N x k), best first; -1 pads where fewer labels exist."""
        if isinstance(texts, str):
            texts = [texts]
        if self.index is None:
            self.build_index(progress=progress)
        queries = self.encode(texts, batch_size=batch_size, progress=progress)
        return self.index.search(queries, k)

    def evaluate(self, dataset, *, k: int = 5, exact: bool = True, max_queries: int | None = None,
                 seed: int = 0, batch_size: int = 256, deciles: bool = False,
                 progress: bool = True) -> dict[str, Any]:
        """XC metrics of the test split: "P", "nDCG", "PSP", "PSnDCG", "R", each at 1..k (fractions).

        `exact` searches by matmul instead of the approximate index; `max_queries` evaluates a seeded
        subset; `deciles` adds "deciles": the label-frequency decile breakdown (head to tail).
        """
        from ramen import metrics

        rows = np.arange(len(dataset.test_texts))
        if max_queries is not None and max_queries < len(rows):
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_queries, replace=False))
        if self.index is None or exact != self.index.exact:
            self.build_index(dataset.label_texts, exact=exact, batch_size=batch_size, progress=progress)
        queries = self.encode([dataset.test_texts[i] for i in rows], batch_size=batch_size, progress=progress)
        filt = _filter_rows(dataset, rows)
        extra = 0 if filt is None else int(np.bincount(filt[:, 0], minlength=len(rows)).max())
        ids, _ = self.index.search(queries, k + extra)  # room for k predictions after filtering
        inv_p = metrics.inv_propensity(dataset.train_Y, dataset.A, dataset.B)
        true = dataset.test_Y[rows]
        result: dict[str, Any] = metrics.evaluate(ids, true, inv_propensity=inv_p, k=k, filter=filt)
        if deciles:
            result["deciles"] = metrics.decile_breakdown(ids, true, dataset.train_Y, inv_propensity=inv_p, k=k,
                                                         filter=filt)
        return result

    def save(self, path: str | os.PathLike) -> None:
        """Writes the encoder, label texts and the label index (when built) to directory `path`, atomically."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        self.encoder.save(tmp / "encoder")
        if self.label_texts is not None:
            (tmp / "labels.txt").write_text("".join(t.replace("\n", " ") + "\n" for t in self.label_texts))
        if self.index is not None:
            self.index.save(tmp / INDEX_FILE)
        (tmp / "model.json").write_text(json.dumps({"format": 1, "fingerprint": self.encoder.fingerprint(),
                                                    "num_labels": len(self.label_texts or [])}, indent=1))
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if path.exists():
            path.rename(old)
        tmp.rename(path)
        shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", view: bool = True) -> "Model":
        """Loads a saved Model; its label index (if saved) is memory-mapped with `view` and must
        have been made by this encoder."""
        from ramen.index import LabelIndex

        path = Path(path)
        if not (path / "model.json").exists():
            raise ValueError(f"{path} is not a saved ramen Model (no model.json)")
        encoder = Encoder.load(path / "encoder").to(device)
        labels_file = path / "labels.txt"
        labels = labels_file.read_text().split("\n")[:-1] if labels_file.exists() else None
        model = cls(encoder, labels)
        if (path / INDEX_FILE).exists():
            meta = json.loads((path / "model.json").read_text())
            model.index = LabelIndex.load(path / INDEX_FILE, view=view, expected_fingerprint=meta["fingerprint"])
        return model


def _filter_rows(dataset, rows: np.ndarray) -> np.ndarray | None:
    """The test filter restricted to `rows`, renumbered to positions in `rows`."""
    if dataset.test_filter is None or len(dataset.test_filter) == 0:
        return None
    pos = np.full(len(dataset.test_texts), -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    f = np.asarray(dataset.test_filter, dtype=np.int64)
    keep = pos[f[:, 0]] >= 0
    return np.stack([pos[f[keep, 0]], f[keep, 1]], axis=1)

