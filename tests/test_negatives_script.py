"""benchmarks/negatives.py: the exact graph-negative draw distribution against the sampler's draws
and a loop, and the popularity statistics against hand counts."""
import importlib.util

import numpy as np
import scipy.sparse as sp

from ramen.bench.accuracy import benchmarks_dir
from ramen.batching import sample_neighbours


def _negatives():
    spec = importlib.util.spec_from_file_location("ramen_benchmark_negatives", benchmarks_dir() / "negatives.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_graph_draw_distribution_matches_a_loop_and_the_sampler():
    neg = _negatives()
    rng = np.random.default_rng(3)
    dense = (rng.random((40, 25)) < 0.15).astype(np.float32)
    dense[5] = 0  # a query without candidates draws nothing
    dense[7] = 1  # and one with every label
    c = sp.csr_matrix(dense)
    got = neg.graph_draw_distribution(c)
    want = np.zeros(25)
    rows = [q for q in range(40) if dense[q].sum() > 0]
    for q in rows:
        want += dense[q].astype(np.float64) / float(dense[q].sum())
    want /= len(rows)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert abs(got.sum() - 1.0) < 1e-12
    # what the batch sampler draws, over many rounds of every query
    draws = np.concatenate([sample_neighbours(c, np.arange(40), rng) for _ in range(4000)])
    freq = np.bincount(draws[draws >= 0], minlength=25) / (draws >= 0).sum()
    np.testing.assert_allclose(freq, want, atol=0.01)


def test_popularity_by_hand():
    neg = _negatives()
    frequency = np.array([10.0, 1, 1, 1, 1, 1, 1, 1, 1, 2])  # label 0 is the top 10% (one label)
    draws = np.array([0.5, 0, 0, 0, 0, 0, 0, 0, 0, 0.5])
    r = neg.popularity(draws, frequency)
    assert r["mean frequency"] == 6.0
    assert r["top 1%"] == 0.5 and r["top 10%"] == 0.5
    uniform = neg.popularity(np.full(10, 0.1), frequency)
    assert abs(uniform["mean frequency"] - 2.0) < 1e-12 and abs(uniform["top 10%"] - 0.1) < 1e-12
