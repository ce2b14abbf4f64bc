"""Synthetic extreme-classification benchmark with known structure: `synthetic("small")`.

Every trait that makes XC hard and that RAMEN claims to address is a parameter of
`SyntheticConfig`; the presets "tiny" (tests), "small" (quickstart), "medium" (an hour of CPU
training) and "paper" (the scale of LF-WikiSeeAlsoTitles-320K) fix them. The defaults were fixed
in issue 2 for realism and must not be tuned toward any method. The same seed gives the same
dataset bit for bit; each stage draws from its own stream spawned from the seed, so overriding an
anchor-set parameter leaves texts and labels unchanged. `generate(config, seed=...)` also returns
the latent structure (`SyntheticTruth`) for analysis.

Generative process
------------------
T topics (`num_topics`) lie on a ring; the neighbours of topic t are t±1 .. t±r (mod T),
r = `topic_neighbours`. Each topic has S subtopics (`subtopics_per_topic`). Zipf(n, a) draws rank
k in 1..n with probability ∝ k^-a. A text of kind K has K_len[0] + Binomial(K_len[1] - K_len[0],
`length_p`) words; a word repeated within a text is drawn again (4 times at most, then dropped).

1. Words: pseudo-words spelled from syllables onset + vowel + optional final consonant (16 x 5 x 8
   syllables, open with probability 1/2: "kelvora", "tisbun"; WordPiece cuts them into 2-4
   pieces), no word list. Distinct syllable sequences spell distinct strings, so pools are disjoint:
   - `generic_words` generic 2-syllable words shared by all topics, used with Zipf(., word_zipf);
   - `topic_words` own 2-syllable words per topic, used with Zipf(., word_zipf);
   - per subtopic, a vocabulary of `subtopic_words` words: a uniform subset of its topic's own
     words (the subtopics of a topic share words);
   - one unique 3-syllable name word per label and per anchor (like "Crown" in "Crown group").
   A *topic word* of t is one of t's own words with probability 1 - `topic_overlap`, else one of
   a uniformly chosen neighbour's (topic vocabularies overlap: a word hints at a topic without
   identifying it). A *subtopic word* is uniform over the subtopic's vocabulary.
2. Labels (entities): label l gets a subtopic (one label per subtopic, the rest uniform), hence a
   topic, and popularity pi_l ∝ rank_l^-`label_zipf`, rank_l a random permutation of 1..L. Text:
   its name word, then `label_len` - 1 words, each a subtopic word, a topic word or a generic word
   with probabilities `label_mix`.
3. Queries (train and test alike): a primary label l1 ~ pi gives the query its subtopic and topic.
   Its complete ground truth Y*_q holds 1 + Poisson(`labels_per_query` - 1) labels (at most 20):
   l1 and others drawn, with probabilities `related_mix`, from its subtopic, its topic or a
   uniformly chosen neighbouring topic, ∝ pi within that set (a repeat is drawn again, 4 times at
   most, then merges). Text: `query_len` words, each, with probabilities `query_mix`, a word of
   the text of a uniform label of Y*_q, a subtopic word, a topic word or a generic word: text is
   informative but ambiguous. The first `num_train` queries are train, the next `num_test` test;
   a test text equal to a train text is redrawn (text only) until none is: all test queries are
   unseen.
4. Missing labels: each train pair (q, l) of Y* is dropped from train_Y with probability
   `miss_head` + (`miss_tail` - `miss_head`) * (rank_l - 1) / (L - 1): tail labels go missing more
   often. A query that loses all its labels keeps its lowest-id one. test_Y = Y* (complete);
   test_filter is empty; propensity constants A = 0.55, B = 1.5 (as LF-WikiSeeAlsoTitles).
5. Anchor sets "hyperlink" (large, noisy) and "category" (small, cleaner) follow one process with
   their own parameters `<set>_anchors`, `_query_degree`, `_label_degree`, `_random_frac`,
   `_via_label`, `_subtopic_frac`, `_share_word`. Each anchor gets a subtopic (every topic at
   least one anchor, otherwise uniform) and popularity ∝ rank^-`anchor_zipf`. A *topical* edge of
   a node goes, ∝ popularity, to an anchor of the node's subtopic with probability
   `_subtopic_frac` (when the subtopic has one), else of its topic; a *random* edge goes to any
   anchor ∝ popularity (hub pages).
   - label l: 1 + Poisson(`_label_degree` - 1) edges, each random with probability `_random_frac`,
     else topical;
   - query q (train and test): 1 + Poisson(`_query_degree` - 1) edges, each random with
     probability `_random_frac`; else, with probability `_via_label`, an anchor topically linked
     to a uniform label of Y*_q (missing labels included: the graph knows links that train_Y
     lacks), else topical.
   A repeated edge is drawn again (4 times at most, then it merges): a random one at random, any
   other as a topical edge to the node's topic (any subtopic); a merged edge counts as random
   only if every draw of it was.
   - anchor text: its name word and `anchor_len` - 1 words drawn like a label's, then, with
     probability `_share_word`, the name word of a uniform label topically linked to it: anchor
     texts share words with their labels, tail labels included.

Presets (seed 0; `benchmarks/synthetic_presets.py`, results in `benchmarks/results/synthetic.md`).
"Oracle" ranks labels by the cosine of TF-IDF vectors of test query and label texts, no training
(on "paper", the first 5,000 test queries); chance P@1 = labels per test query / labels.

| seed 0                             | tiny  | small  | medium    | paper      |
|------------------------------------|-------|--------|-----------|------------|
| train queries                      | 300   | 4,000  | 32,000    | 693,082    |
| test queries                       | 100   | 1,000  | 8,000     | 177,515    |
| labels                             | 150   | 2,000  | 15,000    | 312,330    |
| labels per train query (test)      | 2.31 (2.32) | 2.09 (2.41) | 2.12 (2.44) | 2.11 (2.41) |
| train queries per label            | 4.63  | 4.18   | 4.52      | 4.68       |
| labels with <= 2 (0) train queries | 41% (5%) | 52% (13%) | 51% (12%) | 51% (12%) |
| missing rate: head 10%, tail 50%   | 5%, 24% | 5%, 28% | 5%, 28% | 5%, 28%   |
| hyperlink anchors                  | 400   | 5,000  | 60,000    | 2,458,399  |
|   edges per query, per label       | 6.1, 3.1 | 11.9, 5.0 | 19.9, 6.0 | 38.7, 7.7 |
|   random edges                     | 35%   | 35%    | 35%       | 35%        |
| category anchors                   | 40    | 400    | 6,000     | 656,086    |
|   edges per query, per label       | 1.9, 1.9 | 2.9, 2.9 | 4.0, 3.9 | 4.7, 4.8 |
|   random edges                     | 10%   | 11%    | 10%       | 10%        |
| graph edges (both sets, all nodes) | 3,916 | 89,614 | 1,103,181 | 41,739,013 |
| chance P@1                         | 1.6%  | 0.12%  | 0.016%    | 0.0008%    |
| TF-IDF oracle P@1, P@5             | 42%, 18% | 36%, 15% | 37%, 14% | 31%, 12% |
| generation seconds (2 shared cores) | 0.013 | 0.07  | 1.2       | 93 (58 CPU s), 3.1 GiB |

LF-WikiSeeAlsoTitles-320K (the paper's Table 9): 2.11 labels per query, 4.67 queries per label,
hyperlink 38.9 per query and 7.7 per label, category 4.7 and 4.8.
"""
from __future__ import annotations

