"""Seeded fuzz test of the label index loader: mutated index files (bit flips, truncations, header
field edits, section offset edits) must load cleanly with the original's search results or raise a
ValueError naming the file; files whose checksums were recomputed after the mutation (hostile) or
that have none (saved before checksums) must raise or give well-formed results, never crash.
usearch's graph section (usearch's own file, which its loader trusts) is checked structurally by
ramen.usearch_file before usearch reads it, so hostile edits inside it are fuzzed too.

Each batch runs in its own process (tests/_index_fuzz_worker.py) so that a segfault fails the test.
RAMEN_FUZZ_CASES sets the number of mutations per index kind (default 90: 360 in all).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from _child_env import child_env
from ramen.index import LabelIndex

HERE = Path(__file__).resolve().parent
CASES = int(os.environ.get("RAMEN_FUZZ_CASES", "90"))
KINDS = {
    "ramen-f16": dict(connectivity=4),
    "ramen-f32-rescore": dict(dtype="f32", connectivity=4, rescore=8),
    "exact": dict(exact=True),
    "usearch": dict(engine="usearch", connectivity=4),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_mutated_index_files_load_cleanly_or_raise(tmp_path, kind):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 12)).astype(np.float32)
    index = LabelIndex(12, fingerprint="fuzz", **KINDS[kind])
    # on one thread: a usearch graph built on several differs per run, and so would the fuzzed file
    # (2 distinct files in 10 builds), where each seeded mutation lands and what it hits
    index.add(rng.choice(10**6, size=300, replace=False), x, threads=1)
    index.remove(index.ids[::17])  # tombstones too
    good = tmp_path / "good.idx"
    index.save(good)
    seed = sum(map(ord, kind))
    proc = subprocess.run([sys.executable, str(HERE / "_index_fuzz_worker.py"), str(good), str(tmp_path), str(seed),
                           str(CASES)], capture_output=True, text=True, timeout=60 + CASES,
                          env=child_env(OMP_NUM_THREADS="1"))
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else "(no output)"
    assert proc.returncode == 0, (f"worker exited {proc.returncode} (negative: killed by that signal) after "
                                  f"{last!r}\n{proc.stderr[-2000:]}")
    assert last.startswith("done"), last
    print(kind, last)
