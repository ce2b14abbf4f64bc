"""A dataset: texts, label matrices (scipy CSR) and anchor sets, and its statistics (the paper's Table 9).

Every matrix is kept in one canonical CSR form (float32 values, sorted column ids, int32 indices
unless the size needs int64), so that save then load gives identical objects.
"""
from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import scipy.sparse as sp

from ramen.datasets.xc_format import canonical_csr

_ANCHOR_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


def _csr_equal(a: sp.csr_matrix | None, b: sp.csr_matrix | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return (a.shape == b.shape and a.dtype == b.dtype and a.indices.dtype == b.indices.dtype
            and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))


def _check_matrix(m: sp.csr_matrix, what: str) -> None:
    if not m.has_canonical_format:
        raise ValueError(f"{what} holds a column id twice in one row")
    if not np.isfinite(m.data).all():
        raise ValueError(f"{what} holds a NaN or infinite value")


@dataclasses.dataclass
class AnchorSet:
    """One metadata graph: anchor texts and CSR links from train queries, labels (and test queries)."""

    texts: list[str]
    train_X_A: sp.csr_matrix  # (num_train, num_anchors)
    label_A: sp.csr_matrix  # (num_labels, num_anchors)
    test_X_A: sp.csr_matrix | None = None  # (num_test, num_anchors)

    def __post_init__(self) -> None:
        self.texts = list(self.texts)
        self.train_X_A = canonical_csr(self.train_X_A, "train_X_A")
        self.label_A = canonical_csr(self.label_A, "label_A")
        if self.test_X_A is not None:
            self.test_X_A = canonical_csr(self.test_X_A, "test_X_A")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AnchorSet):
            return NotImplemented
        return (self.texts == other.texts and _csr_equal(self.train_X_A, other.train_X_A)
                and _csr_equal(self.label_A, other.label_A) and _csr_equal(self.test_X_A, other.test_X_A))

    def __repr__(self) -> str:
        test = "none" if self.test_X_A is None else f"{self.test_X_A.nnz:,}"
        return (f"AnchorSet(anchors={self.num_anchors:,}, edges: train={self.train_X_A.nnz:,}, "
                f"label={self.label_A.nnz:,}, test={test})")

    @property
    def num_anchors(self) -> int:
        return len(self.texts)


@dataclasses.dataclass
class Dataset:
    """An XC task: query and label texts, ground truth, anchor sets and propensity constants."""

    train_texts: list[str]
    test_texts: list[str]
    label_texts: list[str]
    train_Y: sp.csr_matrix  # (num_train, num_labels)
    test_Y: sp.csr_matrix  # (num_test, num_labels)
    anchor_sets: dict[str, AnchorSet] = dataclasses.field(default_factory=dict)
    test_filter: np.ndarray | None = None  # (n, 2) int64 pairs (test row, label) never to predict
    A: float = 0.55  # propensity constants of Jain et al. (2016)
    B: float = 1.5
    name: str = ""

    def __post_init__(self) -> None:
        self.train_texts = list(self.train_texts)
        self.test_texts = list(self.test_texts)
        self.label_texts = list(self.label_texts)
        self.train_Y = canonical_csr(self.train_Y, "train_Y")
        self.test_Y = canonical_csr(self.test_Y, "test_Y")
        self.anchor_sets = dict(self.anchor_sets)
        if self.test_filter is not None:
            f = np.asarray(self.test_filter)
            if f.size == 0:
                f = f.reshape(0, 2)
            if f.ndim != 2 or f.shape[1] != 2 or not np.issubdtype(f.dtype, np.integer):
                raise ValueError(f"test_filter must be an (n, 2) integer array, got {f.dtype} {f.shape}")
            self.test_filter = f.astype(np.int64, copy=False)
        self.A = float(self.A)
        self.B = float(self.B)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Dataset):
            return NotImplemented
        filters_equal = (self.test_filter is None and other.test_filter is None) or (
            self.test_filter is not None and other.test_filter is not None
            and np.array_equal(self.test_filter, other.test_filter))
        return (self.train_texts == other.train_texts and self.test_texts == other.test_texts
                and self.label_texts == other.label_texts and _csr_equal(self.train_Y, other.train_Y)
                and _csr_equal(self.test_Y, other.test_Y) and list(self.anchor_sets) == list(other.anchor_sets)
                and all(a == other.anchor_sets[k] for k, a in self.anchor_sets.items())
                and filters_equal and self.A == other.A and self.B == other.B and self.name == other.name)

    def __repr__(self) -> str:
        filt = "none" if self.test_filter is None else f"{len(self.test_filter):,}"
        return (f"Dataset(name={self.name!r}, train={self.num_train:,}, test={self.num_test:,}, "
                f"labels={self.num_labels:,}, positives: train={self.train_Y.nnz:,}, test={self.test_Y.nnz:,}, "
                f"anchor_sets={self.anchor_sets!r}, test_filter={filt}, A={self.A}, B={self.B})")

    @property
    def num_train(self) -> int:
        return self.train_Y.shape[0]

    @property
    def num_test(self) -> int:
        return self.test_Y.shape[0]

    @property
    def num_labels(self) -> int:
        return self.train_Y.shape[1]

    def validate(self) -> Dataset:
        """Checks that texts, matrices, anchor sets and the filter agree in size; ValueError naming
        the part otherwise. Returns self."""
        L = len(self.label_texts)
        for what, texts, m in (("train", self.train_texts, self.train_Y), ("test", self.test_texts, self.test_Y)):
            if m.shape != (len(texts), L):
                raise ValueError(f"{what}_Y has shape {m.shape} but there are {len(texts)} {what} texts "
                                 f"and {L} label texts: expected ({len(texts)}, {L})")
            _check_matrix(m, f"{what}_Y")
            if m.nnz and m.data.min() <= 0:  # metrics and sampling count every stored entry as a positive
                row = int(np.searchsorted(m.indptr, int(np.flatnonzero(m.data <= 0)[0]), side="right") - 1)
                raise ValueError(f"{what}_Y holds a value <= 0 (row {row}): every stored entry is a positive "
                                 "label, so leave the others out instead of storing 0")
        for what, texts in (("train", self.train_texts), ("test", self.test_texts), ("label", self.label_texts)):
            if not all(isinstance(t, str) for t in texts):
                raise ValueError(f"{what}_texts must hold only str")
        for name, a in self.anchor_sets.items():
            if not isinstance(name, str) or not _ANCHOR_NAME.match(name):
                raise ValueError(f"anchor set name {name!r} must be letters, digits, '_', '.', '-' "
                                 "(it names files: <name>_trn_X_Y.txt)")
            if not isinstance(a, AnchorSet):
                raise ValueError(f"anchor_sets[{name!r}] must be an AnchorSet, got {type(a).__name__}")
            if not all(isinstance(t, str) for t in a.texts):
                raise ValueError(f"anchor set {name!r}: texts must hold only str")
            expected = {"train_X_A": self.num_train, "label_A": L, "test_X_A": self.num_test}
            for part, rows in expected.items():
                m = getattr(a, part)
                if m is None:
                    continue
                if m.shape != (rows, a.num_anchors):
                    raise ValueError(f"anchor set {name!r}: {part} has shape {m.shape}, expected "
                                     f"({rows}, {a.num_anchors}) (rows, anchor texts)")
                _check_matrix(m, f"anchor set {name!r}: {part}")
        if self.test_filter is not None and len(self.test_filter):
            f = self.test_filter
            if f.min() < 0 or f[:, 0].max() >= self.num_test or f[:, 1].max() >= L:
                raise ValueError(f"test_filter pairs must lie in [0, {self.num_test}) x [0, {L}) "
                                 f"(test rows x labels), found rows {f[:, 0].min()}..{f[:, 0].max()}, "
                                 f"labels {f[:, 1].min()}..{f[:, 1].max()}")
        if not (math.isfinite(self.A) and math.isfinite(self.B) and self.A >= 0 and self.B > -1):
            raise ValueError(f"propensity constants must be finite with A >= 0 and B > -1, got A={self.A}, B={self.B}")
        return self


