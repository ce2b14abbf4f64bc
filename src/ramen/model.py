"""A trained RAMEN model for inference: the encoder, the label texts and a label index. No graph."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ramen.encoder import Encoder
from ramen.files import replaced_directory
from ramen.tokens import TokenCache

if TYPE_CHECKING:
    import torch

    from ramen.datasets import Dataset
    from ramen.index import LabelIndex

INDEX_FILE = "labels.index"


class Model:
    """Encoder + labels: `predict(texts, k)` embeds the texts and searches the label index by cosine."""

    def __init__(self, encoder: Encoder, label_texts: list[str] | None = None):
        self.encoder = encoder
        self.label_texts = list(label_texts) if label_texts is not None else None
        self.index = None
        self.tuning: dict | None = None  # LabelIndex.tune's result when build_index tuned the index

    def encode(self, texts: list[str] | TokenCache, *, batch_size: int = 256, tower: str = "query",
               progress: bool = True) -> np.ndarray:
        """Unit embeddings (N x D float32) of `texts` (or of their token cache)."""
        return self.encoder.encode(texts, batch_size, tower=tower, progress=progress)

    def build_index(self, label_texts: list[str] | None = None, *, exact: bool = False, batch_size: int = 256,
                    progress: bool = True, tune_texts: list[str] | None = None, target_recall: float = 0.95,
                    label_tokens: TokenCache | None = None, label_vectors: np.ndarray | None = None,
                    **index_options: Any) -> LabelIndex:
        """Embeds the labels with the label tower and indexes them (ids are label positions).

        With `tune_texts` (queries like the served ones), the index's search width is tuned to
        reach `target_recall` recall@10 on them (`LabelIndex.tune`); the result is in `self.tuning`.
        `label_tokens` (the labels' token cache) skips tokenising them again; `label_vectors` (their
        embeddings by this encoder, as `label_vectors()` gives) skips embedding them again.
        """
        from ramen.index import LabelIndex

        if label_texts is not None:
            self.label_texts = list(label_texts)
        if not self.label_texts:
            raise ValueError("build_index needs label texts (pass label_texts)")
        vectors = self.label_vectors(label_tokens, batch_size=batch_size, progress=progress) \
            if label_vectors is None else label_vectors
        index = LabelIndex(self.encoder.dim, exact=exact, fingerprint=self.encoder.fingerprint(), **index_options)
        index.add(np.arange(len(vectors), dtype=np.int64), vectors)
        self.index = index
        self.tuning = None
        if tune_texts:
            queries = self.encode(list(tune_texts), batch_size=batch_size, progress=progress)
            self.tuning = index.tune(queries, target_recall=target_recall, k=min(10, len(vectors)))
        return index

    def label_vectors(self, label_tokens: TokenCache | None = None, *, batch_size: int = 256,
                      progress: bool = True) -> np.ndarray:
        """The labels' unit embeddings (L x D float32) by the label tower (from `label_tokens` when given)."""
        return self.encode(self.label_texts if label_tokens is None else label_tokens, batch_size=batch_size,
                           tower="label", progress=progress)

    def predict(self, texts: list[str] | str, k: int = 10, *, batch_size: int = 256,
                progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(label ids, cosine scores), each (N x k), best first; -1 (score -inf) pads where fewer
        labels exist, and fills the row of a blank text (empty, whitespace, or only characters the
        tokenizer drops: `Encoder.blank`), whose embedding would rank labels for no reason. Short
        texts are queries like any other."""
        if isinstance(texts, str):
            texts = [texts]
        if self.index is None:
            self.build_index(progress=progress)
        cache = self.encoder.tokenize(texts, progress=False)
        ids, scores = self.index.search(self.encode(cache, batch_size=batch_size, progress=progress), k)
        blank = self.encoder.blank(cache)
        ids[blank], scores[blank] = -1, -np.inf
        return ids, scores

    def evaluate(self, dataset: Dataset, *, k: int = 5, exact: bool = True, max_queries: int | None = None,
                 seed: int = 0, batch_size: int = 256, deciles: bool = False, progress: bool = True,
                 query_tokens: TokenCache | None = None, label_tokens: TokenCache | None = None,
                 label_vectors: np.ndarray | None = None) -> dict[str, Any]:
        """XC metrics of the test split: "P", "nDCG", "PSP", "PSnDCG", "R", each at 1..k (fractions; a k
        above the number of labels is taken as that number: there are no more predictions to score).

        `exact` searches by matmul instead of the approximate index: on the encoder's device where
        that is an accelerator (a blocked top-k there), else by the index's blocked matmul on the
        host; `max_queries` evaluates a seeded subset; `deciles` adds "deciles": the label-frequency
        decile breakdown (head to tail). `query_tokens` (the test texts' token cache),
        `label_tokens` and `label_vectors` skip tokenising or embedding again what a caller has.
        """
        from ramen import metrics

        from ramen.datasets import Dataset

        if not isinstance(dataset, Dataset):
            raise TypeError(f"evaluate: dataset must be a ramen Dataset (ramen.load_xc(path) reads one), "
                            f"got {type(dataset).__name__}")
        rows = np.arange(len(dataset.test_texts))
        if len(rows) == 0:
            raise ValueError("evaluate: the dataset has no test queries")
        k = min(k, len(dataset.label_texts))
        if max_queries is not None and not (isinstance(max_queries, (int, np.integer)) and max_queries >= 1):
            raise ValueError(f"evaluate: max_queries must be an integer >= 1 or None, got {max_queries!r}")
        if max_queries is not None and max_queries < len(rows):
            rows = np.sort(np.random.default_rng(seed).choice(rows, size=max_queries, replace=False))
        texts = [dataset.test_texts[i] for i in rows] if query_tokens is None else query_tokens.subset(rows)
        queries = self.encode(texts, batch_size=batch_size, progress=progress)
        filt = _filter_rows(dataset, rows)
        extra = 0 if filt is None else int(np.bincount(filt[:, 0], minlength=len(rows)).max())
        wanted = k + extra  # room for k predictions after filtering
        device = self.encoder.device
        other_labels = list(dataset.label_texts) != list(self.label_texts or [])
        if exact and _accelerator(device):
            if other_labels:
                self.label_texts, self.index = list(dataset.label_texts), None  # an index of other labels goes
            vectors = self.label_vectors(label_tokens, batch_size=batch_size, progress=progress) \
                if label_vectors is None else label_vectors
            ids = device_top_k(queries, vectors, wanted, device)
        else:
            if self.index is None or exact != self.index.exact or other_labels:
                self.build_index(dataset.label_texts, exact=exact, batch_size=batch_size, progress=progress,
                                 label_tokens=label_tokens, label_vectors=label_vectors)
            ids, _ = self.index.search(queries, wanted)
        inv_p = metrics.inv_propensity(dataset.train_Y, dataset.A, dataset.B)
        true = dataset.test_Y[rows]
        result: dict[str, Any] = metrics.evaluate(ids, true, inv_propensity=inv_p, k=k, filter=filt)
        if deciles:
            result["deciles"] = metrics.decile_breakdown(ids, true, dataset.train_Y, inv_propensity=inv_p, k=k,
                                                         filter=filt)
        return result

    def export(self, path: str | os.PathLike, *, tower: str = "query") -> Path:
        """The encoder's `tower` as a sentence-transformers model directory at `path` (see
        `Encoder.export`): serve it with sentence-transformers; the label index stays ramen's."""
        return self.encoder.export(path, tower=tower)

    def save(self, path: str | os.PathLike) -> None:
        """Writes the encoder, label texts and the label index (when built) to directory `path`, atomically."""
        with replaced_directory(path, "model.json") as tmp:
            self.encoder.save(tmp / "encoder")
            if self.label_texts is not None:
                _write_labels(tmp, self.label_texts)
            if self.index is not None:
                self.index.save(tmp / INDEX_FILE)
            (tmp / "model.json").write_text(json.dumps({"format": 1, "fingerprint": self.encoder.fingerprint(),
                                                        "num_labels": len(self.label_texts or [])}, indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "cpu", view: bool = True) -> "Model":
        """Loads a saved Model; its encoder's weights must match the fingerprint model.json records
        (a damaged or replaced file is refused, not served), and its label index (if saved) is
        memory-mapped with `view` and must have been made by that encoder for exactly its labels."""
        from ramen.index import LabelIndex

        path = Path(path)
        meta = _read_meta(path)
        encoder = Encoder.load(path / "encoder")
        fingerprint = _checked_fingerprint(path, meta["fingerprint"], encoder)  # on the host, before `.to(device)`
        model = cls(encoder.to(device), _read_labels(path, meta.get("num_labels")))
        if os.path.lexists(path / INDEX_FILE):  # a directory or a broken link there is an error, not no index
            index = LabelIndex.load(path / INDEX_FILE, view=view, expected_fingerprint=fingerprint)
            labels = model.label_texts or []
            if not np.array_equal(index.ids, np.arange(len(labels))):
                raise ValueError(f"{path / INDEX_FILE}: holds {len(index):,} label ids, not the model's "
                                 f"{len(labels):,} labels 0..{len(labels) - 1}: rebuild the index with this model")
            model.index = index
        return model


def _read_meta(path: Path) -> dict[str, Any]:
    """model.json of the saved Model at `path`: a JSON object holding the encoder's fingerprint."""
    if not (path / "model.json").exists():
        raise ValueError(f"{path} is not a saved ramen Model (no model.json)")
    try:
        meta = json.loads((path / "model.json").read_bytes())
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path / 'model.json'}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("fingerprint"), str):
        raise ValueError(f"{path / 'model.json'}: expected a JSON object with the encoder's 'fingerprint' (a string)")
    return meta


