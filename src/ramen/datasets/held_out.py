"""Training queries held out of training: the split a recipe or a graph weight is chosen on, so that
the test split is never used to choose (issue 28)."""
from __future__ import annotations

import dataclasses

import numpy as np

from ramen.datasets.dataset import Dataset


@dataclasses.dataclass
class HeldOutSplit:
    """`train`: the dataset without the held-out queries; `held`: the same labels and anchor sets with
    those queries as its test split; `rows`: their rows in the original training split."""

    train: Dataset
    held: Dataset
    rows: np.ndarray


def hold_out(dataset: Dataset, fraction: float, seed: int = 0) -> HeldOutSplit:
    """Takes a seeded `fraction` of the training queries out of training, as a test split of their own.

    Where the dataset filters a test query's own text out of its predictions (Wikispeedia: articles
    are queries and labels), a held-out query's own label, found by identical text, is filtered too.
    """
    if not 0.0 <= float(fraction) < 1.0:
        raise ValueError(f"held-out fraction must be in [0, 1), got {fraction}")
    n = dataset.num_train
    rows = np.sort(np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))])
    if len(rows) == n:
        raise ValueError(f"held-out fraction {fraction} of {n} training queries leaves none to train on")
    keep = np.setdiff1d(np.arange(n), rows)
    anchor_sets = {name: dataclasses.replace(a, train_X_A=a.train_X_A[keep]) for name, a in dataset.anchor_sets.items()}
    train = dataclasses.replace(dataset, train_texts=[dataset.train_texts[i] for i in keep],
                                train_Y=dataset.train_Y[keep], anchor_sets=anchor_sets).validate()
    texts = [dataset.train_texts[i] for i in rows]
    filt = None
    if dataset.test_filter is not None and len(dataset.test_filter):
        label_of = {t: j for j, t in enumerate(dataset.label_texts)}
        pairs = [(r, label_of[t]) for r, t in enumerate(texts) if t in label_of]
        filt = np.array(pairs, dtype=np.int64).reshape(-1, 2)
    held_sets = {name: dataclasses.replace(a, test_X_A=dataset.anchor_sets[name].train_X_A[rows])
                 for name, a in train.anchor_sets.items()}
    held = dataclasses.replace(train, test_texts=texts, test_Y=dataset.train_Y[rows], test_filter=filt,
                               anchor_sets=held_sets)
    return HeldOutSplit(train, held, rows)
