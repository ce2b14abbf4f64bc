"""The accuracy study (benchmarks/accuracy.py) end to end in its quick mode, its resume and skip
logic, the held-out slice, the OAK-style combiner against a plain loop, and the suite's rows."""
import json
import math
import os
import shutil
import signal

import numpy as np
import pytest
import scipy.sparse as sp

import ramen.train as train_module
from ramen.bench import accuracy as suite
from ramen.train import CHECKPOINT

study = suite.load_study()
peer = study._oak_peer()
report_module = study._report()
QUICK = study.Study.quick(latency_queries=8)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory):
    runs = tmp_path_factory.mktemp("accuracy") / "runs"
    results = study.run_study(QUICK, runs, progress=False)
    report, plots = study.write_report(runs, runs.parent / "accuracy.md")
    return runs, results, report, plots


def test_quick_study_writes_one_sane_result_per_arm(quick_runs):
    runs, results, _, _ = quick_runs
    assert [r["arm"] for r in results] == list(study.PAPER_ARMS)
    for r in results:
        run = study.run_dir(runs, "synthetic-tiny", r["arm"], 0)
        assert json.loads((run / "result.json").read_text()) == r
        assert (run / "model" / "model.json").exists() and (run / CHECKPOINT).exists()
        assert r["config"] == study.arm_config(study.QUICK_BUDGET, r["arm"], 0).to_dict()
        assert r["data"]["held_out"] == 30 and r["data"]["train"] == 270
        m = r["metrics"]
        for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5"):
            assert 0.0 <= m[key] <= 1.0, (r["arm"], key, m[key])
        assert m["P@1"] > 0.02  # chance P@1 is 1.6%
        d = r["deciles"]
        assert len(d["labels"]) == 10 and sum(d["labels"]) == 150
        for k in (1, 5):  # the deciles' contributions add up to the overall value
            assert math.isclose(sum(row[k - 1] for row in d["P"]), m[f"P@{k}"], abs_tol=1e-9)
            assert math.isclose(sum(row[k - 1] for row in d["PSP"]), m[f"PSP@{k}"], abs_tol=1e-9)
        assert r["steps"] == study.QUICK_BUDGET["epochs"] * (270 // 32) and r["step_seconds"]["median"] > 0
        assert r["train_seconds"] > 0 and not r["resumed"]
        assert {"torch", "numpy", "cpu"} <= set(r["machine"])
    by_arm = {r["arm"]: r for r in results}
    logs = {a: (study.run_dir(runs, "synthetic-tiny", a, 0) / "log.jsonl").read_text() for a in by_arm}
    assert '"Rx/' not in logs["plain"] and '"Rz/' not in logs["plain"] and '"Rx/' not in logs["auggt"]
    assert '"Rx/' not in logs["no-query-graph"] and '"Rz/' in logs["no-query-graph"]
    assert '"Rz/' not in logs["no-label-graph"] and '"Rx/' in logs["no-label-graph"]
    assert '"prune"' in logs["ramen"] and '"prune"' not in logs["no-prune"]


def test_heldout_metrics_match_a_direct_evaluation_and_are_cached(quick_runs):
    runs, _, _, _ = quick_runs
    spec = study.dataset_specs()["synthetic-tiny"]
    data = study.prepare(spec, QUICK.held_out)
    got = study.heldout_run(data, spec, "plain", 0, runs)
    # the same encoder evaluated through Model.evaluate on a dataset whose test split is the held-out slice
    from ramen.model import Model
    held_as_test = data.train.__class__(train_texts=data.train.train_texts, test_texts=data.held.test_texts,
                                        label_texts=data.train.label_texts, train_Y=data.train.train_Y,
                                        test_Y=data.held.test_Y).validate()
    ref = Model.load(study.run_dir(runs, "synthetic-tiny", "plain", 0) / "model").evaluate(held_as_test, progress=False)
    assert math.isclose(got["P@1"], float(ref["P"][0]), abs_tol=1e-9)
    assert math.isclose(got["PSP@5"], float(ref["PSP"][4]), abs_tol=1e-9)
    # the run evaluated the same slice during training (its curves), with the same result at the end
    curves = json.loads((study.run_dir(runs, "synthetic-tiny", "plain", 0) / "result.json").read_text())["curves"]
    assert [c["epoch"] for c in curves["heldout"]] == [1] and [c["epoch"] for c in curves["test"]] == [1]
    assert math.isclose(curves["heldout"][-1]["P@1"], got["P@1"], abs_tol=1e-9)
    assert math.isclose(curves["heldout"][-1]["PSP@5"], got["PSP@5"], abs_tol=1e-9)
    cached = json.loads((study.run_dir(runs, "synthetic-tiny", "plain", 0) / "heldout.json").read_text())
    assert cached["metrics"] == got and cached["queries"] == 30
    assert study.heldout_run(data, spec, "plain", 7, runs) is None  # no such run
    table = study.heldout_table(study.Study.quick(arms=("plain", "ramen")), runs)
    assert "| plain | 1 |" in table and "| ramen | 1 |" in table and "held-out P@1" in table


def test_oak_style_baseline_reproduces_the_encoder_and_times_three_pipelines(quick_runs):
    runs, results, _, _ = quick_runs
    by_arm = {r["arm"]: r for r in results}
    for arm in study.OAK_ARMS:
        oak = json.loads((study.run_dir(runs, "synthetic-tiny", arm, 0) / "oak.json").read_text())
        # its own encode + exact search path gives the toolkit's Model.evaluate numbers exactly
        assert oak["encoder_only"]["metrics"] == pytest.approx(by_arm[arm]["metrics"], abs=1e-12)
        assert len(oak["grid"]) == len(QUICK.oak_m) * len(QUICK.oak_alpha)
        best = max(g["P@1"] for g in oak["grid"])
        chosen = oak["chosen"]
        assert chosen["m"] in QUICK.oak_m and chosen["alpha"] in QUICK.oak_alpha
        assert next(g for g in oak["grid"] if (g["m"], g["alpha"]) == (chosen["m"], chosen["alpha"]))["P@1"] == best
        if chosen["alpha"] == 0.0:
            assert oak["oak_style"]["metrics"] == oak["encoder_only"]["metrics"]
        assert "oracle_links" in oak and oak["oracle_links"]["alpha"] in QUICK.oak_alpha
        for method in ("encoder_only", "oak_style", "oracle_links"):
            assert 0.0 <= oak[method]["metrics"]["P@1"] <= 1.0
            lat = oak["latency_ms"][method]
            assert 0 < lat["p50"] <= lat["p99"]
        assert oak["latency_setup"]["queries"] == 8


def test_report_has_tables_plots_and_keeps_the_findings(quick_runs):
    runs, _, report, plots = quick_runs
    text = report.read_text()
    assert "| arm | seeds | P@1 | P@3 | P@5 | nDCG@5 | PSP@1 | PSP@5 |" in text
    for arm in study.PAPER_ARMS:
        assert f"| {arm} | 1 |" in text
    assert "Graph at inference" in text and "OAK-style: retrieved anchors" in text
    assert "1 (head)" in text and "10 (tail)" in text
    assert {p.name for p in plots} == {"accuracy_synthetic-tiny_arms.png", "accuracy_synthetic-tiny_deciles.png"}
    for p in plots:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000
        assert f"]({p.name})" in text
    # a number in the table is the result's, in percent
    plain = json.loads((study.run_dir(runs, "synthetic-tiny", "plain", 0) / "result.json").read_text())
    assert f"| plain | 1 | {100 * plain['metrics']['P@1']:.2f} |" in text
    # the lead's findings survive a regeneration
    report.write_text(text.replace(report_module.FINDINGS_PLACEHOLDER, "RAMEN measured X."))
    study.write_report(runs, report)
    assert "RAMEN measured X." in report.read_text() and report_module.FINDINGS_PLACEHOLDER not in report.read_text()


def test_report_of_chosen_arms_in_their_order(quick_runs, tmp_path):
    runs, _, _, _ = quick_runs
    out, _ = study.write_report(runs, tmp_path / "graph_levers.md", arms=["ramen", "plain"], title="Levers")
    text = out.read_text()
    assert text.startswith("# Levers\n") and "--arms ramen plain" in text
    assert text.index("| ramen | 1 |") < text.index("| plain | 1 |") and "| auggt | 1 |" not in text
    with pytest.raises(ValueError, match="for arms pull"):
        study.write_report(runs, tmp_path / "none.md", arms=["pull"])
    with pytest.raises(ValueError, match="--versus takes a control"):
        study.write_report(runs, tmp_path / "v.md", versus=[["plain"]])
    with pytest.raises(ValueError, match="unknown arm.*nosuch"):
        study.write_report(runs, tmp_path / "v.md", versus=[["plain", "nosuch"]])
    assert all(arm in study.ARM_TITLES for arm in study.ARMS)


def test_report_compares_arms_to_a_matched_control(quick_runs, tmp_path):
    runs, results, _, _ = quick_runs
    out, _ = study.write_report(runs, tmp_path / "v.md", versus=[["ramen", "no-prune"]])
    text = out.read_text()
    assert "--versus ramen no-prune" in text
    table = text[text.index("Difference to `ramen`, paired by seed"):]
    table = table[:table.index("\n\n", table.index("| arm |"))]
    m = {r["arm"]: r["metrics"] for r in results}
    delta = 100 * (m["no-prune"]["P@1"] - m["ramen"]["P@1"])
    assert table.count("\n| ") == 2  # the header and no-prune alone
    assert f"| no-prune | 1 | {'+' if delta > 0 else ''}{delta:.2f}" in table


def test_rerun_skips_finished_runs_without_training(quick_runs, monkeypatch):
    runs, results, _, _ = quick_runs

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(train_module, "train", no_training)
    again = study.run_study(QUICK, runs, progress=False)
    assert again == results


def test_killed_run_resumes_to_the_same_result(quick_runs, tmp_path, monkeypatch):
    runs, results, _, _ = quick_runs
    plain = next(r for r in results if r["arm"] == "plain")
    one = study.Study.quick(arms=("plain",), oak=False)
    calls = {"n": 0}
    real_step = train_module.train_step

    def killed_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # Ctrl-C between checkpoints: held to the step's end, then a checkpoint
            os.kill(os.getpid(), signal.SIGINT)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        study.run_study(one, tmp_path, progress=False)
    run = study.run_dir(tmp_path, "synthetic-tiny", "plain", 0)
    assert (run / CHECKPOINT).exists() and not (run / "result.json").exists()
    monkeypatch.setattr(train_module, "train_step", real_step)
    (resumed,) = study.run_study(one, tmp_path, progress=False)
    assert resumed["resumed"] and resumed["steps"] == plain["steps"]
    assert resumed["metrics"] == pytest.approx(plain["metrics"], abs=1e-6)

    # a finished checkpoint without result.json (killed while evaluating) resumes too
    (run / "result.json").unlink()
    (again,) = study.run_study(one, tmp_path, progress=False)
    assert again["resumed"] and again["metrics"] == pytest.approx(plain["metrics"], abs=1e-6)


def test_a_run_another_process_is_training_is_skipped(tmp_path, monkeypatch):
    import fcntl

    spec = study.Study.quick().specs()["synthetic-tiny"]
    data = study.prepare(spec, study.HELD_OUT)
    run = study.run_dir(tmp_path, "synthetic-tiny", "plain", 0)
    run.mkdir(parents=True)
    monkeypatch.setattr(train_module, "train", lambda *a, **k: pytest.fail("trained a run another process holds"))
    with open(run / ".lock", "a") as held:  # what a second study process holds while it trains the run
        fcntl.flock(held, fcntl.LOCK_EX)
        assert study.train_run(data, spec, "plain", 0, tmp_path, progress=False) == ("busy", {})
    assert not (run / "result.json").exists()


def test_a_run_directory_with_other_settings_is_an_error(quick_runs, tmp_path):
    runs, _, _, _ = quick_runs
    src = study.run_dir(runs, "synthetic-tiny", "ramen", 0)
    dst = study.run_dir(tmp_path, "synthetic-tiny", "ramen", 0)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(CHECKPOINT, "model", "cache"))
    claim = json.loads((dst / "run.json").read_text())
    claim["config"]["lr"] = 0.5
    (dst / "run.json").write_text(json.dumps(claim))
    with pytest.raises(ValueError, match=r"other settings \(differing: config, config\.lr\)"):
        study.run_study(study.Study.quick(arms=("ramen",), oak=False), tmp_path, progress=False)


