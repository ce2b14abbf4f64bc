"""A run directory: a new run overwrites only what a run wrote, and one training at a time holds it."""
import fcntl
import json
import os

import pytest

from ramen import run_dir
from ramen.__main__ import main
from ramen.config import TrainConfig
from ramen.datasets.synthetic import synthetic
from ramen.run_dir import RunDirError
from ramen.train import train


def tiny_config(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(encoder="tiny", epochs=1, batch_size=32, lr=1e-3, eval_every=0, cpu_bf16=False),
                          **kw})


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic("tiny", seed=0)


@pytest.mark.parametrize("name, content", [
    ("config.json", {"architectures": ["BertModel"], "hidden_size": 384}),  # a sentence-transformers model's
    ("log.jsonl", "my own notes\n"),
    ("run.json", "[1, 2]"),
    ("model", None),  # a directory of the user's, not a saved ramen model
])
def test_a_new_run_refuses_to_overwrite_what_no_run_wrote(tiny_data, tmp_path, name, content):
    """train used to overwrite these (model/ was found only after the whole training, when saving)."""
    out = tmp_path / "out"
    out.mkdir()
    target = out / name
    if content is None:
        target.mkdir()
        (target / "weights.bin").write_bytes(b"mine")
    else:
        target.write_text(content if isinstance(content, str) else json.dumps(content))
    before = sorted(p.name for p in out.iterdir())
    with pytest.raises(RunDirError, match=f"holds {name}, which a training run would overwrite"):
        train(tiny_data, tiny_config(), out_dir=out, progress=False)
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written, not even a log


def test_a_new_run_replaces_an_earlier_run_and_leaves_other_files(tiny_data, tmp_path):
    out = tmp_path / "out"
    train(tiny_data, tiny_config(), out_dir=out, progress=False)
    (out / "notes.txt").write_text("mine")
    (out / ".config.tmp-1-abc.json").write_text("{")  # a write cut short: not one of the names a run writes
    train(tiny_data, tiny_config(seed=1), out_dir=out, progress=False)
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert (out / "notes.txt").read_text() == "mine"


def test_a_directory_another_process_trains_in_is_refused(tiny_data, tmp_path):
    """Two trainings in one directory used to interleave their logs and overwrite each other's checkpoint."""
    out = tmp_path / "out"
    out.mkdir()
    with open(out / run_dir.LOCK, "w") as held:  # another open file: flock conflicts as with another process
        held.write("4242")
        held.flush()
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RunDirError, match=r"in use by another training \(pid 4242\)"):
            train(tiny_data, tiny_config(), out_dir=out, progress=False)
        assert not (out / "log.jsonl").exists()
    train(tiny_data, tiny_config(), out_dir=out, progress=False)  # released: it trains
    assert (out / "model" / "model.json").is_file()


def test_a_claim_nests_within_a_process_and_is_released_by_the_outer_one(tmp_path):
    with run_dir.claimed(tmp_path, fresh=True):
        with run_dir.claimed(tmp_path, fresh=False):  # the CLI claims, then train() claims again
            pass
        assert (tmp_path / run_dir.LOCK).read_text() == str(os.getpid())
        with open(tmp_path / run_dir.LOCK) as other, pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / run_dir.LOCK) as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free once the outer claim ends
    with run_dir.claimed(None, fresh=True), run_dir.claimed(tmp_path / "x", fresh=True, main=False):
        pass  # no directory, or a rank that does not write: nothing claimed
    assert not (tmp_path / "x").exists()