def _checked_fingerprint(path: Path, recorded: str, encoder: Encoder) -> str:
    """The loaded encoder's fingerprint, which must be the one model.json `recorded`: weights changed
    on disk since the save would otherwise be served, or blamed on the label index. Costs one
    SHA-256 pass over the weights, which the label index's check needs anyway."""
    fingerprint = encoder.fingerprint()
    if fingerprint != recorded:
        weights = ", ".join(str(f.relative_to(path / "encoder"))
                            for f in sorted((path / "encoder").glob("*/*.safetensors")))
        raise ValueError(f"{path / 'encoder'}: its weights ({weights or 'no safetensors file'}) do not match the "
                         f"fingerprint model.json records ({recorded!r}, loaded {fingerprint!r}): the file is "
                         "damaged or was replaced")
    return fingerprint


LABELS_TXT, LABELS_JSON = "labels.txt", "labels.json"


def _write_labels(directory: Path, labels: list[str]) -> None:
    """The label texts as labels.txt, UTF-8, each followed by a line feed, so that _read_labels gives
    them back exactly (a CR, a byte-order mark, control characters included); as labels.json (a
    JSON list) when a label itself holds a line feed, which labels.txt cannot."""
    if any("\n" in t for t in labels):
        (directory / LABELS_JSON).write_text(json.dumps(labels), encoding="utf-8")
    else:
        (directory / LABELS_TXT).write_bytes("".join(t + "\n" for t in labels).encode("utf-8"))


