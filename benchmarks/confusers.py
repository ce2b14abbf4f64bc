"""Where the graph's encoders go wrong on Wikispeedia: do they rank the query's one-way links first?

Wikispeedia's labels are an article's mutual links; its "hyperlink" anchors are the one-way links,
which are never labels by construction yet are mostly other articles' labels. The hypothesis of
benchmarks/results/graph_levers.md: R_x pulls a query towards exactly these articles, so they
become the encoder's confusers. This script measures it on the study's trained models, test split,
exact search:

    python benchmarks/confusers.py [--runs runs/accuracy] [--arms plain ramen ...]
                                   [--out benchmarks/results/graph_confusers.md]

Per model: P@1; "one-way@1", the share of queries whose top prediction is one of their one-way
links; "one-way in top 5", the share of the top-5 slots held by one-way links; and the mean cosine
of a test query to its true labels, to its one-way links and to every other label.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as study  # noqa: E402  (sets up the import path and offline mode)

from ramen.datasets import Dataset  # noqa: E402
from ramen.files import temp_path  # noqa: E402
from ramen.model import Model  # noqa: E402

TOP = 5


def one_way_links(dataset: Dataset, anchor_set: str = "hyperlink") -> sp.csr_matrix:
    """(test queries x labels) 0/1: the labels whose text is one of the query's `anchor_set` anchors."""
    a = dataset.anchor_sets[anchor_set]
    label_of = {t: j for j, t in enumerate(dataset.label_texts)}
    anchor_label = np.array([label_of.get(t, -1) for t in a.texts], dtype=np.int64)
    X = a.test_X_A.tocoo()
    lab = anchor_label[X.col]
    keep = lab >= 0
    M = sp.csr_matrix((np.ones(int(keep.sum()), dtype=np.float32), (X.row[keep], lab[keep])),
                      shape=(dataset.num_test, dataset.num_labels))
    M.sum_duplicates()
    M.data[:] = 1.0
    return M


def measure(model: Model, dataset: Dataset, links: sp.csr_matrix) -> dict[str, float]:
    """The confuser statistics of one model (fractions; cosines as they are)."""
    q = model.encode(dataset.test_texts, progress=False)
    z = model.encode(dataset.label_texts, progress=False)
    scores = q @ z.T
    if dataset.test_filter is not None and len(dataset.test_filter):
        f = np.asarray(dataset.test_filter)
        scores[f[:, 0], f[:, 1]] = -np.inf
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP]
    true = dataset.test_Y.toarray() > 0
    oneway = links.toarray() > 0
    rows = np.arange(len(top))[:, None]
    finite = np.isfinite(scores)
    other = finite & ~true & ~oneway
    return {
        "P@1": float(true[rows[:, 0], top[:, 0]].mean()),
        "one-way@1": float(oneway[rows[:, 0], top[:, 0]].mean()),
        "one-way in top 5": float(oneway[rows, top].mean()),
        "cos true": float(scores[true & finite].mean()),
        "cos one-way": float(scores[oneway & finite].mean()),
        "cos other": float(scores[other].mean()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/accuracy"))
    parser.add_argument("--arms", nargs="+", default=[
        "plain", "ramen", "no-query-graph", "no-label-graph", "auggt", "pull", "allneg", "allneg+hyperlink-rx-off",
        "allneg+category-only", "allneg+bank", "allneg+lambda-0.3", "allneg+lambda-0.1", "allneg+lambda-0.03",
        "allneg+bank+lambda-0.1", "allneg+category-only+lambda-0.1"])
    parser.add_argument("--out", type=Path, default=study.ROOT / "benchmarks" / "results" / "graph_confusers.md")
    args = parser.parse_args(argv)

    dataset = study.dataset_specs()["wikispeedia"].load()
    if dataset is None:
        raise SystemExit("Wikispeedia not found (set RAMEN_WIKISPEEDIA)")
    links = one_way_links(dataset)
    per_query = np.asarray(links.sum(1)).ravel()
    rows: list[dict[str, Any]] = []
    for arm in args.arms:
        for seed_dir in sorted((args.runs / "wikispeedia" / arm).glob("seed*")):
            if not (seed_dir / "result.json").exists():
                continue
            stats = measure(Model.load(seed_dir / "model"), dataset, links)
            rows.append({"arm": arm, "seed": int(seed_dir.name[4:]), **stats})
            print(json.dumps(rows[-1]), flush=True)
    write(args.out, rows, per_query, dataset, " ".join(["python benchmarks/confusers.py", *(argv or sys.argv[1:])]))
    return 0


def write(out: Path, rows: list[dict[str, Any]], per_query: np.ndarray, dataset: Dataset, command: str) -> None:
    keys = ["P@1", "one-way@1", "one-way in top 5", "cos true", "cos one-way", "cos other"]
    lines = ["# Wikispeedia: are the one-way links the graph's confusers?", "",
             f"Command: `{command}` (models of the accuracy study, test split, exact search).", "",
             f"{dataset.num_test} test queries, {dataset.num_labels:,} labels; a test query has "
             f"{per_query.mean():.1f} one-way links among the labels on average, so a random ranking would put "
             f"one in {100 * per_query.mean() / dataset.num_labels:.2f}% of its slots.", "",
             "| arm | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    report = study._report()
    for arm in dict.fromkeys(r["arm"] for r in rows):
        mine = [r for r in rows if r["arm"] == arm]
        cells = [report.plus_minus(*report.mean_std(r[k] for r in mine)[:2],
                                   *((1.0, 3) if k.startswith("cos") else (100.0, 2))) for k in keys]
        lines.append(f"| {arm} | {len(mine)} | " + " | ".join(cells) + " |")
    findings = report.kept_findings(out, default="")  # the hand-written findings survive a rerun
    lines += ["", "P@1 and one-way shares in %; cosines are means over (query, label) pairs.", "",
              report.FINDINGS_START, *([findings] if findings else []), report.FINDINGS_END, ""]
    tmp = temp_path(out)
    tmp.write_text("\n".join(lines))
    os.replace(tmp, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    raise SystemExit(main())
