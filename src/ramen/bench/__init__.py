"""Throughput benchmarks: `python -m ramen.bench --suite NAME`, ours beside a peer with the ratio.

Each suite is a module of this package with `run(quick: bool) -> list[Row]`; peers written the
way a user would (numba, plain torch) live in the source tree's `benchmarks/peers/`.
"""
