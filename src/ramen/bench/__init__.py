"""Throughput benchmarks: `python -m ramen.bench --suite NAME`, ours beside a peer with the ratio.

Each suite is a module of this package with `run(quick: bool) -> list[Row]`; peers written the
way a user would (numba, plain torch) ship in `ramen.bench.peers`, so every suite runs from an
installed wheel.
"""
