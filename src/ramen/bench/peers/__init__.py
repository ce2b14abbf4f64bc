"""Peers the benchmark suites compare ramen against, written the way a user would (numba, plain
torch, numpy, faiss, hnswlib): shipped with the package so that `python -m ramen.bench` runs from an
installed wheel. Optional libraries (faiss, hnswlib) are imported by their peer module only."""
