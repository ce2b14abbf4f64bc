"""`python -m ramen.bench --quick`: every suite runs and reports ours beside a peer."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_all_suites_quick(tmp_path, ramen_env):
    out = tmp_path / "bench.json"
    # from outside the source tree, as a user of the installed package runs it
    proc = subprocess.run([sys.executable, "-m", "ramen.bench", "--quick", "--json", str(out)], cwd=tmp_path,
                          capture_output=True, text=True, env=ramen_env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    suites = {r["suite"] for r in report["rows"]}
    assert suites >= {"data", "graph", "triplet", "search", "encode", "train", "accuracy", "gpu"}
    assert "cpu" in report["machine"] and "machine:" in proc.stdout
    compared = [r for r in report["rows"] if r["peer"] is not None]
    # a ratio is positive; an error against a tolerance (lower is better) may be exactly 0
    assert compared and all(r["ratio"] is not None and (r["ratio"] > 0 or r["better"] == "lower" and r["ratio"] == 0)
                            for r in compared)


class FakeSuites:
    """Stands in for importlib in ramen.bench.__main__: records which suites ran, each one row."""

    def __init__(self, json_path: Path | None = None):
        self.ran: list[str] = []
        self.json_path = json_path

    def import_module(self, name: str):
        from types import SimpleNamespace

        from ramen.bench.common import Row

        def run(quick: bool, **extra):
            if self.json_path is not None:  # the check's temporary file is gone before any suite runs
                assert not list(self.json_path.parent.glob("*.tmp"))
            self.ran.append(name.rsplit(".", 1)[-1])
            return [Row(suite=self.ran[-1], case="fake", metric="time", ours=1.0, unit="s")]
        return SimpleNamespace(run=run)


def test_an_unwritable_json_path_or_a_stray_size_stops_before_any_suite(tmp_path, monkeypatch, capsys):
    """--json /proc/x.json ran every suite, then crashed writing; --size without the scale suite was
    ignored. Both are refused before the first suite now."""
    import ramen.bench.__main__ as bench

    fake = FakeSuites()
    monkeypatch.setattr(bench, "importlib", fake)
    monkeypatch.setattr(bench, "machine_info", lambda: {"cpu": "test"})
    for argv, message in [(["--suite", "train", "--json", "/proc/ramen-bench-test.json"], "cannot write"),
                          (["--suite", "train", "--size", "tiny"], "--size tiny: sets the scale suite's data size"),
                          (["--size", "0.1"], "scale suite is not selected")]:
        with pytest.raises(SystemExit) as exit_info:
            bench.main(argv)
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert fake.ran == []
    out = tmp_path / "new" / "bench.json"
    fake.json_path = out
    assert bench.main(["--suite", "train", "--suite", "scale", "--size", "tiny", "--json", str(out)]) == 0
    assert fake.ran == ["train", "scale"] and json.loads(out.read_text())["rows"][0]["suite"] == "train"
    assert [p.name for p in out.parent.iterdir()] == ["bench.json"]


def test_the_help_and_the_readme_say_which_suites_run(monkeypatch, capsys):
    """--help said 'every suite but accuracy, which --quick adds': gpu and scale are left out too, and
    --quick adds all three. The help, the README and what runs now agree."""
    import ramen.bench.__main__ as bench

    with pytest.raises(SystemExit):
        bench.main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    left_out = [name for name in bench.SUITES if name not in bench.DEFAULT_SUITES]
    assert left_out == ["accuracy", "gpu", "scale"]
    assert "default: every suite but accuracy, gpu and scale; --quick without --suite runs all 9" in help_text
    assert "Without `--suite` it runs every suite but accuracy, gpu and scale" in readme
    usage = readme[readme.index("`python -m ramen.bench [--suite "):].split("`")[1]  # its suite choices, all
    assert sorted(usage.split("--suite ")[1].split("]")[0].split("|")) == sorted(bench.SUITES)
    fake = FakeSuites()
    monkeypatch.setattr(bench, "importlib", fake)
    monkeypatch.setattr(bench, "machine_info", lambda: {"cpu": "test"})
    bench.main([])
    assert fake.ran == bench.DEFAULT_SUITES and not set(left_out) & set(fake.ran)
    fake.ran.clear()
    bench.main(["--quick"])
    assert sorted(fake.ran) == sorted(bench.SUITES)


def test_search_case_too_large_for_memory_is_skipped_with_a_message(capsys):
    from ramen.bench.search import _fits

    peers = {"faiss-hnsw": object(), "hnswlib": None}  # None: a peer that is not installed
    assert _fits("lowrank 1Kx8", 1_000, 8, peers)
    assert not _fits("lowrank 1000000000Kx768", 10**12, 768, peers)
    assert "lowrank 1000000000Kx768: skipped: its indexes need about" in capsys.readouterr().out


def test_gpu_suite_without_a_gpu_checks_the_op_and_says_what_it_skipped(tmp_path, ramen_env):
    """`python -m ramen.bench --suite gpu` from outside the source tree: on a machine without a GPU
    the op is checked on the CPU kernels at an H100's M values and every GPU part is a skipped row."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the suite runs in full")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "-m", "ramen.bench", "--suite", "gpu", "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, env=ramen_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    checked = [r for r in rows if r["metric"] == "max rel err"]
    # --quick: the smallest two and the H100's shared-memory limit and one past it
    assert [r["case"].split(", ")[1] for r in checked] == ["M 1", "M 300", "M 17796", "M 17797"]
    assert all(r["ours"] <= r["peer"] for r in checked)
    skipped = [r for r in rows if r["metric"] == "skipped"]
    assert len(skipped) == 4 and all(r["settings"]["why"] for r in skipped)
    assert proc.stdout.count("gpu: skipped") == 4