def test_a_run_started_before_a_new_config_field_still_resumes(tmp_path):
    from ramen.config import TrainConfig

    config = json.loads(json.dumps(TrainConfig(lr=1e-4).to_dict()))
    identity = {"dataset": "d", "arm": "a", "seed": 0, "config": config}
    older = {**identity, "config": {k: v for k, v in config.items() if k != "max_steps"}}  # before max_steps existed
    (tmp_path / "run.json").write_text(json.dumps(older))
    study._claim(tmp_path / "run.json", identity)  # its default reproduces the older run: accepted
    changed = {**identity, "config": {**config, "max_steps": 3}}
    with pytest.raises(ValueError, match=r"differing: config, config\.max_steps"):
        study._claim(tmp_path / "run.json", changed)


def test_missing_wikispeedia_is_skipped(tmp_path):
    out = study.run_study(study.Study(datasets=("wikispeedia",)), tmp_path / "runs",
                          wikispeedia_dir=tmp_path / "absent", progress=False)
    assert out == [] and not (tmp_path / "runs").exists()


def test_missing_foldoc_is_skipped(tmp_path, monkeypatch):
    monkeypatch.setenv("RAMEN_FOLDOC", str(tmp_path / "absent.dict.dz"))
    out = study.run_study(study.Study(datasets=("foldoc",)), tmp_path / "runs", progress=False)
    assert out == [] and not (tmp_path / "runs").exists()