def test_cli_names_the_data_by_absolute_path_so_a_run_evaluates_and_resumes_from_anywhere(tmp_path, monkeypatch,
                                                                                         capsys):
    """run.json kept --data as typed, so `evaluate` from another directory found no data and --resume
    with the same data named by another path was refused."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main(["data", "synth", "--size", "tiny", "--out", "tiny.npz"]) == 0  # a .npz file: --data takes it too
    run = ["train", "--data", "tiny.npz", "--encoder", "tiny", "--epochs", "1", "--batch-size", "32",
           "--eval-every", "0", "--no-cpu-bf16", "--out", "run"]
    assert main(run) == 0
    assert json.loads((work / "run" / "run.json").read_text())["data"] == str(work / "tiny.npz")
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["evaluate", str(work / "run"), "-k", "1"]) == 0
    assert "test metrics" in capsys.readouterr().out
    assert main(["train", "--out", str(work / "run"), "--resume", "--data", str(work / "tiny.npz")]) == 0
    capsys.readouterr()
    # other data under --data: the checkpoint's fingerprint of the data it trained on refuses it
    assert main(["data", "synth", "--size", "tiny", "--seed", "1", "--out", "other.npz"]) == 0
    assert main(["train", "--out", str(work / "run"), "--resume", "--data", "other.npz"]) == 2
    assert "on other data than it was trained on" in capsys.readouterr().err
    assert json.loads((work / "run" / "run.json").read_text())["data"] == str(work / "tiny.npz")


def test_cli_refuses_resume_with_overwrite_and_says_when_there_is_nothing_to_resume(tmp_path, monkeypatch, capsys):
    import ramen.__main__ as cli

    out = tmp_path / "run"
    with pytest.raises(SystemExit, match="--resume continues the run in --out, --overwrite starts it over"):
        main(["train", "--out", str(out), "--resume", "--overwrite"])

    def interrupted(spec):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_dataset", interrupted)  # Ctrl-C before the first checkpoint
    assert main(["train", "--data", "synthetic:tiny", "--encoder", "tiny", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "--resume" not in err  # it used to suggest a --resume that fails


def test_a_file_system_without_locks_trains_unlocked_and_says_so(tiny_data, tmp_path, monkeypatch, capsys):
    """On Lustre mounted noflock or NFS without lockd, flock fails with ENOSYS / ENOLCK: the run used
    to stop there; it trains without the lock, with a warning."""
    import errno

    def no_locks(f, op):
        raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))

    monkeypatch.setattr(run_dir.fcntl, "flock", no_locks)
    train(tiny_data, tiny_config(), out_dir=tmp_path / "out", progress=False)
    assert (tmp_path / "out" / "model" / "model.json").is_file()
    assert "cannot be locked" in capsys.readouterr().err


def test_a_resume_of_a_missing_directory_creates_nothing(tmp_path):
    with pytest.raises(SystemExit, match="holds no run"):
        main(["train", "--out", str(tmp_path / "typo"), "--resume"])
    assert not (tmp_path / "typo").exists()


def test_an_earlier_versions_run_directory_is_its_own(tmp_path):
    """config.json of a run made before a field was renamed (here log_every) and a log whose first
    record a kill cut short are still a run's, so a new run may replace them."""
    (tmp_path / "config.json").write_text(json.dumps({"encoder": "tiny", "epochs": 2, "lr": 1e-3, "log_every": 10}))
    (tmp_path / "log.jsonl").write_text('{"event": "info", "te')
    run_dir.check_fresh(tmp_path)


def test_discard_removes_only_what_a_run_wrote(tmp_path):
    cand = tmp_path / "weight-0.1"
    (cand / "model").mkdir(parents=True)
    (cand / "model" / "model.json").write_text("{}")
    (cand / "log.jsonl").write_text('{"event": "info"}\n')
    (cand / "checkpoint.safetensors").write_bytes(b"x")
    (cand / "notes.txt").write_text("mine")
    (cand / "config.json").write_text('{"architectures": []}')  # not a run's: a model's config
    run_dir.discard(cand)
    assert sorted(p.name for p in cand.iterdir()) == ["config.json", "notes.txt"]
    (cand / "notes.txt").unlink()
    (cand / "config.json").write_text('{"encoder": "tiny", "epochs": 1, "lr": 0.001}')
    run_dir.discard(cand)
    assert not cand.exists()