def test_gpu_suite_training_parts_run_on_the_cpu():
    import numpy as np
    import torch

    from ramen.bench import gpu
    from ramen.bench.train import make_encoder
    from ramen.config import TrainConfig

    losses = gpu.training_losses(torch.device("cpu"), 3, encoder="tiny")
    assert len(losses) == 3 and np.isfinite(losses).all()
    assert losses == gpu.training_losses(torch.device("cpu"), 3, encoder="tiny")  # the same steps again
    distilbert = make_encoder("distilbert-random", TrainConfig())
    assert distilbert.dim == 768 and sum(p.numel() for p in distilbert.parameters()) > 60e6


def test_accuracy_suite_without_the_source_tree_compares_the_recipes(monkeypatch):
    """From an installed wheel (no benchmarks/ to load the study from), the accuracy suite trains
    the named recipes against plain with one budget."""
    from ramen.bench import accuracy

    monkeypatch.setattr(accuracy, "benchmarks_dir", lambda: None)
    rows = accuracy.run(quick=True)
    assert [(r.case, r.metric) for r in rows] == [
        (f"synthetic-tiny-seed0/{name}", key) for name in ("light-graph", "paper") for key in ("P@1", "PSP@1")]
    assert all(r.peer_name == "plain" and 0 <= r.ours <= 100 and r.peer is not None for r in rows)


def test_every_peer_ships_in_the_package():
    from ramen.bench.common import import_peer

    for name in ("numba_walk", "torch_triplet", "xc_text_parse", "exact_topk", "oak_style"):
        assert import_peer(name).__name__ == f"ramen.bench.peers.{name}"


def test_scale_suite_runs_end_to_end_quick(tmp_path, ramen_env):
    """`python -m ramen.bench --suite scale --quick` from outside the source tree: every stage of a
    run on synthetic small, each with its wall time, throughput and resident memory (issue 26)."""
    out = tmp_path / "scale.json"
    proc = subprocess.run([sys.executable, "-m", "ramen.bench", "--suite", "scale", "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, env=ramen_env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    cases = [r["case"] for r in rows]
    for stage in ("generate", "load dataset", "tokenise", "reload the token cache", "densify", "sample",
                  "embed", "prune kernel", "label index build", "label index tuning", "exact blocked top-k",
                  "seeded subset", "checkpoint write", "resume", "whole suite"):
        assert any(stage in c for c in cases), stage
    stages = [r for r in rows if r["case"] != "whole suite"]
    assert all(r["settings"]["wall_s"] >= 0 and 0 < r["settings"]["peak_rss_GB"] < 12 and r["ours"] > 0
               for r in stages)
    sampling = next(r for r in rows if r["case"].startswith("sample"))
    assert sampling["peer_name"] == "target" and sampling["peer"] == 20.0 and sampling["unit"] == "ms/batch"
    assert "peak RSS GB" in proc.stdout and "scale: size small" in proc.stdout


def test_scale_suite_sizes():
    from ramen.bench.scale import dataset_config

    assert dataset_config("small") == ("small", {})
    preset, overrides = dataset_config("0.1")
    assert preset == "paper" and overrides["num_train"] == 69_308 and overrides["hyperlink_anchors"] == 245_840
    for bad in ("huge", "0", "1.5"):
        with pytest.raises(ValueError, match="size"):
            dataset_config(bad)