import dataclasses
import sys
import types
from typing import Any

import numpy as np
import scipy.sparse as sp

from ramen.datasets._sampling import (Grouped, csr_unique, draw_cdf, draw_unique, keep_nonzeros,
                             pick_neighbour, ragged, replace_rows, text_hash, without_repeats,
                             zipf_cdf)
from ramen.datasets.dataset import AnchorSet, Dataset
from ramen.progress import bar as progress_bar

ANCHOR_SETS = ("hyperlink", "category")
_ANCHOR_FIELDS = ("anchors", "query_degree", "label_degree", "random_frac", "via_label",
                  "subtopic_frac", "share_word")
_MAX_LABELS = 20  # cap on the labels drawn per query
_ONSETS = np.frombuffer(b"bdfghjklmnprstvz", dtype=np.uint8)
_VOWELS = np.frombuffer(b"aeiou", dtype=np.uint8)
_CODAS = np.frombuffer(b"\0nrlsmkt", dtype=np.uint8)  # \0: open syllable
_SYLLABLES = len(_ONSETS) * len(_VOWELS) * len(_CODAS)  # 640
_OPEN = 0.5  # probability that a syllable has no final consonant
_STREAMS = ("words", "labels", "queries", "query_texts", "unseen", "missing", *ANCHOR_SETS)