def test_foldoc_is_a_study_dataset(tmp_path, monkeypatch):
    from test_foldoc import ARTICLES, write_dictd

    from ramen.datasets import foldoc

    path = write_dictd(tmp_path / "dict", ARTICLES)
    monkeypatch.setenv("RAMEN_FOLDOC", str(path))
    spec = study.dataset_specs()["foldoc"]
    assert spec.load() == foldoc(path, seed=study.SPLIT_SEED) and str(path) in spec.source
    assert spec.budget == study.BUDGET  # the same budget as every dataset of the study


def test_zero_shot_is_the_untrained_encoder_on_test_and_held_out_queries(tmp_path, capsys):
    from ramen.encoder import Encoder
    from ramen.model import Model

    spec = study.dataset_specs()["synthetic-tiny"]
    data = study.prepare(spec, study.HELD_OUT)
    got = study.zero_shot(data, spec, tmp_path)
    for split, ds in (("test", data.train), ("heldout", data.held)):
        ref = Model(Encoder("tiny", max_length=spec.budget["max_length"])).evaluate(ds, progress=False)
        assert got[split]["queries"] == ds.num_test
        assert math.isclose(got[split]["metrics"]["P@1"], float(ref["P"][0]), abs_tol=1e-9)
        assert math.isclose(got[split]["metrics"]["PSP@5"], float(ref["PSP"][4]), abs_tol=1e-9)
    assert "deciles" in got["test"] and got["identity"]["encoder"] == "tiny"
    assert json.loads((tmp_path / "synthetic-tiny" / "zeroshot.json").read_text()) == got
    assert study.main(["zeroshot", "--datasets", "synthetic-tiny", "--runs", str(tmp_path)]) == 0  # cached
    out = capsys.readouterr().out
    assert f"synthetic-tiny zero-shot, test ({data.train.num_test} queries): P@1 " \
           f"{100 * got['test']['metrics']['P@1']:.2f}" in out and "heldout" in out


