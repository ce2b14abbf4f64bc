"""`python -m ramen.bench --quick`: every suite runs and reports ours beside a peer."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_all_suites_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "ramen.bench", "--quick", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    suites = {r["suite"] for r in report["rows"]}
    assert suites >= {"data", "graph", "triplet", "search", "encode", "train", "accuracy"}
    assert "cpu" in report["machine"] and "machine:" in proc.stdout
    compared = [r for r in report["rows"] if r["peer"] is not None]
    assert compared and all(r["ratio"] is not None and r["ratio"] > 0 for r in compared)


def test_search_case_too_large_for_memory_is_skipped_with_a_message(capsys):
    from ramen.bench.search import _fits

    peers = {"faiss-hnsw": object(), "hnswlib": None}  # None: a peer that is not installed
    assert _fits("lowrank 1Kx8", 1_000, 8, peers)
    assert not _fits("lowrank 1000000000Kx768", 10**12, 768, peers)
    assert "lowrank 1000000000Kx768: skipped: its indexes need about" in capsys.readouterr().out
