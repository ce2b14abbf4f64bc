"""The memory model and the up-front check: a run too large for the memory left stops before its
long work, naming the stage and the estimate (issue 26)."""
import dataclasses
import json

import numpy as np
import pytest

from ramen import memory
from ramen.config import TrainConfig
from ramen.datasets.synthetic import synthetic
from ramen.train import train


def tiny_config(**kw) -> TrainConfig:
    base = dict(encoder="tiny", graph=True, epochs=1, batch_size=32, walk_length=20, warmup_epochs=0, prune_every=1,
                encode_batch_size=64, cpu_bf16=False)
    cfg = TrainConfig(**{**base, **kw})  # the base's graph settings serve graph runs; a plain one leaves them unread
    return dataclasses.replace(cfg.without_idle(), **{k: v for k, v in kw.items() if k in cfg.idle_fields()})


def test_a_run_too_large_stops_before_densifying_naming_the_stage(tmp_path, monkeypatch):
    ds = synthetic("tiny", seed=0)
    monkeypatch.setenv(memory.AVAILABLE_ENV, "1MB")
    with pytest.raises(memory.NotEnoughMemory) as err:
        train(ds, tiny_config(), out_dir=tmp_path / "run", progress=False)
    text = str(err.value)
    assert "stage needs about" in text and "1.0 GB" not in text and "0.0 GB are available" in text
    assert memory.AVAILABLE_ENV in text and "densify" in text
    assert not (tmp_path / "run" / "cache").exists() or not any((tmp_path / "run" / "cache").iterdir())
    assert not (tmp_path / "run" / "checkpoint.safetensors").exists()


def test_a_run_that_fits_logs_its_estimate(tmp_path, monkeypatch):
    ds = synthetic("tiny", seed=0)
    monkeypatch.setenv(memory.AVAILABLE_ENV, "4GB")
    train(ds, tiny_config(), out_dir=tmp_path / "run", progress=False)
    import json

    info = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    est = [r for r in info if "memory_estimate" in r]
    assert len(est) == 1 and "4.0 GB available (RAMEN_MEMORY_AVAILABLE)" in est[0]["text"]
    assert set(est[0]["memory_estimate"]) >= {"densify", "tokenise", "prune", "evaluate", "label index", "checkpoint"}


def test_the_estimate_follows_the_arrays_dtypes(monkeypatch):
    """The model's stages are what its docstring derives from the arrays' dtypes and counts."""
    ds = synthetic("tiny", seed=0)
    cfg = TrainConfig(encoder="tiny", eval_max_queries=None)
    sets = sorted(ds.anchor_sets)
    est = memory.estimate_run(ds, cfg, 32, 1000, sets)
    tok = 4 * cfg.max_length + 4
    texts = len(ds.train_texts) + len(ds.label_texts) + sum(len(ds.anchor_sets[n].texts) for n in sets)
    graphs = sum((m.nnz + cfg.densify_top_k * m.shape[0]) * 8 + (m.shape[0] + 1) * 8
                 for n in sets for m in (ds.anchor_sets[n].train_X_A, ds.anchor_sets[n].label_A))
    assert est.stages["tokenise"] == 16_000 + graphs + tok * texts + 8192 * 2048
    # held: optimizer, densified and pruned graphs, token caches (test queries too); written: the graphs twice
    assert est.stages["checkpoint"] == 16_000 + 2 * graphs + tok * (texts + len(ds.test_texts)) + 2 * graphs
    two = memory.estimate_run(ds, cfg, 32, 1000, sets, ranks=2)
    assert two.peak()[1] == 2 * est.peak()[1]
    stage, need = two.peak()  # the message gives the sum and each rank's share, not the sum as a share
    monkeypatch.setenv(memory.AVAILABLE_ENV, str(need - 1))
    with pytest.raises(memory.NotEnoughMemory, match=fr"{stage} stage needs about {need / memory.GB:.1f} GB beyond "
                       fr"the loaded dataset \({need / 2 / memory.GB:.2f} GB for each of the 2 ranks on this machine\)"):
        memory.check_fits(two)
    plain = memory.estimate_run(ds, TrainConfig(encoder="tiny", graph=False), 32, 1000, [])
    assert plain.peak()[1] < est.peak()[1] and "prune" not in plain.stages


