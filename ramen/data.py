"""Datasets: texts, label matrices (scipy CSR) and anchor sets; Extreme Classification Repository I/O."""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.sparse as sp


@dataclasses.dataclass
class AnchorSet:
    """One metadata graph: anchor texts and CSR links from train queries, labels (and test queries)."""

    texts: list[str]
    train_X_A: sp.csr_matrix  # (num_train, num_anchors)
    label_A: sp.csr_matrix  # (num_labels, num_anchors)
    test_X_A: sp.csr_matrix | None = None  # (num_test, num_anchors)


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
