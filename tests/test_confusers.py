"""benchmarks/confusers.py: the one-way-link matrix and the confuser statistics against hand counts."""
import importlib.util

import numpy as np
import scipy.sparse as sp

from ramen.bench.accuracy import benchmarks_dir
from ramen.datasets import AnchorSet, Dataset


def _confusers():
    spec = importlib.util.spec_from_file_location("ramen_benchmark_confusers", benchmarks_dir() / "confusers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FixedModel:
    """encode() by text lookup: a stand-in for a trained Model."""

    def __init__(self, vectors: dict[str, list[float]]):
        self.vectors = vectors

    def encode(self, texts, progress=False):
        v = np.array([self.vectors[t] for t in texts], dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def _dataset() -> Dataset:
    labels = ["a", "b", "c", "d"]
    # hyperlink anchors: "b" and "c" name labels, "x" does not; test query 0 links b, x and c (c twice)
    test_X_A = sp.csr_matrix(np.array([[1, 1, 2], [0, 0, 0]], dtype=np.float32))
    hyperlink = AnchorSet(["b", "x", "c"], train_X_A=sp.csr_matrix((1, 3), dtype=np.float32),
                          label_A=sp.csr_matrix((4, 3), dtype=np.float32), test_X_A=test_X_A)
    return Dataset(train_texts=["t"], test_texts=["q0", "q1"], label_texts=labels,
                   train_Y=sp.csr_matrix(np.array([[1, 0, 0, 0]], dtype=np.float32)),
                   test_Y=sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32)),
                   anchor_sets={"hyperlink": hyperlink}).validate()


def test_one_way_links_map_anchor_texts_to_labels_once():
    links = _confusers().one_way_links(_dataset())
    assert links.toarray().tolist() == [[0, 1, 1, 0], [0, 0, 0, 0]]


def test_measure_counts_one_way_links_at_the_top():
    c = _confusers()
    ds = _dataset()
    # q0's best label is its one-way link b, then its true label a; q1's best is its true label d
    model = FixedModel({"q0": [1, 0, 0], "q1": [0, 0, 1], "a": [0.8, 0.6, 0], "b": [1, 0.1, 0],
                        "c": [0, 1, 0], "d": [0, 0.1, 1]})
    stats = c.measure(model, ds, c.one_way_links(ds))
    assert stats["P@1"] == 0.5
    assert stats["one-way@1"] == 0.5
    # top 5 of 4 labels: q0 holds b and c, q1 holds none -> 2 of 8 slots
    assert stats["one-way in top 5"] == 2 / 8
    q = model.encode(["q0", "q1"])
    z = model.encode(["a", "b", "c", "d"])
    s = q @ z.T
    assert np.isclose(stats["cos true"], (s[0, 0] + s[1, 3]) / 2)
    assert np.isclose(stats["cos one-way"], (s[0, 1] + s[0, 2]) / 2)
    assert np.isclose(stats["cos other"], (s[0, 3] + s[1, 0] + s[1, 1] + s[1, 2]) / 4)
