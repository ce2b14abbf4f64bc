"""Encoder, token cache and TrainConfig: pooling, normalisation, caching, saving, clear errors."""
import json

import numpy as np
import pytest
import torch

from ramen.config import TrainConfig
from ramen.encoder import Encoder, available_encoders, resolve_encoder
from ramen.tokens import TokenCache

TEXTS = ["graph regularised encoders", "a", "", "extreme classification of very many labels indeed " * 5,
         "tail labels", "Åland islands"]


@pytest.fixture(scope="module")
def tiny() -> Encoder:
    return Encoder("tiny", max_length=16)


def test_tiny_encoder_gives_unit_vectors_in_input_order(tiny):
    emb = tiny.encode(TEXTS, batch_size=2, progress=False)
    assert emb.shape == (len(TEXTS), tiny.dim) and emb.dtype == np.float32
    assert np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    # reference: one text at a time through forward (no batching, no sorting)
    tiny.eval()
    with torch.no_grad():
        for i, text in enumerate(TEXTS):
            ids, mask = tiny.tokenize([text], progress=False).batch([0])
            assert np.allclose(tiny(ids, mask).numpy()[0], emb[i], atol=1e-5)


@pytest.mark.parametrize("block_size", [1, 2, 5, 8, 1000])
def test_encode_blocks_give_encode_vectors_bit_for_bit(tiny, block_size):
    """Blocks of whole batches (5 rounds down to 4 texts here) cover every text once, with the vectors of `encode`."""
    texts = [f"{t} {i}" * (i % 4 + 1) for i, t in enumerate(TEXTS * 3)]
    whole = tiny.encode(texts, batch_size=2, progress=False)
    blocks = list(tiny.encode_blocks(texts, 2, block_size=block_size, progress=False))
    assert all(len(ids) == max(2, block_size // 2 * 2) for ids, _ in blocks[:-1])
    ids = np.concatenate([i for i, _ in blocks])
    assert sorted(ids.tolist()) == list(range(len(texts)))
    assert np.array_equal(np.concatenate([e for _, e in blocks]), whole[ids])
    assert list(tiny.encode_blocks([], 2, progress=False)) == []
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        next(tiny.encode_blocks(texts, 2, block_size=0))
    assert not tiny.training


def test_encode_holds_one_copy_of_its_output(tiny):
    """The vectors go from each batch into the output: numpy's peak is the output and a batch, not twice
    the output (the scale of pruning's and evaluation's embeddings)."""
    import tracemalloc

    texts = [f"text number {i}" for i in range(3000)]
    cache = tiny.tokenize(texts, progress=False)
    tracemalloc.start()
    try:
        emb = tiny.encode(cache, batch_size=64, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1.3 * emb.nbytes, (peak, emb.nbytes)


def test_mean_pooling_ignores_padding(tiny):
    cache = tiny.tokenize(["short", "a much longer text with many more tokens"], progress=False)
    ids, mask = cache.batch([0, 1])
    tiny.eval()
    with torch.no_grad():
        padded = tiny(ids, mask)[0]
        alone = tiny(*cache.batch([0]))[0]
    assert torch.allclose(padded, alone, atol=1e-5)


def test_token_cache_trims_to_batch_longest_and_round_trips(tiny, tmp_path):
    cache = tiny.tokenize(TEXTS, progress=False)
    assert cache.ids.shape == (len(TEXTS), 16) and cache.lengths.max() == 16  # truncated long text
    ids, mask = cache.batch([1, 4])
    assert ids.shape[1] == max(cache.lengths[1], cache.lengths[4])
    assert (mask.sum(1).numpy() == cache.lengths[[1, 4]]).all()
    cache.save(tmp_path / "tok")
    loaded = TokenCache.load(tmp_path / "tok")
    assert isinstance(loaded.ids, np.memmap)
    assert (loaded.ids == cache.ids).all() and (loaded.lengths == cache.lengths).all()


def test_token_cache_is_the_same_in_any_chunk_size(tiny):
    """Chunks only bound the tokenizer's memory (issue 26): every text's ids and length are those
    of tokenising it alone with the tokenizer."""
    texts = TEXTS * 3
    whole = TokenCache.build(tiny.tokenizer, texts, 16, chunk=len(texts), progress=False)
    for chunk in (1, 4, 7):
        part = TokenCache.build(tiny.tokenizer, texts, 16, chunk=chunk, progress=False)
        assert np.array_equal(part.ids, whole.ids) and np.array_equal(part.lengths, whole.lengths)
    for i, text in enumerate(texts):
        ids = tiny.tokenizer(text, max_length=16, truncation=True)["input_ids"]
        assert whole.lengths[i] == len(ids) and whole.ids[i, :len(ids)].tolist() == ids


def test_cls_pooling_and_label_tower(tmp_path):
    enc = Encoder("tiny", pooling="cls", label_tower=True, max_length=8)
    q = enc.encode(["x y"], progress=False)
    z = enc.encode(["x y"], tower="label", progress=False)
    assert np.allclose(q, z, atol=1e-6)  # the label tower starts as a copy
    with torch.no_grad():
        for p in enc.label_backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
    assert not np.allclose(enc.encode(["x y"], tower="label", progress=False), q, atol=1e-3)
    enc.save(tmp_path / "enc")
    again = Encoder.load(tmp_path / "enc")
    assert again.pooling == "cls" and again.label_backbone is not None
    assert again.fingerprint() == enc.fingerprint()
    assert np.allclose(again.encode(["x y"], tower="label", progress=False),
                       enc.encode(["x y"], tower="label", progress=False), atol=1e-6)


def test_fingerprint_changes_with_weights(tiny):
    before = tiny.fingerprint()
    other = Encoder("tiny", seed=1)
    assert other.fingerprint() != before


def test_unknown_encoder_lists_what_is_available():
    with pytest.raises(ValueError, match="never downloads") as info:
        resolve_encoder("no-such-model-anywhere")
    assert "all-MiniLM-L6-v2" in str(info.value) and "tiny" in str(info.value)
    assert "tiny" in available_encoders()


def test_bad_encoder_options():
    with pytest.raises(ValueError, match="pooling"):
        Encoder("tiny", pooling="max")
    with pytest.raises(ValueError, match="max_length"):
        Encoder("tiny", max_length=1)
    with pytest.raises(ValueError, match="not a saved ramen Encoder"):
        Encoder.load("/nonexistent/dir")


def test_max_length_beyond_the_encoders_positions_is_refused_naming_both():
    """A max_length the model has no position embeddings for used to fail mid-training with a
    tensor-size RuntimeError, once a text was that long; it is refused when the encoder is built."""
    assert Encoder("tiny", max_length=128).max_length == 128
    with pytest.raises(ValueError, match=r"max_length \(--max-length\) 1000 .*'tiny'.* at most 128 tokens "
                                         r"\(max_position_embeddings"):
        Encoder("tiny", max_length=1000)
    with pytest.raises(ValueError, match=r"--max-length\) 513 .*at most 512 tokens"):
        Encoder("all-MiniLM-L6-v2", max_length=513)


def test_max_positions_of_other_model_families():
    """RoBERTa's 514 positions hold 512 tokens (its offset of pad_token_id + 1); DeBERTa without
    absolute positions has no limit to check."""
    from types import SimpleNamespace

    from ramen.encoder import max_positions

    assert max_positions(SimpleNamespace(max_position_embeddings=514, pad_token_id=1, model_type="xlm-roberta")) == 512
    assert max_positions(SimpleNamespace(max_position_embeddings=512, position_biased_input=False)) is None
    assert max_positions(SimpleNamespace(n_positions=1024)) == 1024 and max_positions(SimpleNamespace()) is None


def test_train_config_validation_and_files(tmp_path):
    with pytest.raises(ValueError, match="margin"):
        TrainConfig(margin=-1).validate()
    with pytest.raises(ValueError, match="num_negatives"):
        TrainConfig(num_negatives=0).validate()
    with pytest.raises(ValueError, match="reg_step must be"):
        TrainConfig(reg_step="both").validate()
    assert TrainConfig(graph=False, reg_step="separate").idle_settings() == ["reg_step='separate'"]  # train refuses it
    with pytest.raises(ValueError, match="unknown TrainConfig fields: bogus"):
        TrainConfig.from_dict({"bogus": 1})
    (tmp_path / "c.toml").write_text('epochs = 3\nlambdas = { hyperlink = [1.0, 0.5] }\n')
    cfg = TrainConfig.from_file(tmp_path / "c.toml")
    assert cfg.epochs == 3 and cfg.lambdas_for("hyperlink") == (1.0, 0.5)
    assert cfg.lambdas_for("category") == (cfg.lambda_x, cfg.lambda_z) == (0.1, 0.1)  # the defaults
    assert TrainConfig(query_graph=False).lambdas_for("x") == (0.0, 0.1)
    (tmp_path / "c.json").write_text(json.dumps(cfg.to_dict()))
    assert TrainConfig.from_file(tmp_path / "c.json") == cfg
    (tmp_path / "bad.toml").write_text("epochs = = 3")
    with pytest.raises(ValueError, match="bad.toml"):
        TrainConfig.from_file(tmp_path / "bad.toml")