@dataclasses.dataclass(frozen=True)
class SyntheticConfig:
    """Every parameter of the generative process (see the module docstring)."""

    num_train: int
    num_test: int
    num_labels: int
    num_topics: int
    subtopics_per_topic: int
    topic_words: int  # own words per topic
    subtopic_words: int  # vocabulary size of a subtopic (a subset of its topic's words)
    generic_words: int
    hyperlink_anchors: int
    hyperlink_query_degree: float
    hyperlink_label_degree: float
    category_anchors: int
    category_query_degree: float
    category_label_degree: float
    topic_neighbours: int = 2
    topic_overlap: float = 0.15
    word_zipf: float = 1.0
    label_zipf: float = 0.75
    anchor_zipf: float = 0.8
    labels_per_query: float = 2.6
    # P(a further label is from the same subtopic, the same topic, a neighbouring topic)
    related_mix: tuple[float, float, float] = (0.6, 0.3, 0.1)
    query_len: tuple[int, int] = (3, 8)
    label_len: tuple[int, int] = (2, 5)
    anchor_len: tuple[int, int] = (2, 5)
    length_p: float = 0.35
    # P(a query word is a word of one of its labels, a subtopic, topic or generic word)
    query_mix: tuple[float, float, float, float] = (0.15, 0.35, 0.3, 0.2)
    # P(a label or anchor word after the name is a subtopic, topic or generic word)
    label_mix: tuple[float, float, float] = (0.6, 0.25, 0.15)
    miss_head: float = 0.05
    miss_tail: float = 0.4
    hyperlink_random_frac: float = 0.35
    hyperlink_via_label: float = 0.25
    hyperlink_subtopic_frac: float = 0.5
    hyperlink_share_word: float = 0.3
    category_random_frac: float = 0.1
    category_via_label: float = 0.25
    category_subtopic_frac: float = 0.8
    category_share_word: float = 0.3

    def __post_init__(self) -> None:
        _validate(self)

    @classmethod
    def preset(cls, size: str = "small", **overrides: Any) -> SyntheticConfig:
        """The preset `size` ("tiny" | "small" | "medium" | "paper"), single fields overridden."""
        if size not in PRESETS:
            raise ValueError(f"size: unknown preset {size!r}; choose one of {sorted(PRESETS)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(f"synthetic: unknown parameter(s) {unknown}; known: {sorted(known)}")
        return cls(**{**PRESETS[size], **overrides})

    def anchor_params(self, name: str) -> dict[str, float]:
        """The parameters of anchor set `name` without their prefix."""
        return {f: getattr(self, f"{name}_{f}") for f in _ANCHOR_FIELDS}


PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(num_train=300, num_test=100, num_labels=150, num_topics=6, subtopics_per_topic=4,
                 topic_words=25, subtopic_words=8, generic_words=30,
                 hyperlink_anchors=400, hyperlink_query_degree=6.0, hyperlink_label_degree=3.0,
                 category_anchors=40, category_query_degree=2.0, category_label_degree=2.0),
    "small": dict(num_train=4000, num_test=1000, num_labels=2000, num_topics=40,
                  subtopics_per_topic=8, topic_words=40, subtopic_words=10, generic_words=150,
                  hyperlink_anchors=5000, hyperlink_query_degree=12.0, hyperlink_label_degree=5.0,
                  category_anchors=400, category_query_degree=3.0, category_label_degree=3.0),
    "medium": dict(num_train=32000, num_test=8000, num_labels=15000, num_topics=200,
                   subtopics_per_topic=10, topic_words=60, subtopic_words=12, generic_words=400,
                   hyperlink_anchors=60000, hyperlink_query_degree=20.0,
                   hyperlink_label_degree=6.0, category_anchors=6000,
                   category_query_degree=4.0, category_label_degree=4.0),
    "paper": dict(num_train=693082, num_test=177515, num_labels=312330, num_topics=2000,
                  subtopics_per_topic=16, topic_words=80, subtopic_words=12, generic_words=2000,
                  hyperlink_anchors=2458399, hyperlink_query_degree=38.87,
                  hyperlink_label_degree=7.71, category_anchors=656086,
                  category_query_degree=4.74, category_label_degree=4.82),
}


