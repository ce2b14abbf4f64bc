"""The collapse watch: the mean pairwise cosine against a loop, and the warning in a training run."""
import itertools
import json
import os
import signal

import numpy as np
import pytest
import torch

import ramen.step as step_module
import ramen.train as train_module
from ramen.collapse import CollapseWatch, collapse_advice, mean_pairwise_cosine
from ramen.config import TrainConfig
from ramen.datasets.synthetic import synthetic


def reference(x: np.ndarray) -> float:
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return float(np.mean([x[i] @ x[j] for i, j in itertools.permutations(range(len(x)), 2)]))


@pytest.mark.parametrize("n", [2, 3, 17])
def test_mean_pairwise_cosine_matches_a_loop(n):
    x = np.random.default_rng(n).normal(size=(n, 8))
    cos = mean_pairwise_cosine(torch.from_numpy(x))
    assert cos.dim() == 0 and float(cos) == pytest.approx(reference(x), abs=1e-6)  # a tensor: no host read


def test_mean_pairwise_cosine_edge_cases():
    assert np.isnan(float(mean_pairwise_cosine(torch.zeros(1, 4))))
    assert np.isnan(float(mean_pairwise_cosine(torch.zeros(0, 4))))
    same = torch.ones(5, 3)  # duplicates: a collapsed batch
    assert float(mean_pairwise_cosine(same)) == pytest.approx(1.0, abs=1e-6)
    opposite = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert float(mean_pairwise_cosine(opposite)) == pytest.approx(-1.0)


def test_watch_warns_once_after_a_full_window_above_the_threshold():
    watch = CollapseWatch(threshold=0.9, window=3)
    assert [watch.update(c) for c in (0.95, 0.99, float("nan"))] == [None, None, None]  # nan is skipped
    message = watch.update(0.97)
    assert message and "collapsing" in message and "lambda_x" in message
    assert watch.update(0.99) is None  # once
    calm = CollapseWatch(threshold=0.9, window=3)
    assert all(calm.update(c) is None for c in (0.95, 0.2, 0.99, 0.5, 0.3))


def test_training_logs_the_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(train_module, "CollapseWatch", lambda **kw: CollapseWatch(threshold=-1.0, window=2, **kw))
    cfg = TrainConfig(encoder="tiny", epochs=1, batch_size=32, lr=1e-3, eval_every=0,
                      encode_batch_size=64, dropout=0.0, graph=False)
    train_module.train(synthetic("tiny", seed=0), cfg, out_dir=tmp_path, progress=False)
    infos = [r for r in map(json.loads, (tmp_path / "log.jsonl").read_text().splitlines())
             if r["event"] == "info" and r.get("warning") == "collapse"]
    assert len(infos) == 1 and "mean cosine" in infos[0]["text"]
    # a plain run is told about its own loss, not about graph weights it does not have
    assert "num_negatives=None, now 10" in infos[0]["text"] and "lambda" not in infos[0]["text"]


def test_advice_names_only_the_settings_that_are_on():
    plain = collapse_advice(TrainConfig(graph=False))
    assert "num_negatives=None" in plain and "lambda" not in plain and "anchor" not in plain
    assert collapse_advice(TrainConfig(graph=False, num_negatives=None)) == (
        "no setting measured to cause a collapse is on")
    paper = collapse_advice(TrainConfig(graph=True, num_negatives=10, reg_num_negatives=10))
    assert "num_negatives=None, now 10" in paper and "reg_num_negatives=None" in paper and "lambda_x" in paper
    allneg = collapse_advice(TrainConfig(graph=True, num_negatives=None, reg_num_negatives=None))
    assert "reg_num_negatives" not in allneg and "lambda_x" in allneg and "num_negatives=None" not in allneg


def test_replay_restores_the_watch_from_a_log():
    steps = [{"event": "step", "spread": {"label": c}} for c in (0.95, 0.99, float("nan"), 0.97)]
    watch = CollapseWatch(threshold=0.9, window=3)
    due = watch.replay(steps)  # due after the last step, and not in the log yet
    assert due and "collapsing" in due and watch.warned and watch.recent == [0.95, 0.99, 0.97]
    logged = CollapseWatch(threshold=0.9, window=3)
    assert logged.replay(steps + [{"event": "info", "warning": "collapse"}]) is None and logged.warned
    assert logged.update(0.99) is None  # once
    short = CollapseWatch(threshold=0.9, window=3)
    assert short.replay(steps[:2]) is None and not short.warned and short.update(0.97)


def warned_after(out) -> list[int]:
    """The global step after which each collapse warning was logged."""
    last, after = 0, []
    for r in map(json.loads, (out / "log.jsonl").read_text().splitlines()):
        if r["event"] == "step":
            last = r["global_step"]
        elif r.get("warning") == "collapse":
            after.append(last)
    return after


@pytest.mark.parametrize("window, stop, at", [(12, "exception", 14), (2, "signal", 4), (4, "signal", 2)])
def test_a_resumed_run_warns_once_after_the_step_an_uninterrupted_one_does(tmp_path, monkeypatch, window, stop, at):
    """The watch was not part of the checkpoint: a resume warned twice (the discarded steps' warning
    kept) or late (its window started empty); a helper's kill test."""
    monkeypatch.setattr(train_module, "CollapseWatch", lambda **kw: CollapseWatch(threshold=-1.0, window=window, **kw))
    data = synthetic("tiny", seed=0)  # 9 steps an epoch
    cfg = TrainConfig(encoder="tiny", epochs=2, batch_size=32, lr=1e-3, eval_every=0, encode_batch_size=64,
                      dropout=0.0, graph=False, cpu_bf16=False)
    train_module.train(data, cfg, out_dir=tmp_path / "full", progress=False)
    assert warned_after(tmp_path / "full") == [window]
    real, calls = step_module.ramen_loss, []

    def stopping(*args, **kwargs):
        calls.append(1)
        if len(calls) == at:
            if stop == "exception":  # inside the step: back to the epoch-end checkpoint
                raise KeyboardInterrupt
            os.kill(os.getpid(), signal.SIGTERM)  # held to the step's end, where the checkpoint is written
        return real(*args, **kwargs)

    monkeypatch.setattr(step_module, "ramen_loss", stopping)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(data, cfg, out_dir=tmp_path / "part", progress=False)
    monkeypatch.setattr(step_module, "ramen_loss", real)
    train_module.train(data, cfg, out_dir=tmp_path / "part", resume=True, progress=False)
    assert warned_after(tmp_path / "part") == [window]
