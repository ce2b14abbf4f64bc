"""Bad settings, arguments and files a user brings get an error naming them before any work, never a
traceback after training, a silently flipped setting or deleted files (found by an audit of the CLI
and the API)."""
import dataclasses
import gzip
import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

import ramen
from ramen import metrics
from ramen.__main__ import main
from ramen.config import TrainConfig
from ramen.datasets.synthetic import synthetic
from ramen.encoder import Encoder
from ramen.model import Model
from ramen.train import NonFiniteLoss


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic("tiny", seed=0)


def tiny_config(**kw) -> TrainConfig:
    base = dict(encoder="tiny", epochs=1, batch_size=32, lr=1e-3, walk_length=10, warmup_epochs=0, eval_every=0,
                encode_batch_size=64, dropout=0.0, cpu_bf16=False)
    cfg = TrainConfig(**{**base, **kw})  # the base's graph settings serve graph runs; a plain one leaves them unread
    return dataclasses.replace(cfg.without_idle(), **{k: v for k, v in kw.items() if k in cfg.idle_fields()})


@pytest.mark.parametrize("field, value, message", [
    ("graph", "false", "graph must be bool, got 'false'"),  # would have turned the graph on
    ("epochs", "3", "epochs must be int"),
    ("epochs", 2.5, "epochs must be int"),
    ("lr", True, "lr must be float"),
    ("anchor_sets", ["hyperlink", 3], "anchor_sets must be list"),
    ("grad_clip", -1.0, "grad_clip must be >= 0"),  # clip_grad_norm_ with a negative norm flips the gradient
    ("lambda_x", float("nan"), "lambda_x must be finite"),
    ("lambda_z", -0.1, "lambda_x and lambda_z must be >= 0"),
    ("lr", float("inf"), "lr must be finite"),
    ("weight_decay", float("nan"), "weight_decay must be finite"),
    ("encode_batch_size", 0, "encode_batch_size must be >= 1"),
    ("eval_k", 0, "eval_k must be >= 1"),
    ("eval_max_queries", 0, "eval_max_queries must be >= 1 or None"),
    ("seed", -1, "seed must be >= 0"),
    ("densify_top_k", 0, "densify_top_k must be >= 1"),
    ("softmax_temperature", 0.0, "softmax_temperature must be > 0"),
    ("prune_threshold", 2.0, "prune_threshold must be a cosine"),
    ("lambdas", {"hyperlink": [0.1, float("nan")]}, r"lambdas\['hyperlink'\] must be \[lambda_x, lambda_z\]"),
])
def test_a_setting_of_the_wrong_type_or_range_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**{field: value}).validate()


def test_settings_of_the_python_kinds_numpy_gives_are_accepted():
    cfg = TrainConfig(epochs=np.int64(3), lr=np.float32(1e-3), batch_size=64, graph=np.bool_(True)).validate()
    assert cfg.epochs == 3


