"""ramen.files: directories replaced in one step, so a reader or a kill never finds the target missing."""
import os
import threading
from pathlib import Path

import pytest

from ramen import files


def _dir(path: Path, name: str) -> Path:
    path.mkdir()
    (path / name).write_text(name)
    return path


def _reader_sees_it_missing(tmp_path: Path, swaps: int) -> int:
    """Swaps new directories in at tmp_path/d `swaps` times while this thread looks for it."""
    target = _dir(tmp_path / "d", "0")
    done, missing = threading.Event(), 0

    def writer() -> None:
        for i in range(swaps):
            files.swap_in(_dir(tmp_path / f".new{i}", str(i)), target, str(i))
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        missing += not os.path.isdir(target)
    thread.join()
    assert sorted(os.listdir(tmp_path)) == ["d"] and os.listdir(target) == [str(swaps - 1)]
    return missing


def test_a_directory_swapped_in_is_never_missing(tmp_path):
    """save_xc --overwrite killed between its two renames left neither the old dataset nor the new one
    (found by a kill test); the swap is now one step where the system has RENAME_EXCHANGE."""
    if not files._exchanged(_dir(tmp_path / "a", "a"), _dir(tmp_path / "b", "b")):
        pytest.skip("this system cannot swap two paths in one step")
    assert (tmp_path / "a" / "b").exists()
    (tmp_path / "run").mkdir()
    assert _reader_sees_it_missing(tmp_path / "run", 300) == 0


def test_without_the_one_step_swap_the_old_directory_is_renamed_away_and_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "_exchanged", lambda a, b: False)
    (tmp_path / "run").mkdir()
    _reader_sees_it_missing(tmp_path / "run", 50)  # the result is right; a reader may find it missing
    target = _dir(tmp_path / "t", "old")
    real = Path.rename

    def failing(self, to):
        if self.name == ".new":
            raise OSError("disk on fire")
        return real(self, to)

    monkeypatch.setattr(Path, "rename", failing)
    with pytest.raises(OSError, match="disk on fire"):
        files.swap_in(_dir(tmp_path / ".new", "new"), target, "x")
    assert os.listdir(target) == ["old"] and sorted(os.listdir(tmp_path)) == ["run", "t"]  # put back, new removed


def _dead_pid() -> int:
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_remove_leftovers_removes_a_gone_writers_temporaries_of_the_target_only(tmp_path):
    from ramen.files import remove_leftovers

    dead, tag = _dead_pid(), "0123abcd"
    gone = [f".D.tmp-{dead}-{tag}", f".D.old-{dead}-{tag}", f".D.tmp-{dead}-{tag}.npz"]
    kept = [f".E.tmp-{dead}-{tag}", f".D.tmp-{os.getpid()}-{tag}", ".D.tmp-notapid", "D"]
    for name in gone[:2] + kept[:2]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "part").write_bytes(b"x")
    for name in gone[2:] + kept[2:]:
        (tmp_path / name).write_bytes(b"x")
    remove_leftovers(tmp_path, "D.npz")
    remove_leftovers(tmp_path, "D")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)
    remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept[1:])


def test_a_run_directory_claimed_again_loses_a_killed_runs_temporaries(tmp_path):
    """A kill while a checkpoint or the model was written left a temporary as large as it, for good
    (a helper's kill test: a full-size .tmpXXXXXX from safetensors in the run directory)."""
    from ramen import run_dir

    dead = _dead_pid()
    (tmp_path / "cache").mkdir()
    left = ["checkpoint.safetensors.tmp", "log.tmp", ".tmp8jpjt7", f".model.tmp-{dead}-0123abcd",
            f"cache/.query.tmp-{dead}-0123abcd.npy"]
    for name in left:
        (tmp_path / name).mkdir() if name.startswith(".model") else (tmp_path / name).write_bytes(b"x")
    (tmp_path / "log.jsonl").write_text('{"event": "info"}\n')
    with run_dir.claimed(tmp_path, fresh=False):
        pass
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == [".ramen.lock", "cache", "log.jsonl"]


def test_remove_leftovers_tells_a_file_target_from_a_directory_of_its_stem(tmp_path):
    """Writing wiki.npz removed the leftovers of the directory target wiki (a helper's audit: where a
    directory cannot be swapped in one step, .wiki.old-* may hold the only copy of a dataset)."""
    from ramen.files import remove_leftovers

    dead, tag = _dead_pid(), "0123abcd"
    for name in (f".wiki.old-{dead}-{tag}", f".wiki.tmp-{dead}-{tag}"):
        (tmp_path / name).mkdir()
    (tmp_path / f".wiki.tmp-{dead}-{tag}.npz").write_bytes(b"x")
    remove_leftovers(tmp_path, "wiki.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f".wiki.old-{dead}-{tag}", f".wiki.tmp-{dead}-{tag}"]
    remove_leftovers(tmp_path, "wiki")
    assert not any(tmp_path.iterdir())