def test_pruning_holds_a_block_of_a_large_anchor_set(monkeypatch):
    """Pruning's estimate: the whole anchor set's embeddings, or a block and three copies of that
    set's graphs where that is less (then whatever the set's size)."""
    ds = synthetic("tiny", seed=0)
    cfg = TrainConfig(encoder="tiny")
    sets = sorted(ds.anchor_sets)
    dim = 768
    before = memory.estimate_run(ds, cfg, dim, 1000, sets).stages["prune"]
    biggest = max(len(ds.anchor_sets[n].texts) for n in sets)
    assert memory.prune_anchor_bytes(biggest, dim, 10**6) == 4 * dim * biggest
    monkeypatch.setattr(memory, "PRUNE_BLOCK_BYTES", 4 * dim * 64)
    assert memory.prune_anchor_bytes(biggest, dim, 10**4) == 4 * dim * 64 + 3 * 10**4
    assert memory.prune_anchor_bytes(10 * biggest, dim, 10**4) == 4 * dim * 64 + 3 * 10**4
    assert memory.prune_anchor_bytes(64, dim, 10**4) == 4 * dim * 64
    # blocks would hold more than every embedding when the graphs are large against them
    assert memory.prune_anchor_bytes(biggest, dim, 4 * dim * biggest) == 4 * dim * biggest
    blocked = memory.estimate_run(ds, cfg, dim, 1000, sets).stages["prune"]
    assert blocked != before


@pytest.mark.parametrize("text, want", [("12GB", 12 * 2**30), ("512MB", 512 * 2**20), ("1000", 1000),
                                        ("0.5GB", 2**29)])
def test_available_memory_can_be_given(monkeypatch, text, want):
    monkeypatch.setenv(memory.AVAILABLE_ENV, text)
    assert memory.available_bytes() == (want, memory.AVAILABLE_ENV)


@pytest.mark.parametrize("text", ["lots", "nan", "inf", "1e400", "-inf", "1e308GB", "-5GB", "-1", "0", "0MB", "0.5"])
def test_a_bad_available_figure_is_a_clear_error(monkeypatch, text):
    """inf and 1e400 used to raise a bare OverflowError, and a negative figure was taken (every run refused)."""
    monkeypatch.setenv(memory.AVAILABLE_ENV, text)
    with pytest.raises(ValueError, match=f"RAMEN_MEMORY_AVAILABLE='{text}': expected a positive, finite number"):
        memory.available_bytes()


def test_without_an_override_the_kernel_figure_is_used(monkeypatch):
    monkeypatch.delenv(memory.AVAILABLE_ENV, raising=False)
    have, source = memory.available_bytes()
    assert have > 0 and source in ("MemAvailable", "unknown")
    assert np.isfinite(have)


def test_the_end_of_a_run_embeds_the_label_set_once(tmp_path, monkeypatch):
    """The final evaluation, the exact index it searches and the saved HNSW index share one
    embedding of the labels (issue 26: the end of a run embedded them more than once)."""
    from ramen.encoder import Encoder

    ds = synthetic("tiny", seed=0)
    calls = []
    encode = Encoder.encode

    def counting(self, texts, *args, **kwargs):
        if kwargs.get("tower") == "label":
            calls.append(len(texts))
        return encode(self, texts, *args, **kwargs)

    monkeypatch.setattr(Encoder, "encode", counting)
    train(ds, tiny_config(graph=False, eval_every=0), out_dir=tmp_path / "run", progress=False)
    assert calls == [len(ds.label_texts)]


def test_token_caches_are_memory_mapped_from_the_first_run(tmp_path):
    """With a cache directory, the tokens a run has just tokenised are read back memory-mapped:
    file pages that every rank on the machine shares, not a private copy each (issue 26)."""
    from ramen.encoder import Encoder
    from ramen.run_cache import tokenize_cached

    encoder = Encoder("tiny", max_length=16)
    texts = ["graph regularised encoders", "tail labels", ""] * 5
    first = tokenize_cached(encoder, texts, tmp_path, "q")
    again = tokenize_cached(encoder, texts, tmp_path, "q")
    direct = encoder.tokenize(texts, progress=False)
    for cache in (first, again):
        assert isinstance(cache.ids, np.memmap) and isinstance(cache.lengths, np.memmap)
        assert np.array_equal(cache.ids, direct.ids) and np.array_equal(cache.lengths, direct.lengths)
    assert not isinstance(tokenize_cached(encoder, texts, None, "q").ids, np.memmap)  # no cache dir: in memory


def test_a_text_edited_anywhere_gets_tokens_of_its_own(tmp_path):
    """The token cache's key covers every text: editing one in the middle of a long list (the key
    once hashed only the first and last 1,000) tokenises again instead of reusing stale ids."""
    from ramen.encoder import Encoder
    from ramen.run_cache import tokenize_cached

    encoder = Encoder("tiny", max_length=16)
    texts = [f"query {i}" for i in range(2500)]
    first = tokenize_cached(encoder, texts, tmp_path, "q")
    edited = list(texts)
    edited[1250] = "an entirely different and longer text"
    second = tokenize_cached(encoder, edited, tmp_path, "q")
    direct = encoder.tokenize(edited, progress=False)
    assert np.array_equal(second.lengths, direct.lengths) and np.array_equal(second.ids, direct.ids)
    assert not np.array_equal(first.ids[1250], second.ids[1250])
    assert len(list(tmp_path.glob("tokens-q-*"))) == 2
    # a cache whose write stopped before sha256.json, written last, is not used
    entry = next(p for p in tmp_path.glob("tokens-q-*"))
    assert sorted(p.name for p in entry.iterdir()) == ["ids.npy", "lengths.npy", "pad_id.txt", "sha256.json"]


