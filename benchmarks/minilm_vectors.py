"""Real encoder embeddings for the `search` suite: MiniLM vectors of synthetic label and query texts.

Writes LABELS.npy (100,000 label embeddings drawn with seed 1 from the synthetic "paper" preset)
and QUERIES.npy (2,000 of its test queries, seed 0), float32 unit rows, for
`RAMEN_SEARCH_VECTORS=LABELS.npy:QUERIES.npy python -m ramen.bench --suite search`
(benchmarks/results/search.md, "MiniLM label embeddings"). The anchor overrides leave the label
and query texts unchanged and keep generation short.

    python benchmarks/minilm_vectors.py paper_labels.npy paper_queries.npy [--labels 100000]
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SMALL_ANCHORS = dict(hyperlink_anchors=4000, category_anchors=4000, hyperlink_query_degree=1,
                     hyperlink_label_degree=1, category_query_degree=1, category_label_degree=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("labels_out")
    parser.add_argument("queries_out")
    parser.add_argument("--labels", type=int, default=100_000, help="label texts drawn (seed 1)")
    parser.add_argument("--queries", type=int, default=2_000, help="test queries drawn (seed 0)")
    args = parser.parse_args()

    from ramen import Encoder, synthetic

    start = time.perf_counter()
    data = synthetic("paper", seed=0, **SMALL_ANCHORS)
    print(f"generated {data.name} in {time.perf_counter() - start:.0f} s: "
          f"{len(data.label_texts):,} labels, {len(data.test_texts):,} test queries")
    pick_labels = np.sort(np.random.default_rng(1).choice(len(data.label_texts), args.labels, replace=False))
    pick_queries = np.sort(np.random.default_rng(0).choice(len(data.test_texts), args.queries, replace=False))
    encoder = Encoder()
    for texts, out in (([data.label_texts[i] for i in pick_labels], args.labels_out),
                       ([data.test_texts[i] for i in pick_queries], args.queries_out)):
        start = time.perf_counter()
        vectors = encoder.encode(texts)
        tmp = out + ".tmp.npy"
        np.save(tmp, vectors)
        os.replace(tmp, out)
        print(f"wrote {out}: {vectors.shape} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