class DatasetStats(dict):
    """The statistics of `describe` as a dict; str() is a printable table."""

    def table(self) -> str:
        rows = [("dataset", self["name"] or "-"),
                ("train points N", f"{self['train_points']:,}"),
                ("labels L", f"{self['labels']:,}"),
                ("test points N'", f"{self['test_points']:,}"),
                ("avg points per label", f"{self['avg_points_per_label']:.2f}"),
                ("avg labels per point", f"{self['avg_labels_per_point']:.2f}"),
                ("avg labels per test point", f"{self['avg_labels_per_test_point']:.2f}"),
                ("labels without train points", f"{self['labels_without_train_points']:,}")]
        for name, a in self["anchor_sets"].items():
            rows += [(f"[{name}] nodes", f"{a['nodes']:,}"),
                     (f"[{name}] avg neighbours per point", f"{a['avg_neighbours_per_point']:.2f}"),
                     (f"[{name}] avg neighbours per label", f"{a['avg_neighbours_per_label']:.2f}")]
            if a["avg_neighbours_per_test_point"] is not None:
                rows.append((f"[{name}] avg neighbours per test point", f"{a['avg_neighbours_per_test_point']:.2f}"))
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)

    def __str__(self) -> str:
        return self.table()


def _ratio(a: int, b: int) -> float:
    return a / b if b else 0.0


def describe(ds: Dataset) -> DatasetStats:
    """Table 9 of the RAMEN paper for `ds`: points, labels, test points, average points per label and
    labels per point (train ground truth), and per anchor set its nodes and average neighbours per
    train point and per label. A dict (`print` it for a table)."""
    N, L = ds.train_Y.shape
    stats = DatasetStats(
        name=ds.name, train_points=N, labels=L, test_points=ds.num_test,
        avg_points_per_label=_ratio(ds.train_Y.nnz, L), avg_labels_per_point=_ratio(ds.train_Y.nnz, N),
        avg_labels_per_test_point=_ratio(ds.test_Y.nnz, ds.num_test),
        labels_without_train_points=int(L - np.count_nonzero(np.bincount(ds.train_Y.indices, minlength=L))),
        anchor_sets={})
    for name, a in ds.anchor_sets.items():
        stats["anchor_sets"][name] = dict(
            nodes=a.num_anchors, avg_neighbours_per_point=_ratio(a.train_X_A.nnz, N),
            avg_neighbours_per_label=_ratio(a.label_A.nnz, L),
            avg_neighbours_per_test_point=None if a.test_X_A is None else _ratio(a.test_X_A.nnz, ds.num_test))
    return stats
