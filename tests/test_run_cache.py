"""A run's cache of densified graphs: used only when it checks out, densified again (and said) when not."""
import numpy as np
import pytest
import scipy.sparse as sp

from ramen.config import TrainConfig
from ramen.datasets.xc import pack_csr
from ramen.runlog import RunLog
from ramen.training_graphs import densified


def _graph() -> sp.csr_matrix:
    rng = np.random.default_rng(0)
    return sp.random(40, 30, density=0.1, format="csr", random_state=rng, dtype=np.float32)


@pytest.mark.parametrize("damage", ["cut", "same-size", "no-checksum", "not-a-zip"])
def test_a_damaged_densified_graph_cache_is_rebuilt_naming_it(tmp_path, damage):
    """A cut cache file used to stop the run with zipfile's BadZipFile traceback, and one altered in
    place was trained on."""
    cfg = TrainConfig(walk_length=20)
    log = RunLog(None, echo=False)
    first = densified(_graph(), cfg, tmp_path, "g-query", log)
    (path,) = tmp_path.glob("densified-g-query-*.npz")
    raw = path.read_bytes()
    if damage == "cut":
        path.write_bytes(raw[:len(raw) // 2])
    elif damage == "same-size":
        path.write_bytes(raw[:-30] + bytes(b ^ 0xFF for b in raw[-30:]))
    elif damage == "no-checksum":
        path.with_name(path.name + ".sha256").unlink()
    else:
        path.write_bytes(b"x" * len(raw))
    again = densified(_graph(), cfg, tmp_path, "g-query", log)
    assert (again != first).nnz == 0 and again.shape == first.shape
    notes = [r["text"] for r in log.records if r["event"] == "info" and "failed its check" in r["text"]]
    assert len(notes) == 1 and str(path) in notes[0]
    densified(_graph(), cfg, tmp_path, "g-query", log)  # rewritten whole: read back without a note
    assert sum("failed its check" in r.get("text", "") for r in log.records) == 1


def test_a_cache_with_a_matching_checksum_is_still_checked_against_the_graph(tmp_path):
    """A cache file of another graph's shape, with its checksum recomputed, is not trusted either."""
    from ramen.files import file_sha256

    cfg = TrainConfig(walk_length=20)
    log = RunLog(None, echo=False)
    first = densified(_graph(), cfg, tmp_path, "g-query", log)
    (path,) = tmp_path.glob("densified-g-query-*.npz")
    arrays = {}
    pack_csr(arrays, "graph", sp.identity(7, format="csr", dtype=np.float32))
    np.savez_compressed(path, **arrays)
    path.with_name(path.name + ".sha256").write_text(file_sha256(path))
    again = densified(_graph(), cfg, tmp_path, "g-query", log)
    assert (again != first).nnz == 0
    assert any("not the graph's (40, 30)" in r.get("text", "") for r in log.records)
