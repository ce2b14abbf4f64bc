"""A/B timing of `ramen.graph.prune_edges` at the hyperlink scale (27M edges, 384-d float16):
one process per build, so an installed ramen and an in-tree build (tools/build-inplace) compare
on the same graph and embeddings.

    python benchmarks/prune_ab.py [THREADS ...]                   # the installed ramen
    PYTHONPATH=src python benchmarks/prune_ab.py [THREADS ...]    # this checkout's build
    RAMEN_PRUNE_SCALE=small ...                                   # the 10x smaller graph
    RAMEN_PRUNE_ORDERS=csr,bucket,auto ...                        # edge orders to time (default auto)

The graph is generated once and cached in $TMPDIR. Prints wall and CPU seconds (CPU time counts
only while our threads run, so it is the fairer figure on a shared machine) and GB/s of the bytes
the suite counts as read (`ramen.bench.graph`).
"""
import os
import sys
import time

import numpy as np

import ramen
from ramen import graph
from ramen.bench.graph import FULL, SMALL, cached_power_law, random_embeddings

scale = SMALL if os.environ.get("RAMEN_PRUNE_SCALE") == "small" else FULL
E = cached_power_law(scale)
rng = np.random.default_rng(2)
R, C = random_embeddings(E.shape[0], 384, rng), random_embeddings(E.shape[1], 384, rng)
moved = E.nnz * 384 * 2 + E.shape[0] * 384 * 2 + E.nnz * 5
where = "in-tree" if "site-packages" not in ramen.__file__ else "installed"
orders = os.environ.get("RAMEN_PRUNE_ORDERS", "auto").split(",")
for t in [int(x) for x in sys.argv[1:]] or [1]:
    for _ in range(2):
        for order in orders:
            w0, c0 = time.perf_counter(), time.process_time()
            out, used = graph.prune_edges_ordered(E, R, C, 0.0, num_threads=t, check_finite=False, edge_order=order)
            w, c = time.perf_counter() - w0, time.process_time() - c0
            print(f"{scale.name} {where} threads {t} order {order} ({used}): {w:.2f} s wall, {c:.2f} s cpu, "
                  f"{moved / w / 1e9:.2f} GB/s, {moved / c / 1e9:.2f} GB/s per cpu-s, kept {out.nnz}, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
