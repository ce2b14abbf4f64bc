"""The memory model of benchmarks/results/scale.md: what a training run holds at the paper's shape,
LF-AmazonTitles-1.3M's and a 10M-label catalogue's, from ramen.memory's per-stage estimate (the
arrays' dtypes) plus the loaded dataset (Python strings and CSR matrices).

    python benchmarks/scale_memory.py [--dim 32] [--params 1.1e6]
"""
from __future__ import annotations

import argparse
import types

from ramen.config import TrainConfig
from ramen.memory import EDGE_BYTES, GB, estimate_run, token_bytes

TEXT_BYTES = 80  # a Python str of a 20-30 character title and its list slot (sys.getsizeof + 8, measured)
# the paper's graph degrees (Table 9): anchors a query and a label links to, per anchor set
DEGREES = {"hyperlink": (38.87, 7.71), "category": (4.74, 4.82)}
ANCHORS_PER_LABEL = {"hyperlink": 2_458_399 / 312_330, "category": 656_086 / 312_330}

SHAPES = {  # train queries, test queries, labels, labels a train query
    "LF-WikiSeeAlsoTitles-320K (paper)": (693_082, 177_515, 312_330, 2.11),
    "LF-AmazonTitles-1.3M": (2_248_619, 970_237, 1_305_265, 22.20),
    "10M-label catalogue": (22_190_000, 5_680_000, 10_000_000, 2.11),  # the paper's ratios scaled to 10M labels
}


class _Matrix:
    def __init__(self, rows: int, cols: int, nnz: float):
        self.shape, self.nnz = (int(rows), int(cols)), int(nnz)


def shaped(train: int, test: int, labels: int, per_query: float) -> types.SimpleNamespace:
    """A stand-in dataset of these counts, with the paper's two anchor sets scaled to its labels."""
    sets = {}
    for name, (dq, dl) in DEGREES.items():
        anchors = int(labels * ANCHORS_PER_LABEL[name])
        sets[name] = types.SimpleNamespace(texts=range(anchors), train_X_A=_Matrix(train, anchors, train * dq),
                                           label_A=_Matrix(labels, anchors, labels * dl),
                                           test_X_A=_Matrix(test, anchors, test * dq))
    return types.SimpleNamespace(train_texts=range(train), test_texts=range(test), label_texts=range(labels),
                                 train_Y=_Matrix(train, labels, train * per_query),
                                 test_Y=_Matrix(test, labels, test * per_query), anchor_sets=sets)


def dataset_bytes(ds: types.SimpleNamespace) -> int:
    """The loaded dataset: every text as a Python string, every matrix as CSR (8 bytes an edge, 8 a row)."""
    texts = len(ds.train_texts) + len(ds.test_texts) + len(ds.label_texts) + sum(len(a.texts) for a in
                                                                                 ds.anchor_sets.values())
    mats = [ds.train_Y, ds.test_Y] + [m for a in ds.anchor_sets.values() for m in (a.train_X_A, a.label_A, a.test_X_A)]
    return texts * TEXT_BYTES + sum(m.nnz * EDGE_BYTES + 8 * (m.shape[0] + 1) for m in mats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dim", type=int, default=32, help="encoder output width (tiny 32, MiniLM 384, DistilBERT 768)")
    parser.add_argument("--params", type=float, default=1.1e6, help="encoder parameters (tiny 1.1M, MiniLM 22.7M, "
                        "DistilBERT 66M)")
    parser.add_argument("--eval-max-queries", type=int, default=None)
    args = parser.parse_args()
    cfg = TrainConfig(graph=True, eval_max_queries=args.eval_max_queries)
    print(f"dim {args.dim}, params {args.params:.3g}, max_length {cfg.max_length} "
          f"({token_bytes(cfg.max_length)} B a text's tokens), densify top_k {cfg.densify_top_k}")
    print("| shape | dataset GB | " + " | ".join(("densify", "tokenise", "prune", "evaluate", "label index",
                                                 "checkpoint")) + " | peak GB (dataset + largest stage) |")
    print("|---" * 9 + "|")
    for name, shape in SHAPES.items():
        ds = shaped(*shape)
        est = estimate_run(ds, cfg, args.dim, int(args.params), list(ds.anchor_sets))
        data = dataset_bytes(ds)
        stage, need = est.peak()
        cells = " | ".join(f"{est.stages[k] / GB:.2f}" for k in ("densify", "tokenise", "prune", "evaluate",
                                                                  "label index", "checkpoint"))
        print(f"| {name} | {data / GB:.2f} | {cells} | {(data + need) / GB:.2f} ({stage}) |")


if __name__ == "__main__":
    main()