@pytest.mark.parametrize("damage", ["truncated", "same-size", "no-checksums", "checksums-forged"])
def test_a_token_cache_that_fails_its_check_is_rebuilt_naming_it(tmp_path, damage):
    """A saved token cache is used only when its files match the checksums written with them: one
    cut short, altered in place, written without checksums or crafted with matching ones is
    tokenised again, with a line naming it (before, a cut file stopped every run with an mmap error
    naming nothing, and an altered one was trained on silently)."""
    from ramen.encoder import Encoder
    from ramen.run_cache import tokenize_cached
    from ramen.files import file_sha256
    from ramen.tokens import CHECKSUMS

    encoder = Encoder("tiny", max_length=16)
    texts = [f"query {i} about graphs" for i in range(50)]
    tokenize_cached(encoder, texts, tmp_path, "q")
    entry = next(tmp_path.glob("tokens-q-*"))
    ids = entry / "ids.npy"
    data = bytearray(ids.read_bytes())
    if damage == "truncated":
        ids.write_bytes(data[:len(data) // 2])
    elif damage == "same-size":
        data[-200:-100] = bytes(100)
        ids.write_bytes(data)
    elif damage == "no-checksums":
        (entry / CHECKSUMS).unlink()
    else:  # ids out of the vocabulary, the checksum recomputed to match them
        np.save(ids, np.full((50, 16), 10**6, dtype=np.int32))
        sums = json.loads((entry / CHECKSUMS).read_text())
        (entry / CHECKSUMS).write_text(json.dumps({**sums, "ids.npy": file_sha256(ids)}))
    notices = []
    again = tokenize_cached(encoder, texts, tmp_path, "q", notices.append)
    direct = encoder.tokenize(texts, progress=False)
    assert np.array_equal(again.ids, direct.ids) and np.array_equal(again.lengths, direct.lengths)
    assert len(notices) == 1 and str(entry) in notices[0] and "tokenising again" in notices[0]
    notices.clear()
    assert np.array_equal(tokenize_cached(encoder, texts, tmp_path, "q", notices.append).ids, direct.ids)
    assert not notices  # the rebuilt cache passes its check


def test_a_tokenizer_changed_under_the_same_name_gets_tokens_of_its_own(tmp_path):
    """The token cache's key holds the tokenizer's definition, not the encoder's name: a model
    directory replaced in place (here: a token added to the vocabulary) tokenises again."""
    from ramen.encoder import Encoder
    from ramen.run_cache import tokenize_cached

    texts = ["zzqqxx graph", "tail labels"]
    first = tokenize_cached(Encoder("tiny", max_length=16), texts, tmp_path, "q")
    changed = Encoder("tiny", max_length=16)
    changed.tokenizer.add_tokens(["zzqqxx"])
    second = tokenize_cached(changed, texts, tmp_path, "q")
    assert np.array_equal(second.ids, changed.tokenize(texts, progress=False).ids)
    assert not np.array_equal(first.ids, second.ids) and len(list(tmp_path.glob("tokens-q-*"))) == 2


def test_content_keys_tell_apart_what_makes_a_cache_entry():
    import scipy.sparse as sp

    from ramen.digest import content_key, data_fingerprint, differing
    from ramen.datasets.synthetic import synthetic

    m = sp.csr_matrix(np.array([[0, 1.0], [2.0, 0]], dtype=np.float32))
    other = m.copy()
    other.data[0] = 3.0
    assert content_key(m) != content_key(other)
    assert content_key(sp.csr_array(m)) == content_key(m) != content_key(sp.csr_array(other))  # not by str()
    assert content_key(m.astype(np.float64)) != content_key(m)  # dtype counts
    a = np.arange(6, dtype=np.int32)
    assert content_key(a) != content_key(a.reshape(2, 3)) != content_key(a.astype(np.int64))
    assert content_key(["ab", "c"]) != content_key(["a", "bc"])  # texts keep their boundaries
    ds = synthetic("tiny", seed=0)
    fp = data_fingerprint(ds)
    assert fp == data_fingerprint(synthetic("tiny", seed=0))
    ds.A = 0.6
    assert differing(fp, data_fingerprint(ds)) == ["propensity constants"]


def test_the_tokenizer_digest_ignores_state_that_tokenising_sets():
    """Tokenising sets the fast tokenizer's truncation and padding: a rank that has tokenised and one
    that has not must still find the same cache entry."""
    from ramen.encoder import Encoder
    from ramen.run_cache import tokenizer_digest

    encoder = Encoder("tiny", max_length=16)
    before = tokenizer_digest(encoder.tokenizer)
    encoder.tokenize(["a b c"], progress=False)
    assert tokenizer_digest(encoder.tokenizer) == before