def _read_labels(directory: Path, expected: object) -> list[str] | None:
    """The label texts saved by _write_labels (None when there are none); ValueError naming the
    file when it is not UTF-8 or holds another count than model.json's `expected` (when an int)."""
    if (directory / LABELS_JSON).exists():
        path = directory / LABELS_JSON
        try:
            labels = json.loads(path.read_bytes())
        except (ValueError, RecursionError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(labels, list) or not all(isinstance(t, str) for t in labels):
            raise ValueError(f"{path}: expected a JSON list of label texts")
    elif (directory / LABELS_TXT).exists():
        path = directory / LABELS_TXT
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")  # not utf-8-sig: a first label may start with a byte-order mark
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            raise ValueError(f"{path}: line {line}: not valid UTF-8") from None
        labels = text.split("\n")  # only line feeds end a label: not CR, not str.splitlines' others
        labels = labels[:-1] if text.endswith("\n") or not text else labels
    else:
        return None
    if isinstance(expected, int) and not isinstance(expected, bool) and len(labels) != expected:
        raise ValueError(f"{path}: {len(labels)} label texts but model.json says num_labels = {expected}")
    return labels


def _accelerator(device) -> bool:
    """Whether exact search runs on `device` itself rather than on the host."""
    return device.type != "cpu"


def device_top_k(queries: np.ndarray, vectors: np.ndarray, k: int, device: torch.device | str,
                 block_bytes: int = 1 << 28) -> np.ndarray:
    """(n, k) int64 ids of the top-k cosine rows of `vectors` per query, by blocked matmul and top-k
    on `device` (both arrays cross once); -1 pads where there are fewer than k rows. Cost: n x L x D
    multiply-adds and n x L scores per block of queries, which holds at most `block_bytes`."""
    import torch

    from ramen import transfer

    device = torch.device(device)
    n, m = len(queries), len(vectors)
    out = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or m == 0 or k == 0:
        return out
    labels = transfer.to_device(torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32)), device)
    q_all = transfer.to_device(torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)), device)
    step = max(1, block_bytes // (4 * m))
    take = min(k, m)
    for s in range(0, n, step):
        top = torch.topk(q_all[s:s + step] @ labels.T, take, dim=1).indices
        out[s:s + step, :take] = top.cpu().numpy()
    return out


def _filter_rows(dataset, rows: np.ndarray) -> np.ndarray | None:
    """The test filter restricted to `rows`, renumbered to positions in `rows`."""
    if dataset.test_filter is None or len(dataset.test_filter) == 0:
        return None
    pos = np.full(len(dataset.test_texts), -1, dtype=np.int64)
    pos[rows] = np.arange(len(rows))
    f = np.asarray(dataset.test_filter, dtype=np.int64)
    keep = pos[f[:, 0]] >= 0
    return np.stack([pos[f[keep, 0]], f[keep, 1]], axis=1)