def test_a_config_file_value_of_the_wrong_type_names_the_file(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('graph = "false"\n')
    with pytest.raises(ValueError, match=r"c.toml: TrainConfig: graph must be bool"):
        TrainConfig.from_file(path)
    with pytest.raises(ValueError, match="epochs must be int"):
        ramen.recipe("plain", epochs="3")


@pytest.mark.parametrize("field", ["lambdas", "anchor_sets"])
def test_an_anchor_set_the_dataset_lacks_is_named_before_training(tiny_data, field, tmp_path):
    value = {"hyperlnk": [0.0, 0.0]} if field == "lambdas" else ["hyperlnk"]
    for graph in (True, False):
        named = rf"TrainConfig.{field}: anchor sets \['hyperlnk'\] are not in"
        if field == "anchor_sets" and not graph:  # a plain run reads no anchor set: that is the error
            named = r"anchor_sets=\['hyperlnk'\] only applies with graph=True or aug_gt=True"
        with pytest.raises(ValueError, match=named):
            ramen.train(tiny_data, tiny_config(graph=graph, **{field: value}), out_dir=tmp_path / "r",
                        progress=False)
    assert not (tmp_path / "r" / "checkpoint.safetensors").exists()


def test_no_query_to_evaluate_is_an_error_not_nan():
    with pytest.raises(ValueError, match="no query to evaluate"):
        metrics.evaluate(np.zeros((0, 5), np.int64), sp.csr_matrix((0, 4)), inv_propensity=np.ones(4))


def test_a_dataset_without_test_queries_trains_and_says_there_is_nothing_to_evaluate(tiny_data, tmp_path, capsys):
    empty = dataclasses.replace(tiny_data, test_texts=[], test_Y=sp.csr_matrix((0, tiny_data.num_labels),
                                                                              dtype=np.float32),
                                anchor_sets={n: dataclasses.replace(a, test_X_A=None)
                                             for n, a in tiny_data.anchor_sets.items()}).validate()
    model = ramen.train(empty, tiny_config(eval_every=1, epochs=2), out_dir=tmp_path / "r", progress=False)
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert not [r for r in log if r["event"] == "eval"]
    assert any("no test queries" in r.get("text", "") for r in log)
    with pytest.raises(ValueError, match="the dataset has no test queries"):
        model.evaluate(empty, progress=False)
    with pytest.raises(ValueError, match="max_queries must be an integer >= 1"):
        model.evaluate(tiny_data, max_queries=0, progress=False)
    ramen.save_xc(empty, tmp_path / "ds")
    assert main(["train", "--data", str(tmp_path / "ds"), "--encoder", "tiny", "--out", str(tmp_path / "cli"),
                 "--epochs", "1", "--batch-size", "32", "--eval-every", "0"]) == 0
    assert "no test queries: nothing to evaluate" in capsys.readouterr().out


def test_export_and_save_never_replace_a_directory_they_did_not_write(tmp_path):
    model = Model(Encoder("tiny"), ["a", "b"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "checkpoint.safetensors").write_bytes(b"hours of training")
    with pytest.raises(ValueError, match="no ramen_export.json.*refusing"):
        model.export(run)
    with pytest.raises(ValueError, match="no model.json.*refusing"):
        model.save(run)
    assert (run / "checkpoint.safetensors").read_bytes() == b"hours of training"
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        model.export(tmp_path / "file")
    model.export(tmp_path / "st")
    model.export(tmp_path / "st")  # an earlier export is replaced
    model.save(tmp_path / "m")
    model.save(tmp_path / "m")  # and an earlier model
    assert Model.load(tmp_path / "m").label_texts == ["a", "b"]
    assert main(["export", str(tmp_path / "m"), str(run)]) == 2  # the CLI: a message, the run kept
    assert (run / "checkpoint.safetensors").exists()


def test_cli_bad_data_and_run_files_are_messages(tmp_path, capsys):
    with pytest.raises(SystemExit, match="--data: empty"):
        main(["train", "--data", "", "--out", str(tmp_path / "r")])
    assert main(["data", "describe", f"wikispeedia:{tmp_path / 'nope'}"]) == 2
    assert "no articles.tsv" in capsys.readouterr().err
    src = tmp_path / "wiki"
    src.mkdir()
    (src / "articles.tsv").write_bytes(b"# comment\nA\n\xffB\n")
    assert main(["data", "describe", f"wikispeedia:{src}"]) == 2
    assert "articles.tsv: line 3: not UTF-8" in capsys.readouterr().err
    (src / "articles.tsv").unlink()
    (src / "articles.tsv.gz").write_bytes(gzip.compress(b"A\nB\nC\n" * 100)[:-20])  # cut short
    assert main(["data", "describe", f"wikispeedia:{src}"]) == 2
    assert "damaged or cut gzip" in capsys.readouterr().err
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "run.json").write_text('{"da')
    with pytest.raises(SystemExit, match=r"run.json is not a readable run record"):
        main(["evaluate", str(run)])
    (run / "run.json").write_text("{}")
    with pytest.raises(SystemExit, match=r"no 'data' entry"):
        main(["evaluate", str(run)])
    assert main(["data", "synth", "--size", "tiny", "--out", str(tmp_path / "ds")]) == 0
    assert main(["data", "synth", "--size", "tiny", "--out", str(tmp_path / "ds")]) == 2  # exists
    assert main(["data", "synth", "--size", "tiny", "--out", str(tmp_path / "ds"), "--overwrite"]) == 0


def test_a_run_that_diverges_before_its_first_checkpoint_says_so(tiny_data, tmp_path, monkeypatch):
    import ramen.step as step_module

    real = step_module.ramen_loss
    monkeypatch.setattr(step_module, "ramen_loss", lambda emb, *a, **kw: real(
        {**emb, "label": emb["label"] * float("nan")}, *a, **kw))
    (tmp_path / "checkpoint.safetensors").write_bytes(b"an older run's")
    with pytest.raises(NonFiniteLoss, match="No checkpoint was written yet"):
        ramen.train(tiny_data, tiny_config(), out_dir=tmp_path, progress=False)


def test_bench_arguments_are_checked_before_any_suite_runs(tmp_path):
    for extra, message in ((["--suite", "scale", "--size", "abc"], "size: expected one of"),
                           (["--suite", "search", "--json", str(tmp_path)], "not a file path")):
        done = subprocess.run([sys.executable, "-m", "ramen.bench", *extra], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 2 and message in done.stderr and "== suite" not in done.stdout


def test_api_calls_with_the_wrong_kind_of_argument_name_it(tiny_data):
    model = Model(Encoder("tiny"), ["a", "b"])
    with pytest.raises(TypeError, match="texts must be a list of strings, got NoneType"):
        model.predict([None])
    with pytest.raises(TypeError, match="evaluate: dataset must be a ramen Dataset"):
        model.evaluate("/some/dir")
    with pytest.raises(TypeError, match="train: dataset must be a ramen Dataset"):
        ramen.train("/some/dir")
    with pytest.raises(TypeError, match="train: config must be a TrainConfig"):
        ramen.train(tiny_data, {"epochs": 1})


def test_a_label_stored_with_value_0_is_an_error_not_a_positive(tmp_path):
    """Metrics and batches count every stored entry of a label matrix as a positive: a `col:0` entry
    would have counted as a true label."""
    ramen.save_xc(synthetic("tiny", seed=0), tmp_path / "ds")
    path = tmp_path / "ds" / "trn_X_Y.txt"
    lines = path.read_text().splitlines()
    lines[1] = "0:1 1:0"  # the first query: label 0, and label 1 stored as 0
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"train_Y holds a value <= 0 \(row 0\)"):
        ramen.load_xc(tmp_path / "ds")


def test_numpy_settings_are_stored_as_python_values(tiny_data, tmp_path):
    cfg = tiny_config(seed=np.int64(0), lr=np.float32(1e-3), max_steps=np.int64(2), cluster_double_at=[np.int64(1)],
                     cluster_batching=True)
    ramen.train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["seed"] == 0 and saved["max_steps"] == 2 and saved["cluster_double_at"] == [1]
    assert type(cfg.seed) is int and type(cfg.lr) is float


def test_a_run_stopped_by_its_own_checks_keeps_the_old_log(tiny_data, tmp_path):
    ramen.train(tiny_data, tiny_config(), out_dir=tmp_path, progress=False)
    before = (tmp_path / "log.jsonl").read_text()
    with pytest.raises(ValueError, match="anchor sets"):
        ramen.train(tiny_data, tiny_config(lambdas={"hyperlnk": [0.0, 0.0]}), out_dir=tmp_path, progress=False)
    assert (tmp_path / "log.jsonl").read_text() == before


def test_format_table_of_nothing_is_named():
    with pytest.raises(ValueError, match="format_table: expected the metrics dict"):
        metrics.format_table({})