def test_bad_study_settings_are_errors(tmp_path):
    with pytest.raises(ValueError, match="arms: unknown"):
        study.run_study(study.Study(arms=("ramen", "nope")), tmp_path)
    with pytest.raises(ValueError, match="datasets: unknown"):
        study.run_study(study.Study(datasets=("nope",)), tmp_path)
    with pytest.raises(ValueError, match="held_out"):
        study.run_study(study.Study(held_out=1.0), tmp_path)
    with pytest.raises(ValueError, match="no result.json"):
        study.write_report(tmp_path, tmp_path / "r.md")


def test_mix_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((6, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    anchors = rng.standard_normal((10, 8)).astype(np.float32)
    ids = rng.integers(0, 10, (6, 4))
    ids[1] = -1  # no anchors: stays q
    ids[2, 2:] = -1  # padding adds nothing
    w = rng.uniform(-0.5, 1.0, (6, 4)).astype(np.float32)
    w[3] = -1.0  # only negative cosines: stays q
    got = peer.mix(q, anchors, ids, w, 0.7)
    for i in range(6):
        num, den = np.zeros(8), 0.0
        for j in range(4):
            if ids[i, j] >= 0 and w[i, j] > 0:
                num += w[i, j] * anchors[ids[i, j]]
                den += w[i, j]
        v = q[i] + 0.7 * (num / den if den > 0 else 0)
        np.testing.assert_allclose(got[i], v / np.linalg.norm(v), atol=1e-6)
    np.testing.assert_allclose(got[1], q[1], atol=1e-6)
    np.testing.assert_allclose(peer.mix(q, anchors, ids, w, 0.0), q, atol=1e-6)
    links = sp.csr_matrix(([1.0, 1.0, 1.0], ([0, 0, 2], [4, 9, 1])), shape=(3, 10))
    mixed = peer.enrich_with_links(q[:3], anchors, links, 1.0)
    v = q[0] + (anchors[4] + anchors[9]) / 2
    np.testing.assert_allclose(mixed[0], v / np.linalg.norm(v), atol=1e-6)
    np.testing.assert_allclose(mixed[1], q[1], atol=1e-6)  # no links


def test_suite_rows_compare_arms_with_plain_and_oak(quick_runs):
    runs, _, _, _ = quick_runs
    results, oaks = study.load_results(runs)
    rows = suite.rows_from(study, results, oaks, {"quick": True})
    plain = next(r for r in results if r["arm"] == "plain")["metrics"]
    p1 = [r for r in rows if r.metric == "P@1"]
    assert {r.case for r in p1} == {f"synthetic-tiny/{a}" for a in study.PAPER_ARMS if a != "plain"}
    assert all(r.peer == pytest.approx(100 * plain["P@1"]) and r.peer_name == "plain" for r in p1)
    lat = [r for r in rows if r.unit == "ms"]
    assert len(lat) == 2 and all(r.better == "lower" and r.ours > 0 and r.peer > 0 for r in lat)


def test_estimate_times_steps_as_the_arm_trains():
    rows = study.estimate(study.Study.quick(arms=("plain", "ramen")), steps=1)
    plain, ramen = rows
    assert plain["steps_per_run"] == ramen["steps_per_run"] == study.QUICK_BUDGET["epochs"] * (270 // 32)
    assert plain["step_s"] > 0 and ramen["step_s"] > 0
    assert ramen["texts_per_step"] > plain["texts_per_step"]  # anchors of two sets besides queries and labels


def test_per_query_terms_give_back_ramen_metrics_p1_and_psp1():
    """at_one's per-query terms (what regime_report bootstraps over queries) average to the P@1 and
    PSP@1 of ramen.metrics.evaluate, with filtered pairs, -1 padding, rows without labels."""
    from ramen import metrics

    rng = np.random.default_rng(3)
    Q, L = 60, 25
    dense = (rng.random((Q, L)) < 0.1).astype(np.float32)
    dense[5] = 0  # a query without labels
    true_Y = sp.csr_matrix(dense)
    ids = np.stack([rng.permutation(L)[:4] for _ in range(Q)])
    ids[7, 2:] = -1
    ids[8, :] = -1  # nothing found
    filt = np.array([[r, ids[r, 0]] for r in range(0, Q, 3)], dtype=np.int64)  # top-1 of every third row filtered
    inv_p = rng.uniform(1, 4, L)
    terms = study.at_one(ids, true_Y, inv_p, filt)
    ref = metrics.evaluate(ids, true_Y, inv_propensity=inv_p, k=1, filter=filt)
    assert math.isclose(np.mean(terms["hit"]), float(ref["P"][0]), abs_tol=1e-12)
    assert math.isclose(np.sum(terms["gain"]) / np.sum(terms["best"]), float(ref["PSP"][0]), abs_tol=1e-12)
    assert terms["hit"][8] == 0 and terms["best"][5] == 0