def _validate(c: SyntheticConfig) -> None:
    def fail(field: str, why: str) -> None:
        raise ValueError(f"SyntheticConfig.{field}: {why} (got {getattr(c, field)!r})")

    def real(v: Any) -> bool:
        return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)

    def in_range(field: str, lo: float, hi: float) -> None:
        v = getattr(c, field)
        if not real(v) or not lo <= v <= hi:  # NaN fails too
            fail(field, f"must be a number in [{lo}, {hi}]")

    for f in ("num_train", "num_test", "num_labels", "num_topics", "subtopics_per_topic",
              "topic_words", "subtopic_words", "generic_words", "topic_neighbours",
              *(f"{s}_anchors" for s in ANCHOR_SETS)):
        v = getattr(c, f)
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
            fail(f, "must be an integer >= 1")
    if c.subtopic_words > c.topic_words:
        fail("subtopic_words", "must be <= topic_words")
    if c.num_labels < c.num_topics * c.subtopics_per_topic:
        fail("num_labels", "must be >= num_topics * subtopics_per_topic (one label per subtopic)")
    if 2 * c.topic_neighbours >= c.num_topics:
        fail("topic_neighbours", "2 * topic_neighbours must be < num_topics (distinct neighbours)")
    for s in ANCHOR_SETS:
        if getattr(c, f"{s}_anchors") < c.num_topics:
            fail(f"{s}_anchors", "must be >= num_topics (every topic has an anchor)")
        for f in ("query_degree", "label_degree"):
            in_range(f"{s}_{f}", 1.0, 1e4)
        for f in ("random_frac", "via_label", "subtopic_frac", "share_word"):
            in_range(f"{s}_{f}", 0.0, 1.0)
    for f in ("topic_overlap", "length_p", "miss_head"):
        in_range(f, 0.0, 1.0)
    in_range("miss_tail", 0.0, 0.99)
    for f in ("word_zipf", "label_zipf", "anchor_zipf"):
        in_range(f, 0.0, 5.0)
    in_range("labels_per_query", 1.0, _MAX_LABELS)
    for f, n in (("related_mix", 3), ("query_mix", 4), ("label_mix", 3)):
        v = getattr(c, f)
        if (not isinstance(v, (tuple, list)) or len(v) != n
                or not all(real(x) and x >= 0 for x in v) or abs(sum(v) - 1.0) > 1e-9):
            fail(f, f"must be {n} non-negative probabilities summing to 1")
    for f in ("query_len", "label_len", "anchor_len"):
        v = getattr(c, f)
        if (not isinstance(v, (tuple, list)) or len(v) != 2
                or not all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in v)
                or not 1 <= v[0] <= v[1] <= 30):
            fail(f, "must be integers (min, max) with 1 <= min <= max <= 30")


def synthetic(size: str = "small", *, seed: int = 0, **overrides: Any) -> Dataset:
    """A synthetic XC dataset: preset `size` ("tiny" | "small" | "medium" | "paper"), any
    `SyntheticConfig` field overridden by keyword; identical for the same seed."""
    config = SyntheticConfig.preset(size, **overrides)
    dataset, _ = generate(config, seed=seed)
    extra = "".join(f"-{k}={overrides[k]}" for k in sorted(overrides))
    dataset.name = f"synthetic-{size}-seed{seed}{extra}"
    return dataset


@dataclasses.dataclass
class SyntheticTruth:
    """Latent structure behind a synthetic dataset: for tests and analysis, never for training."""

    config: SyntheticConfig
    label_subtopic: np.ndarray  # (L,) subtopic id t * S + s; topic = id // S
    label_rank: np.ndarray  # (L,) popularity rank, 1 = most popular
    train_subtopic: np.ndarray  # (N,)
    test_subtopic: np.ndarray  # (N_test,)
    train_Y_full: sp.csr_matrix  # (N, L) complete train ground truth, before labels went missing
    anchor_subtopic: dict[str, np.ndarray]  # set -> (M,)
    anchor_popularity: dict[str, np.ndarray]  # set -> (M,) sums to 1
    random_edges: dict[str, dict[str, np.ndarray]]  # set -> "train"|"test"|"label" -> bool per nnz


