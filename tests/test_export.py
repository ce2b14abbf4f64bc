"""Model.export / `python -m ramen export`: a sentence-transformers model directory that gives
ramen's embeddings (float32) when loaded with sentence-transformers."""
from __future__ import annotations

import json

import numpy as np
import pytest

from ramen.encoder import Encoder
from ramen.model import Model

TEXTS = ["graph regularised encoders", "a", "", "extreme classification of very many labels " * 6, "Åland"]


@pytest.mark.parametrize("name, pooling", [("tiny", "mean"), ("tiny", "cls"), ("all-MiniLM-L6-v2", "mean")])
def test_exported_model_gives_ramens_embeddings_in_sentence_transformers(tmp_path, name, pooling):
    st = pytest.importorskip("sentence_transformers")
    encoder = Encoder(name, pooling=pooling, max_length=16)
    out = Model(encoder, ["x"]).export(tmp_path / "st")
    assert json.loads((out / "ramen_export.json").read_text())["fingerprint"] == encoder.fingerprint()
    theirs = st.SentenceTransformer(str(out), device="cpu").encode(TEXTS, convert_to_numpy=True)
    ours = encoder.encode(TEXTS, progress=False)
    np.testing.assert_allclose(theirs, ours, atol=1e-5)


def test_label_tower_export_and_cli(tmp_path):
    st = pytest.importorskip("sentence_transformers")
    from ramen.__main__ import main

    encoder = Encoder("tiny", label_tower=True, max_length=16)
    with __import__("torch").no_grad():
        for p in encoder.label_backbone.parameters():
            p.add_(0.05)  # the towers differ
    Model(encoder, ["x", "y"]).save(tmp_path / "model")
    assert main(["export", str(tmp_path), str(tmp_path / "label"), "--tower", "label"]) == 0
    assert main(["export", str(tmp_path / "model"), str(tmp_path / "query")]) == 0
    for tower in ("query", "label"):
        theirs = st.SentenceTransformer(str(tmp_path / tower), device="cpu").encode(TEXTS)
        np.testing.assert_allclose(theirs, encoder.encode(TEXTS, tower=tower, progress=False), atol=1e-5)
    with pytest.raises(ValueError, match="tower"):
        Model(encoder, ["x"]).export(tmp_path / "bad", tower="document")


def test_saves_replace_whole_directories_and_leave_nothing_beside_them(tmp_path, monkeypatch):
    encoder = Encoder("tiny", max_length=16)
    model = Model(encoder, ["a", "b"])
    model.save(tmp_path / "m")
    model.save(tmp_path / "m")  # over itself
    model.export(tmp_path / "st")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "st"]  # no temporary or old directories

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(encoder.tokenizer), "save_pretrained", broken)
    with pytest.raises(OSError, match="disk full"):
        Model(encoder, ["c"]).save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m", "st"]
    assert Model.load(tmp_path / "m").label_texts == ["a", "b"]  # the old model, whole
