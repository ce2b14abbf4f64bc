"""ramen.model: Model.save / Model.load keep the label texts exactly (positions and characters)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ramen.encoder import Encoder
from ramen.model import Model

# Labels that a line-based labels.txt could split, merge or alter: CR (universal newlines), control
# characters that str.splitlines splits on, a byte-order mark first (utf-8-sig drops it), `x->y`.
TRICKY_LABELS = ["\ufeffbom first", "a\rb", "ends in CR\r", "\r", "", "x->y", "\x0bv\x0ct\x1c\x1d\x1e",
                 "\x85nel\u2028ls\u2029ps", "\x00nul\x7f", " spaced ", "Åland", "last"]


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder("tiny")


def saved(tmp_path: Path, encoder: Encoder, labels: list[str] | None) -> Path:
    Model(encoder, labels).save(tmp_path / "m")
    return tmp_path / "m"


@pytest.mark.parametrize("labels", [TRICKY_LABELS, ["one"], [], None, ["two\nlines", "a\rb", "\ufeff"]],
                         ids=["tricky", "one", "empty", "none", "line-feed"])
def test_label_texts_round_trip(tmp_path: Path, encoder: Encoder, labels: list[str] | None) -> None:
    loaded = Model.load(saved(tmp_path, encoder, labels))
    assert loaded.label_texts == labels


def test_labels_txt_format_unchanged(tmp_path: Path, encoder: Encoder) -> None:
    """Labels without a line feed are written as before: UTF-8 lines, each ended by LF."""
    path = saved(tmp_path, encoder, ["a", "é", "x->y"])
    assert (path / "labels.txt").read_bytes() == "a\né\nx->y\n".encode()
    assert not (path / "labels.json").exists()


@pytest.mark.parametrize("content,message", [
    (b"a\nb\n\xff\n", r"labels.txt: line 3: not valid UTF-8"),
    (b"a\nb\n", r"labels.txt: 2 label texts but model.json says num_labels = 3"),
    (b"a\nb\nc\nd\n", r"labels.txt: 4 label texts but model.json says num_labels = 3"),
])
def test_bad_labels_file(tmp_path: Path, encoder: Encoder, content: bytes, message: str) -> None:
    path = saved(tmp_path, encoder, ["x", "y", "z"])
    (path / "labels.txt").write_bytes(content)
    with pytest.raises(ValueError, match=message):
        Model.load(path)


def test_labels_without_final_line_feed(tmp_path: Path, encoder: Encoder) -> None:
    path = saved(tmp_path, encoder, ["x", "y", "z"])
    (path / "labels.txt").write_bytes(b"x\ny\nz")  # edited by hand: the last label is kept, not dropped
    assert Model.load(path).label_texts == ["x", "y", "z"]


def test_evaluate_on_other_labels_does_not_reuse_the_index(encoder: Encoder) -> None:
    """A model whose index holds other labels (the same number, in another order) is scored on the
    dataset's own labels, as a fresh model is; a later predict names the dataset's labels."""
    import scipy.sparse as sp

    from ramen.datasets import Dataset

    labels = [f"label {i} about {w}" for i, w in enumerate(["graphs", "cats", "rivers", "stars", "trains", "music"])]
    texts = [t.replace("label", "query") for t in labels]
    Y = sp.identity(len(labels), format="csr", dtype="float32")
    data = Dataset(train_texts=texts, test_texts=texts, label_texts=labels, train_Y=Y, test_Y=Y).validate()
    reused = Model(encoder, label_texts=labels[::-1])
    reused.build_index(exact=True, progress=False)
    got = reused.evaluate(data, k=1, progress=False)
    ref = Model(encoder).evaluate(data, k=1, progress=False)
    assert got["P"][0] == ref["P"][0] and reused.label_texts == labels
    ids, _ = reused.predict(texts[:1], k=1)
    assert ids[0, 0] == Model(encoder, label_texts=labels).predict(texts[:1], k=1)[0][0, 0]


def test_load_checks_the_index_against_the_encoder_and_labels_it_holds(tmp_path: Path, encoder: Encoder) -> None:
    labels = ["alpha", "beta", "gamma", "delta"]
    model = Model(encoder, labels)
    model.build_index(exact=True, progress=False)
    model.save(tmp_path / "m")
    assert len(Model.load(tmp_path / "m").index) == 4
    # an index copied in from another model (the encoder and model.json intact)
    Model(Encoder("tiny", seed=1), labels).save(tmp_path / "other")
    (tmp_path / "m" / "labels.index").replace(tmp_path / "other" / "labels.index")
    with pytest.raises(ValueError, match="rebuild the index with this model"):
        Model.load(tmp_path / "other")
    # an index of fewer labels than the model names
    short = Model(encoder, labels[:3])
    short.build_index(exact=True, progress=False)
    short.label_texts = labels
    short.save(tmp_path / "s")
    with pytest.raises(ValueError, match="holds 3 label ids, not the model's 4 labels"):
        Model.load(tmp_path / "s")


@pytest.mark.parametrize("kind", ["directory", "broken-link"])
def test_load_names_a_label_index_that_is_not_a_file(tmp_path: Path, encoder: Encoder, kind: str) -> None:
    """A directory at labels.index was 'no label index at ...' (FileNotFoundError), a broken link an
    index silently absent."""
    path = saved(tmp_path, encoder, ["x", "y"])
    if kind == "directory":
        (path / "labels.index").mkdir()
    else:
        (path / "labels.index").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"labels.index is (a directory|not a regular file)"):
        Model.load(path)


def damage(path: Path) -> None:
    """Overwrites 400 bytes near the end of `path` (inside a safetensors file's weights), same size."""
    data = bytearray(path.read_bytes())
    data[-1000:-600] = bytes(400)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("with_index", [True, False], ids=["with-index", "without-index"])
def test_load_refuses_encoder_weights_that_do_not_match_model_json(tmp_path: Path, encoder: Encoder,
                                                                   with_index: bool) -> None:
    """Damaged or replaced weights are named as such, not blamed on the label index nor served."""
    model = Model(encoder, ["alpha", "beta", "gamma"])
    if with_index:
        model.build_index(progress=False)
    model.save(tmp_path / "m")
    damage(tmp_path / "m" / "encoder" / "query_tower" / "model.safetensors")
    with pytest.raises(ValueError, match=r"encoder: its weights \(query_tower/model.safetensors\) do not match "
                                         r"the fingerprint model.json records .*: the file is damaged or was replaced"):
        Model.load(tmp_path / "m")
    Encoder("tiny", seed=1).save(tmp_path / "m" / "encoder")  # another encoder saved over this one
    with pytest.raises(ValueError, match="do not match the fingerprint model.json records"):
        Model.load(tmp_path / "m")


@pytest.mark.parametrize("meta", ['{"format": 1, "num_labels": 1}', '{"format": 1, "fingerprint": 7}', '[1]'],
                         ids=["missing", "not-a-string", "not-an-object"])
def test_load_needs_the_fingerprint_in_model_json(tmp_path: Path, encoder: Encoder, meta: str) -> None:
    path = saved(tmp_path, encoder, ["x"])
    (path / "model.json").write_text(meta)
    with pytest.raises(ValueError, match=r"model.json: .*fingerprint"):
        Model.load(path)


ENCODER_FILES = ["encoder/query_tower/model.safetensors", "encoder/query_tower/config.json",
                 "encoder/tokenizer/tokenizer.json", "encoder/tokenizer/tokenizer_config.json", "encoder/spec.json"]


@pytest.mark.parametrize("name", ENCODER_FILES)
@pytest.mark.parametrize("size", [0, 20, 1000])  # at most half the file
def test_a_truncated_encoder_file_is_named(tmp_path: Path, encoder: Encoder, name: str, size: int) -> None:
    path = saved(tmp_path, encoder, ["x"])
    with open(path / name, "r+b") as f:
        f.truncate(min(size, (path / name).stat().st_size // 2))
    with pytest.raises(ValueError, match=f"{path / name}: "):
        Model.load(path)


@pytest.mark.parametrize("spec,field", [('{"name": "tiny"}', "pooling"), ('[]', "object"),
                                        ('{"name": "t", "pooling": "max", "max_length": 8, "label_tower": false}',
                                         "pooling"),
                                        ('{"name": "t", "pooling": "cls", "max_length": "8", "label_tower": false}',
                                         "max_length"),
                                        ('{"name": "t", "pooling": "cls", "max_length": 8, "label_tower": 1}',
                                         "label_tower")])
def test_a_bad_encoder_spec_is_named(tmp_path: Path, encoder: Encoder, spec: str, field: str) -> None:
    path = saved(tmp_path, encoder, ["x"])
    (path / "encoder" / "spec.json").write_text(spec)
    with pytest.raises(ValueError, match=f"spec.json: .*{field}"):
        Model.load(path)


@pytest.mark.parametrize("command", [["search", "{run}", "x"], ["evaluate", "{run}", "--data", "synthetic:tiny"],
                                     ["export", "{run}", "{out}"]])
def test_cli_names_a_truncated_weights_file(tmp_path: Path, encoder: Encoder, command: list[str], capsys) -> None:
    from ramen.__main__ import main

    Model(encoder, ["x"]).save(tmp_path / "run" / "model")
    weights = tmp_path / "run" / "model" / "encoder" / "query_tower" / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(1000)
    assert main([a.format(run=tmp_path / "run", out=tmp_path / "st") for a in command]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {weights}: ") and len(err.strip().splitlines()) == 1


def test_predict_gives_blank_texts_no_labels(encoder: Encoder) -> None:
    """A text with nothing the encoder reads gets -1 ids (score -inf), as padding; the batch's other
    texts, short ones included, get the labels they get alone."""
    model = Model(encoder, ["alpha", "beta", "gamma", "delta"])
    texts = ["", "a", "   ", "\u200b\t", "beta gamma", "?"]
    ids, scores = model.predict(texts, k=3)
    blank = [0, 2, 3]
    assert (ids[blank] == -1).all() and (scores[blank] == -np.inf).all()
    for i in (1, 4, 5):
        alone_ids, alone_scores = model.predict(texts[i], k=3)
        assert (ids[i] >= 0).all() and (ids[i] == alone_ids[0]).all()
        np.testing.assert_allclose(scores[i], alone_scores[0], atol=1e-6)
