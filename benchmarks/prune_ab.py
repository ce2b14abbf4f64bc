"""A/B timing of `ramen.graph.prune_edges` at the hyperlink scale (27M edges, 384-d float16):
one process per build, so an installed ramen and an in-tree build (tools/build-inplace) compare
on the same graph and embeddings.

    python benchmarks/prune_ab.py [THREADS ...]                   # the installed ramen
    PYTHONPATH=src python benchmarks/prune_ab.py [THREADS ...]    # this checkout's build
    RAMEN_PRUNE_SCALE=small ...                                   # the 10x smaller graph

The graph is generated once and cached in $TMPDIR. Prints wall and CPU seconds (CPU time counts
only while our threads run, so it is the fairer figure on a shared machine) and GB/s of the bytes
the suite counts as read (`ramen.bench.graph`).
"""
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

import ramen
from ramen import graph
from ramen.bench.graph import FULL, SMALL, power_law_bipartite, random_embeddings

scale = SMALL if os.environ.get("RAMEN_PRUNE_SCALE") == "small" else FULL
cache = Path(tempfile.gettempdir()) / f"ramen_prune_ab_{scale.edges}.npz"
if cache.exists():
    z = np.load(cache)
    E = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
else:
    E = power_law_bipartite(scale.items, scale.anchors, scale.edges)
    np.savez(cache, data=E.data, indices=E.indices, indptr=E.indptr, shape=np.array(E.shape))
rng = np.random.default_rng(2)
R, C = random_embeddings(E.shape[0], 384, rng), random_embeddings(E.shape[1], 384, rng)
moved = E.nnz * 384 * 2 + E.shape[0] * 384 * 2 + E.nnz * 5
where = "in-tree" if "site-packages" not in ramen.__file__ else "installed"
for t in [int(x) for x in sys.argv[1:]] or [1]:
    for _ in range(2):
        w0, c0 = time.perf_counter(), time.process_time()
        out = graph.prune_edges(E, R, C, 0.0, num_threads=t, check_finite=False)
        w, c = time.perf_counter() - w0, time.process_time() - c0
        print(f"{scale.name} {where} threads {t}: {w:.2f} s wall, {c:.2f} s cpu, {moved / w / 1e9:.2f} GB/s, "
              f"{moved / c / 1e9:.2f} GB/s per cpu-s, kept {out.nnz}, load {os.getloadavg()[0]:.1f}", flush=True)
