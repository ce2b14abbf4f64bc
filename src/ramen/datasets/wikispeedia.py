"""A real RAMEN-style task from the SNAP "Wikispeedia navigation paths" files (Wikipedia for Schools).

Queries and labels are article titles; an article's labels are the articles it links to that link
back (mutual links), a stand-in for "See also". Two anchor sets carry what the labels do not:
"hyperlink" (the article's one-way links) and "category" (its categories with their ancestors).
Cite West & Leskovec (WWW 2012) and West, Pineau & Precup (IJCAI 2009) when publishing on it.
"""
from __future__ import annotations

import gzip
import os
import urllib.parse
import zlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from ramen.datasets.dataset import AnchorSet, Dataset


# Non-encyclopedic pages of the SNAP release, left out of the task.
EXCLUDED = frozenset({"Directdebit", "Donation", "Friend_Directdebit", "Sponsorship_Directdebit",
                      "Wowpurchase", "Wikipedia_Text_of_the_GNU_Free_Documentation_License"})


def _rows(src: Path, stem: str, width: int) -> list[list[str]]:
    """Tab-separated rows of `<stem>.tsv` or `<stem>.tsv.gz`, comments and blank lines skipped."""
    for path in (src / f"{stem}.tsv", src / f"{stem}.tsv.gz"):
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"no {stem}.tsv or {stem}.tsv.gz in {src} (the SNAP Wikispeedia files)")
    opener = gzip.open if path.suffix == ".gz" else open
    out: list[list[str]] = []
    number = 0
    try:
        with opener(path, "rb") as f:  # bytes, decoded line by line: an error names its line
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{path}: line {number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not line.strip() or line.startswith("#"):
                    continue
                fields = line.split("\t")
                if len(fields) != width:
                    raise ValueError(f"{path}: line {number}: expected {width} tab-separated fields, "
                                     f"found {len(fields)}")
                out.append(fields)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{path}: a damaged or cut gzip file after line {number} ({exc})") from None
    return out


def _title(name: str) -> str:
    return urllib.parse.unquote(name).replace("_", " ")


def _ids(pairs: list[list[str]], index: dict[str, int], path: str) -> np.ndarray:
    """(n, 2) article ids of name pairs; pairs touching an excluded page are dropped."""
    kept = [p for p in pairs if p[0] not in EXCLUDED and p[1] not in EXCLUDED]
    unknown = next((n for p in kept for n in p if n not in index), None)
    if unknown is not None:
        raise ValueError(f"{path}: article {unknown!r} is not in articles.tsv")
    return np.array([(index[a], index[b]) for a, b in kept], dtype=np.int64).reshape(-1, 2)


def _csr(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def wikispeedia(src_dir: str | os.PathLike, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Builds the Wikispeedia task of `../shared/data/wikispeedia/README.md` from the SNAP files
    (articles.tsv, links.tsv, categories.tsv, plain or .gz) in `src_dir`.

    - Articles: the 4,598 encyclopedic pages; titles URL-decoded, underscores as spaces.
    - Labels: every article with at least one mutual link (a->b and b->a, self-links ignored):
      3,729 labels; the label of a query are its mutual-link partners (26,470 directed pairs).
    - Queries: the same 3,729 articles (an article without mutual links has nothing to predict and
      is no query), split by a seeded draw: floor(test_fraction * 3,729) = 745 test queries, 2,984
      train (test_fraction=0.2). Rows keep the order of articles.tsv.
    - Filter: each test query's own title (as a label) is never to be predicted.
    - Anchor set "hyperlink": the query's or label's one-way links (a->b without b->a, self-links
      ignored); anchors are the linked articles (text: the title), those linked by some task article.
    - Anchor set "category": the article's categories and all their ancestors below the root
      "subject" (text "Science > Biology"); the nodes reached from task articles.
    A, B are the defaults (0.55, 1.5). The same (src, seed, test_fraction) gives the same Dataset.

    Sizes with the defaults (seed 0): 2,984 train and 745 test queries, 3,729 labels, 20,966 train
    and 5,504 test positives (7.0 labels a train query); "hyperlink" 3,556 anchors, 21.8 a query
    and 21.7 a label; "category" 144 anchors, 2.5 a query and a label; 182 labels have no train
    positive (all their partners drew test).
    """

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    src = Path(src_dir)
    names = [r[0] for r in _rows(src, "articles", 1) if r[0] not in EXCLUDED]
    index = {name: i for i, name in enumerate(names)}
    n = len(names)

    links = _ids(_rows(src, "links", 2), index, "links.tsv")
    links = links[links[:, 0] != links[:, 1]]
    keys = np.unique(links[:, 0] * n + links[:, 1])
    src_ids, dst_ids = keys // n, keys % n
    mutual = np.isin(dst_ids * n + src_ids, keys)

    task = np.unique(src_ids[mutual])  # articles with >= 1 mutual link: the labels and the queries
    label_of = np.full(n, -1, dtype=np.int64)
    label_of[task] = np.arange(len(task))
    rng = np.random.default_rng(seed)
    num_test = int(test_fraction * len(task))
    is_test = np.zeros(len(task), dtype=bool)
    is_test[rng.permutation(len(task))[:num_test]] = True
    splits = {"train": task[~is_test], "test": task[is_test]}
    row_of = {s: np.full(n, -1, dtype=np.int64) for s in splits}
    for s, arts in splits.items():
        row_of[s][arts] = np.arange(len(arts))

    # hyperlink anchors: one-way targets of any task article
    one_way = ~mutual & (label_of[src_ids] >= 0)
    hyper_src, hyper_dst = src_ids[one_way], dst_ids[one_way]
    hyper_nodes = np.unique(hyper_dst)
    hyper_col = np.full(n, -1, dtype=np.int64)
    hyper_col[hyper_nodes] = np.arange(len(hyper_nodes))

    # category anchors: every category of a task article and its ancestors below "subject"
    cat_pairs = []
    for article, category in _rows(src, "categories", 2):
        if article in EXCLUDED:
            continue
        if article not in index:
            raise ValueError(f"categories.tsv: article {article!r} is not in articles.tsv")
        if label_of[index[article]] < 0:
            continue
        parts = category.split(".")[1:] if category.startswith("subject.") else category.split(".")
        cat_pairs += [(index[article], ".".join(parts[:i])) for i in range(1, len(parts) + 1)]
    cat_nodes = sorted({c for _, c in cat_pairs})
    cat_col = {c: i for i, c in enumerate(cat_nodes)}
    cat_art = np.array([a for a, _ in cat_pairs], dtype=np.int64)
    cat_ids = np.array([cat_col[c] for _, c in cat_pairs], dtype=np.int64)

    L = len(task)
    rows = {"train_X_A": (row_of["train"], len(splits["train"])), "test_X_A": (row_of["test"], num_test),
            "label_A": (label_of, L)}

    def rows_for(part: str, articles: np.ndarray, cols: np.ndarray, width: int) -> sp.csr_matrix:
        row, height = rows[part]
        keep = row[articles] >= 0
        return _csr(row[articles[keep]], cols[keep], (height, width))

    Y = {s: rows_for(f"{s}_X_A", src_ids[mutual], label_of[dst_ids[mutual]], L) for s in splits}
    hyperlink = AnchorSet([_title(names[a]) for a in hyper_nodes],
                          **{p: rows_for(p, hyper_src, hyper_col[hyper_dst], len(hyper_nodes)) for p in rows})
    category = AnchorSet([_title(c.replace(".", " > ")) for c in cat_nodes],
                         **{p: rows_for(p, cat_art, cat_ids, len(cat_nodes)) for p in rows})
    test_arts = splits["test"]
    return Dataset(
        train_texts=[_title(names[a]) for a in splits["train"]], test_texts=[_title(names[a]) for a in test_arts],
        label_texts=[_title(names[a]) for a in task], train_Y=Y["train"], test_Y=Y["test"],
        anchor_sets={"hyperlink": hyperlink, "category": category},
        test_filter=np.stack([np.arange(len(test_arts)), label_of[test_arts]], axis=1),
        name="wikispeedia").validate()