def generate(config: SyntheticConfig, *, seed: int = 0) -> tuple[Dataset, SyntheticTruth]:
    """The dataset of `config` for `seed`, with its latent structure."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed: must be a non-negative integer (got {seed!r})")
    c = config
    seqs = np.random.SeedSequence(int(seed)).spawn(len(_STREAMS))
    rng = {name: np.random.Generator(np.random.PCG64(s)) for name, s in zip(_STREAMS, seqs)}
    n_query = c.num_train + c.num_test
    n_names = c.num_labels + sum(getattr(c, f"{s}_anchors") for s in ANCHOR_SETS)
    bar = progress_bar(total=4 + len(ANCHOR_SETS), desc="synthetic", unit="stage",
               disable=n_query + n_names < 1_000_000)  # shown from "paper"-like sizes
    bar.set_postfix_str("words")
    vocab = _Vocab(c, rng["words"], n_names)
    bar.update()
    bar.set_postfix_str("labels")

    # labels: subtopic, popularity, text (name word first)
    r = rng["labels"]
    n_sub = c.num_topics * c.subtopics_per_topic
    label_sub = r.permutation(np.concatenate(
        [np.arange(n_sub), r.integers(0, n_sub, c.num_labels - n_sub)]))
    label_rank = r.permutation(c.num_labels) + 1
    popularity = label_rank.astype(np.float64) ** -c.label_zipf
    popularity /= popularity.sum()
    label_ptr, label_tok = _entity_texts(r, vocab, label_sub, c.label_len, c.label_mix,
                                         vocab.name_base + np.arange(c.num_labels))

    bar.update()
    bar.set_postfix_str("queries")
    # queries: complete ground truth Y*, then texts; test texts unseen in train
    by_sub = Grouped(label_sub, popularity, n_sub)
    by_topic = Grouped(label_sub // c.subtopics_per_topic, popularity, c.num_topics)
    Y_full, query_sub = _draw_relevance(rng["queries"], c, n_query, popularity, label_sub,
                                        by_sub, by_topic)
    texts = _QueryTexts(c, vocab, Y_full, query_sub, label_ptr, label_tok)
    q_ptr, q_tok = texts.draw(rng["query_texts"], np.arange(n_query))
    q_ptr, q_tok = _make_unseen(rng["unseen"], texts, q_ptr, q_tok, c.num_train)

    train_full = Y_full[: c.num_train]
    train_Y = _drop_missing(rng["missing"], c, train_full, label_rank)
    bar.update()

    # anchor sets
    anchor_sets, truth_sub, truth_pop, truth_rand = {}, {}, {}, {}
    name_base = vocab.name_base + c.num_labels
    for s in ANCHOR_SETS:
        bar.set_postfix_str(f"{s} anchors")
        p = c.anchor_params(s)
        built = _anchor_set(rng[s], c, p, vocab, name_base, label_sub, query_sub, Y_full)
        name_base += p["anchors"]
        a_ptr, a_tok, X_A, label_A, x_rand, l_rand, a_sub, a_pop = built
        train_X_A, test_X_A = X_A[: c.num_train], X_A[c.num_train:]
        split = train_X_A.nnz
        anchor_sets[s] = AnchorSet(texts=vocab.render(a_ptr, a_tok), train_X_A=train_X_A,
                                   label_A=label_A, test_X_A=test_X_A)
        truth_sub[s], truth_pop[s] = a_sub, a_pop
        truth_rand[s] = {"train": x_rand[:split], "test": x_rand[split:], "label": l_rand}
        bar.update()

    bar.set_postfix_str("texts")
    query_texts = vocab.render(q_ptr, q_tok)
    dataset = Dataset(
        train_texts=query_texts[: c.num_train], test_texts=query_texts[c.num_train:],
        label_texts=vocab.render(label_ptr, label_tok), train_Y=train_Y,
        test_Y=Y_full[c.num_train:], anchor_sets=anchor_sets,
        test_filter=np.zeros((0, 2), dtype=np.int64), A=0.55, B=1.5, name=f"synthetic-seed{seed}")
    truth = SyntheticTruth(c, label_sub, label_rank, query_sub[: c.num_train],
                           query_sub[c.num_train:], train_full, truth_sub, truth_pop, truth_rand)
    bar.update()
    bar.close()
    return dataset, truth


# ---- words ----


class _Vocab:
    """Word spellings and the word distributions of topics, subtopics and generic words.

    Word ids: [generic | topic t's own words, t = 0..T-1 | name words]."""

    def __init__(self, c: SyntheticConfig, rng: np.random.Generator, n_names: int) -> None:
        self.c = c
        n_common = c.generic_words + c.num_topics * c.topic_words
        if n_common > _SYLLABLES ** 2 // 2:
            raise ValueError(f"SyntheticConfig: generic_words + num_topics * topic_words = "
                             f"{n_common} exceeds the {_SYLLABLES ** 2 // 2} two-syllable words "
                             "available")
        chars2, len2 = _distinct_words(rng, n_common, 2)
        chars3, len3 = _distinct_words(rng, n_names, 3)
        self.chars = np.zeros((n_common + n_names, 9), dtype=np.uint8)
        self.chars[:n_common, :6] = chars2
        self.chars[n_common:] = chars3
        self.lens = np.concatenate([len2, len3])
        self.topic_base = c.generic_words
        self.name_base = n_common
        self.generic_cdf = zipf_cdf(c.generic_words, c.word_zipf)
        self.topic_cdf = zipf_cdf(c.topic_words, c.word_zipf)
        n_sub = c.num_topics * c.subtopics_per_topic
        pick = np.argsort(rng.random((n_sub, c.topic_words)), axis=1)[:, : c.subtopic_words]
        topic_of_sub = np.arange(n_sub) // c.subtopics_per_topic
        self.sub_vocab = self.topic_base + topic_of_sub[:, None] * c.topic_words + pick

    def words(self, rng: np.random.Generator, sub: np.ndarray, kind: np.ndarray) -> np.ndarray:
        """One word per entry: kind 0 a subtopic word of `sub`, 1 a topic word, 2 a generic word."""
        c = self.c
        out = np.empty(len(sub), dtype=np.int64)
        m = kind == 0
        out[m] = self.sub_vocab[sub[m], rng.integers(0, c.subtopic_words, int(m.sum()))]
        m = kind == 1
        topic = sub[m] // c.subtopics_per_topic
        shift = _neighbour_shift(rng, c, len(topic))
        borrow = rng.random(len(topic)) < c.topic_overlap
        topic = np.where(borrow, (topic + shift) % c.num_topics, topic)
        out[m] = self.topic_base + topic * c.topic_words + draw_cdf(rng, self.topic_cdf, len(topic))
        m = kind == 2
        out[m] = draw_cdf(rng, self.generic_cdf, int(m.sum()))
        return out

    def render(self, ptr: np.ndarray, tok: np.ndarray, chunk: int = 1 << 22) -> list[str]:
        """Texts from ragged word ids (text i = tok[ptr[i]:ptr[i+1]], at least one word each)."""
        out: list[str] = []
        starts = np.searchsorted(ptr, np.arange(0, ptr[-1], chunk))
        bounds = np.unique(np.concatenate([starts, [len(ptr) - 1]]))
        for a, b in zip(bounds[:-1], bounds[1:]):
            t = tok[ptr[a]: ptr[b]]
            lens = self.lens[t].astype(np.int64)
            start = np.concatenate([[0], np.cumsum(lens + 1)[:-1]])
            buf = np.full(int((lens + 1).sum()), ord(" "), dtype=np.uint8)
            for j in range(self.chars.shape[1]):
                m = lens > j
                buf[start[m] + j] = self.chars[t[m], j]
            last = ptr[a + 1: b + 1] - ptr[a] - 1  # each text's last word
            buf[start[last] + lens[last]] = ord("\n")
            out.extend(buf.tobytes().decode("ascii").split("\n")[:-1])
        return out


def _distinct_words(rng: np.random.Generator, n: int, n_syl: int) -> tuple[np.ndarray, np.ndarray]:
    """n distinct words of n_syl syllables, as (n, 3 * n_syl) uint8 spellings and lengths.

    Syllables: onset and vowel uniform, no final consonant with probability `_OPEN`, else one of
    7. Draw order is kept, repeats are redrawn."""
    codes = np.zeros(0, dtype=np.int64)
    while len(codes) < n:
        m = int(1.3 * (n - len(codes))) + 64
        coda = np.where(rng.random((m, n_syl)) < _OPEN, 0, rng.integers(1, len(_CODAS), (m, n_syl)))
        syl = (rng.integers(0, len(_ONSETS), (m, n_syl)) * len(_VOWELS)
               + rng.integers(0, len(_VOWELS), (m, n_syl))) * len(_CODAS) + coda
        new = (syl * _SYLLABLES ** np.arange(n_syl)).sum(axis=1)
        codes = np.concatenate([codes, new])
        _, first = np.unique(codes, return_index=True)
        codes = codes[np.sort(first)]
    codes = codes[:n]
    cols = []
    for k in range(n_syl):
        syl = (codes // _SYLLABLES ** k) % _SYLLABLES
        cols += [_ONSETS[syl // 40], _VOWELS[(syl // 8) % 5], _CODAS[syl % 8]]
    chars = np.stack(cols, axis=1)
    chars = np.take_along_axis(chars, np.argsort(chars == 0, axis=1, kind="stable"), axis=1)
    return chars, (chars != 0).sum(axis=1)


def _lengths(rng: np.random.Generator, n: int, bounds: tuple[int, int], p: float) -> np.ndarray:
    return bounds[0] + rng.binomial(bounds[1] - bounds[0], p, n)


def _neighbour_shift(rng: np.random.Generator, c: SyntheticConfig, n: int) -> np.ndarray:
    """n uniform offsets from a topic to one of its neighbours: ±1 .. ±topic_neighbours."""
    return rng.integers(1, c.topic_neighbours + 1, n) * rng.choice([-1, 1], n)


def _entity_texts(rng: np.random.Generator, vocab: _Vocab, sub: np.ndarray,
                  bounds: tuple[int, int], mix: tuple[float, ...], names: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Label/anchor texts: name word then words from subtopic, topic, generic with `mix`."""
    ptr, owner = ragged(_lengths(rng, len(sub), bounds, vocab.c.length_p))
    kind = draw_cdf(rng, np.cumsum(mix), len(owner))
    first = np.zeros(len(owner), dtype=bool)
    first[ptr[:-1]] = True

    def word_at(i: np.ndarray) -> np.ndarray:
        return np.where(first[i], names[owner[i]], vocab.words(rng, sub[owner[i]], kind[i]))

    return without_repeats(ptr, owner, word_at)


# ---- labels and queries ----


def _draw_relevance(rng: np.random.Generator, c: SyntheticConfig, n: int, popularity: np.ndarray,
                    label_sub: np.ndarray, by_sub: Grouped, by_topic: Grouped
                    ) -> tuple[sp.csr_matrix, np.ndarray]:
    """Complete ground truth Y* (n x L) and each query's subtopic (n,)."""
    primary = draw_cdf(rng, np.cumsum(popularity), n)
    sub = label_sub[primary]
    extra = np.minimum(rng.poisson(c.labels_per_query - 1.0, n), _MAX_LABELS - 1)
    _, owner = ragged(extra)
    # kind 0: primary; 1, 2, 3: from the same subtopic, the same topic, a neighbouring topic
    kind = np.concatenate([np.zeros(n, dtype=np.int64),
                           1 + draw_cdf(rng, np.cumsum(c.related_mix), len(owner))])
    rows = np.concatenate([np.arange(n), owner])

    def related(rows: np.ndarray, kind: np.ndarray, again: bool) -> np.ndarray:
        topic = sub[rows] // c.subtopics_per_topic
        shift = _neighbour_shift(rng, c, len(rows))
        topic = np.where(kind == 3, (topic + shift) % c.num_topics, topic)
        out = np.where(kind == 0, primary[rows], 0)
        m = kind == 1
        out[m] = by_sub.draw(rng, sub[rows[m]])
        m = kind >= 2
        out[m] = by_topic.draw(rng, topic[m])
        return out

    rows, cols, kind = draw_unique(rows, kind, related, c.num_labels)
    Y, _ = csr_unique(rows, cols, kind, 4, (n, c.num_labels))
    return Y, sub


class _QueryTexts:
    """Draws query texts given the queries' complete labels (so they can be redrawn)."""

    def __init__(self, c: SyntheticConfig, vocab: _Vocab, Y: sp.csr_matrix, sub: np.ndarray,
                 label_ptr: np.ndarray, label_tok: np.ndarray) -> None:
        self.c, self.vocab, self.Y, self.sub = c, vocab, Y, sub
        self.label_ptr, self.label_tok = label_ptr, label_tok

    def draw(self, rng: np.random.Generator, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = self.c
        ptr, owner = ragged(_lengths(rng, len(queries), c.query_len, c.length_p))
        q = queries[owner]
        kind = draw_cdf(rng, np.cumsum(c.query_mix), len(q))

        def word_at(i: np.ndarray) -> np.ndarray:
            tok = np.empty(len(i), dtype=np.int64)
            m = kind[i] == 0  # a word of one of the query's labels
            label = pick_neighbour(rng, self.Y.indptr, self.Y.indices, q[i[m]])
            tok[m] = pick_neighbour(rng, self.label_ptr, self.label_tok, label)
            tok[~m] = self.vocab.words(rng, self.sub[q[i[~m]]], kind[i[~m]] - 1)
            return tok

        return without_repeats(ptr, owner, word_at)


def _make_unseen(rng: np.random.Generator, texts: _QueryTexts, ptr: np.ndarray, tok: np.ndarray,
                 n_train: int) -> tuple[np.ndarray, np.ndarray]:
    """Redraw test texts (rows >= n_train) equal to a train text until there are none."""
    train_h = np.unique(text_hash(ptr[: n_train + 1], tok[: ptr[n_train]]))
    for _ in range(100):
        test_h = text_hash(ptr[n_train:] - ptr[n_train], tok[ptr[n_train]:])
        seen = n_train + np.flatnonzero(np.isin(test_h, train_h))
        if len(seen) == 0:
            return ptr, tok
        ptr, tok = replace_rows(ptr, tok, seen, *texts.draw(rng, seen))
    raise ValueError("SyntheticConfig: could not make test texts differ from train texts; "
                     "increase query_len, topic_words or subtopic_words")


def _drop_missing(rng: np.random.Generator, c: SyntheticConfig, Y: sp.csr_matrix,
                  label_rank: np.ndarray) -> sp.csr_matrix:
    """train_Y: Y* with each pair dropped with a probability rising from head to tail labels."""
    tail = (label_rank[Y.indices] - 1) / max(c.num_labels - 1, 1)
    drop = rng.random(Y.nnz) < c.miss_head + (c.miss_tail - c.miss_head) * tail
    rows = np.repeat(np.arange(Y.shape[0]), np.diff(Y.indptr))
    emptied = np.bincount(rows, weights=~drop, minlength=Y.shape[0]) == 0
    drop[Y.indptr[:-1][emptied]] = False  # keep the lowest-id label of a query that lost them all
    return keep_nonzeros(Y, ~drop)


# ---- anchor sets ----


def _anchor_set(rng: np.random.Generator, c: SyntheticConfig, p: dict[str, float], vocab: _Vocab,
                name_base: int, label_sub: np.ndarray, query_sub: np.ndarray, Y: sp.csr_matrix):
    """One anchor set: texts, query x anchor and label x anchor graphs, random-edge masks."""
    n_anchors, S = int(p["anchors"]), c.subtopics_per_topic
    n_sub = c.num_topics * S
    topic = np.concatenate([np.arange(c.num_topics),
                            rng.integers(0, c.num_topics, n_anchors - c.num_topics)])
    a_sub = rng.permutation(topic * S + rng.integers(0, S, n_anchors))
    pop = rng.permutation(n_anchors).astype(np.float64) + 1.0
    pop = pop ** -c.anchor_zipf
    pop /= pop.sum()
    by_sub, by_topic = Grouped(a_sub, pop, n_sub), Grouped(a_sub // S, pop, c.num_topics)
    cdf = np.cumsum(pop)

    def topical(sub: np.ndarray, again: bool) -> np.ndarray:
        own = (rng.random(len(sub)) < p["subtopic_frac"]) & (by_sub.size(sub) > 0) & (not again)
        out = np.empty(len(sub), dtype=np.int64)
        out[own] = by_sub.draw(rng, sub[own])
        out[~own] = by_topic.draw(rng, sub[~own] // S)
        return out

    def edges(n: int, degree: float, node_sub: np.ndarray, Y: sp.csr_matrix | None,
              topical_A: sp.csr_matrix | None) -> tuple[sp.csr_matrix, np.ndarray]:
        """Each node's edges: kind 0 topical, 1 via one of its labels' topical anchors, 2 random."""
        _, rows = ragged(1 + rng.poisson(degree - 1.0, n))
        rand = rng.random(len(rows)) < p["random_frac"]
        via = ~rand & (rng.random(len(rows)) < p["via_label"]) & (Y is not None)
        kind = np.where(rand, 2, via.astype(np.int64))

        def targets(rows: np.ndarray, kind: np.ndarray, again: bool) -> np.ndarray:
            """Anchors for edges of `kind`; a repeat (`again`) that is not random is drawn as a
            topical edge to the node's whole topic."""
            cols = np.empty(len(rows), dtype=np.int64)
            m = kind == 2
            cols[m] = draw_cdf(rng, cdf, int(m.sum()))
            m = kind == 0
            via = np.flatnonzero(kind == 1) if not again else np.zeros(0, dtype=np.int64)
            m |= (kind == 1) & again
            if len(via):  # a label without topical anchors falls back to a topical edge
                label = pick_neighbour(rng, Y.indptr, Y.indices, rows[via])
                has = np.diff(topical_A.indptr)[label] > 0
                cols[via[has]] = pick_neighbour(rng, topical_A.indptr, topical_A.indices,
                                                label[has])
                m[via[~has]] = True
            cols[m] = topical(node_sub[rows[m]], again)
            return cols

        rows, cols, kind = draw_unique(rows, kind, targets, n_anchors)
        return csr_unique(rows, cols, kind, 2, (n, n_anchors))

    label_A, l_rand = edges(c.num_labels, p["label_degree"], label_sub, None, None)
    topical_A = keep_nonzeros(label_A, ~l_rand)
    X_A, x_rand = edges(Y.shape[0], p["query_degree"], query_sub, Y, topical_A)

    # texts: name word, words like a label's, maybe the name word of a topically linked label
    ptr, tok = _entity_texts(rng, vocab, a_sub, c.anchor_len, c.label_mix,
                             name_base + np.arange(n_anchors))
    A_topical = topical_A.T.tocsr()
    share = (rng.random(n_anchors) < p["share_word"]) & (np.diff(A_topical.indptr) > 0)
    shared = vocab.name_base + pick_neighbour(rng, A_topical.indptr, A_topical.indices,
                                               np.flatnonzero(share))
    lengths = np.diff(ptr) + share
    new_ptr, _ = ragged(lengths)
    new_tok = np.empty(new_ptr[-1], dtype=np.int64)
    slot = np.arange(len(tok)) + np.repeat(new_ptr[:-1] - ptr[:-1], np.diff(ptr))
    new_tok[slot] = tok
    new_tok[new_ptr[1:][share] - 1] = shared
    return new_ptr, new_tok, X_A, label_A, x_rand, l_rand, a_sub, pop


class _CallableModule(types.ModuleType):
    """`ramen.synthetic` is both this module and, through `ramen`'s lazy names, the function
    `synthetic`; whichever a user's imports leave there, `ramen.synthetic("tiny")` works."""

    def __call__(self, size: str = "small", *, seed: int = 0, **overrides: Any) -> Dataset:
        return synthetic(size, seed=seed, **overrides)


sys.modules[__name__].__class__ = _CallableModule
