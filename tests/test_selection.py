"""The graph's weight chosen per run on held-out training queries (`--select-graph-weight`), and the
held-out split it chooses on."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import ramen.selection as selection
from ramen.config import TrainConfig
from ramen.datasets.held_out import hold_out
from ramen.datasets.synthetic import synthetic
from ramen.model import Model


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic("tiny", seed=0)


def tiny_config(**kw) -> TrainConfig:
    base = dict(encoder="tiny", epochs=1, batch_size=32, lr=1e-3, walk_length=10, warmup_epochs=0, prune_every=1,
                eval_every=0, encode_batch_size=64, dropout=0.0, cpu_bf16=False)
    return TrainConfig(**{**base, **kw})


def test_hold_out_takes_a_seeded_slice_of_the_training_queries(tiny_data):
    split = hold_out(tiny_data, 0.2, seed=3)
    n = tiny_data.num_train
    assert len(split.rows) == round(0.2 * n) and split.train.num_train == n - len(split.rows)
    assert np.array_equal(split.rows, hold_out(tiny_data, 0.2, seed=3).rows)
    assert not np.array_equal(split.rows, hold_out(tiny_data, 0.2, seed=4).rows)
    kept = np.setdiff1d(np.arange(n), split.rows)
    assert split.train.train_texts == [tiny_data.train_texts[i] for i in kept]
    assert split.held.test_texts == [tiny_data.train_texts[i] for i in split.rows]
    assert (split.held.test_Y != tiny_data.train_Y[split.rows]).nnz == 0
    assert split.held.label_texts == tiny_data.label_texts and split.held.train_texts == split.train.train_texts
    for name, a in split.held.anchor_sets.items():
        assert (a.test_X_A != tiny_data.anchor_sets[name].train_X_A[split.rows]).nnz == 0
    with pytest.raises(ValueError, match="held-out fraction must be in \\[0, 1\\)"):
        hold_out(tiny_data, 1.0)


def test_hold_out_keeps_everything_but_the_held_queries_training_rows():
    ds = synthetic("tiny", seed=0)
    n = ds.num_train
    ds.label_texts[7] = ds.train_texts[3]  # an article that is also a label, as in Wikispeedia
    ds.test_filter = np.array([[0, 1]])
    split = hold_out(ds, 0.1, seed=0)
    train, held = split.train, split.held
    assert len(split.rows) == 30 and train.num_train == n - 30
    kept = np.setdiff1d(np.arange(n), split.rows)
    for name, a in ds.anchor_sets.items():
        assert (train.anchor_sets[name].train_X_A != a.train_X_A[kept]).nnz == 0
        assert train.anchor_sets[name].label_A.nnz == a.label_A.nnz
        assert train.anchor_sets[name].test_X_A is a.test_X_A  # the test split's links untouched
    assert train.test_texts == ds.test_texts and train.label_texts == ds.label_texts
    assert (train.test_Y != ds.test_Y).nnz == 0 and train.test_filter is ds.test_filter
    if 3 in split.rows:
        assert [int(np.flatnonzero(split.rows == 3)[0]), 7] in held.test_filter.tolist()
    none = hold_out(ds, 0.0)
    assert none.train.num_train == n and none.held.num_test == 0 and len(none.rows) == 0


def test_a_held_out_query_whose_text_is_a_label_is_filtered_like_a_test_query(tiny_data):
    import dataclasses

    ds = dataclasses.replace(tiny_data, label_texts=list(tiny_data.label_texts),
                             test_filter=np.array([[0, 0]], np.int64))  # a dataset that filters own texts
    ds.label_texts[5] = ds.train_texts[0]  # training query 0 is also label 5
    split = hold_out(ds, 0.5, seed=0)
    r = int(np.searchsorted(split.rows, 0))
    assert 0 in split.rows  # seed 0 holds training query 0 out
    assert split.held.test_filter.tolist() == [[r, 5]]
    assert hold_out(tiny_data, 0.5, seed=0).held.test_filter is None  # a dataset without a filter: none


def test_select_graph_weight_trains_each_weight_and_the_best_on_everything(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "sel"
    model, sel = selection.select_graph_weight(tiny_data, tiny_config(), weights=[0, 0.1], out_dir=out, progress=False)
    recorded = json.loads((out / "selection.json").read_text())
    assert recorded["weights"] == [0.0, 0.1] and recorded["chosen"] == sel.chosen
    best = max(sel.weights, key=lambda w: (sel.held_out[f"{w:g}"]["P@1"], sel.held_out[f"{w:g}"]["PSP@1"], -w))
    assert sel.chosen == best
    # each score is its candidate's held-out P@1, trained without those queries
    split = hold_out(tiny_data, 0.1, seed=0)
    for w in sel.weights:
        m = Model.load(out / f"weight-{w:g}" / "model").evaluate(split.held, k=1, progress=False)
        assert float(m["P"][0]) == sel.held_out[f"{w:g}"]["P@1"]
    # the final run: every training query, the chosen weight
    final = json.loads((out / "config.json").read_text())
    assert final["graph"] == (sel.chosen > 0) and (sel.chosen == 0 or final["lambda_x"] == sel.chosen)
    assert json.loads((out / f"weight-{0.1:g}" / "config.json").read_text())["graph"]
    assert isinstance(model, Model) and (out / "model").is_dir()
    # an interrupted selection resumes: finished candidates are loaded, not trained again
    calls = []
    real = selection.Model.load
    monkeypatch.setattr(selection.Model, "load", staticmethod(lambda p: calls.append(p) or real(p)))
    import ramen.train as train_module
    trained = []
    real_train = train_module.train
    monkeypatch.setattr(train_module, "train", lambda *a, **kw: trained.append(kw.get("out_dir")) or real_train(*a, **kw))
    (out / "model").rename(tmp_path / "final-model")  # as if stopped before the final run finished
    _, again = selection.select_graph_weight(tiny_data, tiny_config(), weights=[0, 0.1], out_dir=out, resume=True,
                                             progress=False)
    assert again == sel and len(calls) == 2 and trained == [out]


def test_resuming_a_selection_started_otherwise_is_an_error_naming_what_differs(tiny_data, tmp_path):
    import dataclasses

    out = tmp_path / "sel"
    selection.select_graph_weight(tiny_data, tiny_config(), weights=[0], out_dir=out, progress=False)
    plan = json.loads((out / selection.PLAN_JSON).read_text())
    assert plan["held_out"] == 0.1 and set(plan["data"]) >= {"training queries", "labels", "test split"} and "graph" not in plan["config"]

    def resume(data=tiny_data, cfg=tiny_config(), **kw):
        return selection.select_graph_weight(data, cfg, weights=kw.pop("weights", [0]), out_dir=out, resume=True,
                                             progress=False, **kw)

    with pytest.raises(ValueError, match="other epochs") as err:
        resume(cfg=tiny_config(epochs=2))
    assert str(out) in str(err.value)
    with pytest.raises(ValueError, match="other held_out"):
        resume(held_out=0.2)
    with pytest.raises(ValueError, match="other seed"):
        resume(cfg=tiny_config(seed=1))
    other = dataclasses.replace(tiny_data, train_texts=[t + "!" for t in tiny_data.train_texts])
    with pytest.raises(ValueError, match=r"other data \(training queries\)"):
        resume(data=other)
    relabelled = dataclasses.replace(tiny_data, train_Y=tiny_data.train_Y[::-1].tocsr())  # same texts, sizes
    with pytest.raises(ValueError, match=r"other data \(training queries\)"):
        resume(data=relabelled)
    before = json.loads((out / selection.PLAN_JSON).read_text())
    assert before == plan  # a refused resume leaves the plan as it was
    # the weight is the candidate's, not the selection's: another lambda or --graph resumes
    _, sel = resume(cfg=tiny_config(graph=True, lambda_x=0.5))
    assert sel.chosen == 0
    (out / selection.PLAN_JSON).write_text("{")
    with pytest.raises(ValueError, match="not a selection plan"):
        resume()
    # without resume a new selection starts over, whatever was there
    selection.select_graph_weight(tiny_data, tiny_config(epochs=2), weights=[0], out_dir=out, progress=False)
    assert json.loads((out / selection.PLAN_JSON).read_text())["config"]["epochs"] == 2


def test_a_tie_goes_to_the_smaller_weight(tiny_data, monkeypatch):
    monkeypatch.setattr(Model, "evaluate", lambda self, ds, **kw: {"P": np.array([0.5]), "PSP": np.array([0.4])})
    _, sel = selection.select_graph_weight(tiny_data, tiny_config(), weights=[0.1, 0], progress=False)
    assert sel.chosen == 0


@pytest.mark.parametrize("weights, match", [([], "at least one"), ([-0.1], "finite and >= 0"),
                                            ([float("nan")], "finite and >= 0"), ([0.1, 0.1], "must differ"),
                                            (["x"], "must be numbers")])
def test_bad_weights_are_clear_errors(tiny_data, weights, match):
    with pytest.raises(ValueError, match=match):
        selection.select_graph_weight(tiny_data, tiny_config(), weights=weights, progress=False)
    with pytest.raises(ValueError, match="held_out must be in \\(0, 1\\)"):
        selection.select_graph_weight(tiny_data, tiny_config(), held_out=0.0, progress=False)


def test_the_cli_selects_and_records_the_choice(tmp_path, ramen_env):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "ramen", "train", "--data", "synthetic:tiny", "--encoder", "tiny", "--out", str(out),
           "--epochs", "1", "--batch-size", "32", "--lr", "1e-3", "--walk-length", "10", "--warmup-epochs", "0",
           "--eval-every", "0", "--select-graph-weight", "0", "0.1"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=ramen_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "graph weight chosen on" in done.stdout and "weight 0.1: held-out P@1" in done.stdout
    assert json.loads((out / "run.json").read_text())["select_graph_weight"] == [0.0, 0.1]
    assert json.loads((out / "selection.json").read_text())["weights"] == [0.0, 0.1]
    bad = subprocess.run(cmd[:-2] + ["-1"], capture_output=True, text=True, cwd=tmp_path, env=ramen_env)
    assert bad.returncode != 0 and "--select-graph-weight" in bad.stderr
    # --resume with more weights adds candidates (they used to be ignored without a word)
    more = [sys.executable, "-m", "ramen", "train", "--out", str(out), "--resume", "--select-graph-weight", "0", "0.1",
            "0.03"]
    done = subprocess.run(more, capture_output=True, text=True, cwd=tmp_path, env=ramen_env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "weight 0.03: held-out P@1" in done.stdout
    assert json.loads((out / "run.json").read_text())["select_graph_weight"] == [0.0, 0.1, 0.03]
    assert json.loads((out / "selection.json").read_text())["weights"] == [0.0, 0.1, 0.03]


def test_settings_the_candidates_leave_unread_are_refused_before_the_first_one_trains(tiny_data, tmp_path):
    """The weight-0 candidate (its graph settings reset) trained in full before the next was refused."""
    with pytest.raises(ValueError, match="select_graph_weight: cluster_size=16 only applies with cluster_batching"):
        selection.select_graph_weight(tiny_data, tiny_config(cluster_size=16), weights=[0, 0.1],
                                      out_dir=tmp_path / "sel", progress=False)
    assert not (tmp_path / "sel" / "weight-0").exists()


@pytest.mark.parametrize("settings, message", [
    (dict(lambdas={"hyperlink": [0.5, 0.0]}), r"cannot keep lambdas=\{'hyperlink': \[0.5, 0.0\]\}"),
    (dict(lambdas={"category": [0.0, 0.0]}), "cannot keep lambdas"),  # a set turned off would come back on
    (dict(aug_gt=True), "aug_gt=True trains without the regulariser"),
])
def test_settings_a_selection_would_override_are_refused(tiny_data, tmp_path, settings, message):
    """Per-set weights from a config were replaced by each candidate's single weight without a word,
    and an AugGT config has no regulariser whose weight to choose."""
    with pytest.raises(ValueError, match=message):
        selection.select_graph_weight(tiny_data, tiny_config(**settings), weights=[0, 0.1],
                                      out_dir=tmp_path / "sel", progress=False)
    assert not (tmp_path / "sel").exists()


def test_a_new_selection_never_resumes_with_the_candidates_of_the_one_it_replaced(tiny_data, tmp_path, monkeypatch):
    """A selection started over (another lr) and stopped in its first candidate, then resumed, scored
    the replaced selection's candidates as its own and chose by them (a helper's kill test)."""
    import ramen.step as step_module
    import ramen.train as train_module

    out, ref = tmp_path / "sel", tmp_path / "ref"
    selection.select_graph_weight(tiny_data, tiny_config(lr=1e-4), weights=[0, 0.1], out_dir=out, progress=False)
    _, want = selection.select_graph_weight(tiny_data, tiny_config(), weights=[0, 0.1], out_dir=ref, progress=False)
    real_loss, calls = step_module.ramen_loss, []

    def stopped(*args, **kwargs):  # inside the new selection's first candidate's second step
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(step_module, "ramen_loss", stopped)
    with pytest.raises(KeyboardInterrupt):
        selection.select_graph_weight(tiny_data, tiny_config(), weights=[0, 0.1], out_dir=out, progress=False)
    monkeypatch.setattr(step_module, "ramen_loss", real_loss)
    assert sorted(p.name for p in out.glob("weight-*")) == ["weight-0"]
    assert not (out / "weight-0" / "model").exists() and not (out / "checkpoint.safetensors").exists()
    assert not (out / "model").exists() and not (out / "selection.json").exists()  # nor taken for the new one's
    real_train, trained = train_module.train, []
    monkeypatch.setattr(train_module, "train", lambda *a, **kw: trained.append(kw["out_dir"]) or real_train(*a, **kw))
    _, got = selection.select_graph_weight(tiny_data, tiny_config(), weights=[0, 0.1], out_dir=out, resume=True,
                                           progress=False)
    assert trained == [out / "weight-0", out / "weight-0.1", out] and got == want


def test_a_selection_refused_at_setup_leaves_the_finished_one_in_its_directory(tiny_data, tmp_path):
    """A new selection refused by its first candidate's checks (an encoder that is not there) or by a
    graph candidate's (an anchor set the data lacks) deleted the finished selection it would replace."""
    out = tmp_path / "sel"
    selection.select_graph_weight(tiny_data, tiny_config(), weights=[0, 0.1], out_dir=out, progress=False)

    def tree():
        return sorted((str(p.relative_to(out)), p.stat().st_mtime_ns) for p in out.rglob("*")
                      if p.is_file() and p.name != ".ramen.lock")

    before = tree()
    with pytest.raises((ValueError, OSError)):
        selection.select_graph_weight(tiny_data, tiny_config(encoder=str(tmp_path / "no-encoder")), weights=[0, 0.1],
                                      out_dir=out, progress=False)
    with pytest.raises(ValueError, match="anchor sets"):
        selection.select_graph_weight(tiny_data, tiny_config(anchor_sets=["nope"]), weights=[0, 0.1], out_dir=out,
                                      progress=False)
    assert tree() == before


def test_a_candidate_stopped_after_saving_its_model_is_finished_by_the_resume(tiny_data, tmp_path):
    """A candidate stopped between its model/ and its config.json was taken as finished: it never got
    its curves and config (a helper's kill test)."""
    out = tmp_path / "sel"
    selection.select_graph_weight(tiny_data, tiny_config(), weights=[0], out_dir=out, progress=False)
    cand = out / "weight-0"
    expected = sorted(p.name for p in cand.iterdir())
    for name in ("curves.png", "config.json"):
        (cand / name).unlink()
    for name in ("model", "config.json", "curves.png", "selection.json", "checkpoint.safetensors"):
        path = out / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    selection.select_graph_weight(tiny_data, tiny_config(), weights=[0], out_dir=out, resume=True, progress=False)
    assert sorted(p.name for p in cand.iterdir()) == expected and (out / "model").is_dir()
