"""Which labels do the extra-negative levers draw on Wikispeedia? Graph negatives against uniform ones.

`--graph-negatives N` adds, per query, labels that the query's anchors stand for (an anchor with a
label's text) and that it lacks; `--random-negatives N`, uniform labels. This script computes,
exactly from the study's training split (held-out queries removed, as every arm trains on), how
popular the drawn labels are: the expected training frequency of a drawn label, and the share of
draws that land on the most frequent 1% and 10% of labels. No training, no sampling:

    python benchmarks/negatives.py [--out benchmarks/results/negatives.md]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as study  # noqa: E402  (sets up the import path and offline mode)

from ramen.config import TrainConfig  # noqa: E402
from ramen.files import temp_path  # noqa: E402
from ramen.runlog import RunLog  # noqa: E402
from ramen.train import graph_negative_labels  # noqa: E402


def graph_draw_distribution(candidates: sp.csr_matrix) -> np.ndarray:
    """Per label, the share of graph-negative draws it gets: each query with candidates is drawn
    equally often and picks one of its candidates uniformly (as `sample_neighbours` does)."""
    c = candidates.tocsr()
    degree = np.diff(c.indptr).astype(np.float64)
    has = degree > 0
    per_edge = np.repeat(np.where(has, 1.0 / np.maximum(degree, 1), 0.0), np.diff(c.indptr))
    weights = np.bincount(c.indices, weights=per_edge, minlength=c.shape[1])
    return weights / has.sum()


def popularity(draws: np.ndarray, frequency: np.ndarray) -> dict[str, float]:
    """Expected training frequency of a drawn label and the draws' share on the top 1% / 10%."""
    order = np.argsort(-frequency, kind="stable")
    top = {f: order[: max(1, int(round(f * len(order))))] for f in (0.01, 0.1)}
    return {"mean frequency": float(draws @ frequency), "top 1%": float(draws[top[0.01]].sum()),
            "top 10%": float(draws[top[0.1]].sum())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=study.ROOT / "benchmarks" / "results" / "negatives.md")
    args = parser.parse_args(argv)
    prepared = study.prepare(study.dataset_specs()["wikispeedia"], study.HELD_OUT)
    if prepared is None:
        raise SystemExit("Wikispeedia not found (set RAMEN_WIKISPEEDIA)")
    data = prepared.train
    Y = data.train_Y.tocsr()
    candidates = graph_negative_labels(data, Y, TrainConfig(), RunLog(None, echo=False))  # what training draws from
    frequency = np.asarray(Y.sum(0)).ravel().astype(np.float64)
    rows = {"graph negatives": popularity(graph_draw_distribution(candidates), frequency),
            "uniform (random negatives)": popularity(np.full(Y.shape[1], 1.0 / Y.shape[1]), frequency),
            "label of a training pair (positives)": popularity(frequency / frequency.sum(), frequency)}
    per_query = np.diff(candidates.indptr)
    lines = ["# Wikispeedia: how popular are the labels the extra-negative levers draw?", "",
             f"Command: `python benchmarks/negatives.py` (the accuracy study's training split: {Y.shape[0]:,} "
             f"queries, {Y.shape[1]:,} labels, {int(frequency.sum()):,} training pairs; exact expectations, no "
             "sampling).", "",
             f"Graph-negative candidates: {candidates.nnz:,} (query, label) pairs; {int((per_query > 0).sum()):,} "
             f"queries have at least one (median {int(np.median(per_query[per_query > 0]))} among those).", "",
             "| draw | mean training frequency of a drawn label | share on the top 1% of labels | "
             "share on the top 10% |", "|---|---|---|---|"]
    lines += [f"| {name} | {r['mean frequency']:.1f} | {100 * r['top 1%']:.1f}% | {100 * r['top 10%']:.1f}% |"
              for name, r in rows.items()]
    lines += ["", "Labels ranked by training frequency (positives per label in the training split).", ""]
    out = args.out
    tmp = temp_path(out)
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
