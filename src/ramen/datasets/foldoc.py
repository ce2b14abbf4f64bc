"""A real RAMEN-style task from the Free On-line Dictionary of Computing (FOLDOC, Denis Howe et al.),
as Debian's `dict-foldoc` package installs it: /usr/share/dictd/foldoc.dict.dz and foldoc.index.

Like LF-WikiSeeAlsoTitles: entry titles are the queries and the labels, an entry's curated
"See also" and "Compare" links are its labels, and two anchor sets carry what the labels do not:
"crossref" (the other `{cross-references}` of its body) and "topic" (its `<topic>` tags).
FOLDOC is under the GNU Free Documentation License; cite "The Free On-line Dictionary of
Computing, https://foldoc.org/, Editor Denis Howe" when publishing on it.
"""
from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ramen.datasets.dataset import AnchorSet, Dataset
from ramen.datasets.dictd import Article, read_dictd


DEFAULT_PATH = Path("/usr/share/dictd/foldoc.dict.dz")
INSTALL_HINT = "install it with `apt-get install dict-foldoc` (Debian, Ubuntu) or pass the path of foldoc.dict.dz"

# a curated link's phrase, followed by a reference (not the verb "compare the speeds")
_LINK = re.compile(r"(?i)\b(?:see\s+also|compare)\b(?:\s+(?:with|to)\b)?\s*:?(?=\s*[\"'`]?\{)")
_REF = re.compile(r"\{([^{}]*)\}")
_TOPIC = re.compile(r"(?:\A|\n[ \t]*\n|(?<=\s)\d{1,2}\.)[ \t\n]*<([A-Za-z][A-Za-z ,/\-\t\n]*)>")
_DATE = re.compile(r"\(\d{4}-\d{2}-\d{2}\)")
_REDIRECT = re.compile(r"(?is)(?:see\s+)?\{([^{}]+)\}\.?")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")
_METADATA = ("00-database", "00database")  # dictfmt's own articles (name, URL, character set)
_MAX_SPAN = 2000  # characters a link phrase reaches at most (bounds the work on hostile text)


@dataclasses.dataclass
class _Entry:
    title: str
    names: list[str]  # the title, then its aliases (the article's other headlines and index headwords)
    body: str


def _norm(text: str) -> str:
    return " ".join(text.split())


def _entries(articles: list[Article]) -> list[_Entry]:
    """FOLDOC's entries: an article's first line is its title, the lines before the first blank
    line are aliases; articles of one title are one entry (their texts joined, like the senses of
    one article)."""
    by_title: dict[str, _Entry] = {}
    for a in articles:
        if any(h.lower().startswith(_METADATA) for h in a.headwords):
            continue
        lines = a.text.split("\n")
        head = []
        while len(head) < len(lines) and lines[len(head)].strip():
            head.append(_norm(lines[len(head)]))
        title = head[0] if head else _norm(a.headwords[0])
        body = "\n".join(lines[len(head):])
        names = head + [_norm(h) for h in a.headwords]
        if title in by_title:
            old = by_title[title]
            old.names += [n for n in names if n not in old.names]
            old.body += "\n\n" + body
        else:
            by_title[title] = _Entry(title, list(dict.fromkeys([title, *names])), body)
    return list(by_title.values())


class _Names:
    """Resolves a cross-reference's text to an entry: the exact name, else the name ignoring case,
    else the same for its singular (FOLDOC writes "{protocols}" for the entry "protocol"); titles
    before aliases, earlier entries first."""

    def __init__(self, entries: list[_Entry]) -> None:
        self.exact: dict[str, int] = {}
        self.folded: dict[str, int] = {}
        for titles_only in (True, False):
            for i, e in enumerate(entries):
                for name in e.names[:1] if titles_only else e.names[1:]:
                    self.exact.setdefault(name, i)
                    self.folded.setdefault(name.lower(), i)

    def resolve(self, text: str) -> int | None:
        text = _norm(text)
        forms = [text]
        if text.endswith("ies"):
            forms.append(text[:-3] + "y")
        if text.endswith("es"):
            forms.append(text[:-2])
        if text.endswith("s"):
            forms.append(text[:-1])
        for form in forms:
            for table, key in ((self.exact, form), (self.folded, form.lower())):
                if key in table:
                    return table[key]
        return None


def _topics(body: str) -> list[str]:
    """The `<topic, topic>` tags that open the body, a paragraph or a numbered sense, lower case."""
    tags = (_norm(t).lower() for m in _TOPIC.finditer(body) for t in m.group(1).split(","))
    return list(dict.fromkeys(t for t in tags if t))


def _link_spans(body: str) -> list[tuple[int, int]]:
    """Spans of the body that "See also" and "Compare" phrases followed by a reference cover: to
    the end of the sentence (a '.' before a space, ';', '[', a ')' closing a parenthesis opened
    before the phrase, or a blank line), braces skipped over."""
    spans = []
    for m in _LINK.finditer(body):
        braces = parens = 0
        i, end = m.end(), min(len(body), m.end() + _MAX_SPAN)
        while i < end:
            c = body[i]
            if c == "{":
                braces += 1
            elif c == "}":
                braces = max(0, braces - 1)
            elif braces == 0:
                if c in ";[" or (c == "." and (i + 1 == len(body) or body[i + 1].isspace())):
                    break
                if c == "(":
                    parens += 1
                elif c == ")":
                    if parens == 0:
                        break
                    parens -= 1
                elif c == "\n" and _PARAGRAPH.match(body, i):
                    break
            i += 1
        spans.append((m.end(), i))
    return spans


def _redirect(body: str, topics: list[str]) -> str | None:
    """The reference an entry only points to (its body one `{reference}`, apart from its topic tag
    and date, or a `<spelling>` entry naming one), else None."""
    core = _DATE.sub("", body).strip()
    core = re.sub(r"\A<[^<>]*>", "", core).strip()
    m = _REDIRECT.fullmatch(core)
    if m:
        return m.group(1)
    refs = _REF.findall(body)
    return refs[0] if "spelling" in topics and len(refs) == 1 else None


def _follow(points_to: list[int | None]) -> np.ndarray:
    """The entry each entry stands for: itself, or where its chain of redirects ends (a redirect to
    nothing, or in a cycle, stands for itself)."""
    final = np.arange(len(points_to))
    for i in range(len(points_to)):
        seen, j = {i}, points_to[i]
        while j is not None and j not in seen:
            seen.add(j)
            if points_to[j] is None:
                final[i] = j
                break
            j = points_to[j]
    return final


def _dict_file(path: str | os.PathLike | None) -> Path:
    p = DEFAULT_PATH if path is None else Path(path)
    if p.is_dir():
        p = next((p / n for n in ("foldoc.dict.dz", "foldoc.dict") if (p / n).is_file()), p / "foldoc.dict.dz")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no FOLDOC dictd file: {INSTALL_HINT}")
    return p


def _csr(pairs: list[tuple[int, int]], shape: tuple[int, int]) -> sp.csr_matrix:
    rows = np.array([r for r, _ in pairs], dtype=np.int64)
    cols = np.array([c for _, c in pairs], dtype=np.int64)
    m = sp.csr_matrix((np.ones(len(pairs), np.float32), (rows, cols)), shape=shape)
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def _graph(entries: list[_Entry]) -> tuple[list[list[int]], list[list[int]], list[list[str]]]:
    """Per entry: its labels (the entries its link phrases name), its other body references (both
    as the entries they stand for, redirects followed) and its topic tags. A redirect has no labels."""
    names = _Names(entries)
    topics = [_topics(e.body) for e in entries]
    redirect_to = []
    for i, e in enumerate(entries):
        text = _redirect(e.body, topics[i])
        j = None if text is None else names.resolve(text)
        redirect_to.append(None if j == i else j)
    final = _follow(redirect_to)
    links: list[list[int]] = []
    crossrefs: list[list[int]] = []
    for i, e in enumerate(entries):
        spans = _link_spans(e.body)
        refs = []
        for m in _REF.finditer(e.body):
            j = names.resolve(m.group(1))
            if j is not None and final[j] != i:
                refs.append((int(final[j]), any(a <= m.start() < b for a, b in spans)))
        own = list(dict.fromkeys(j for j, linked in refs if linked)) if final[i] == i else []
        links.append(own)
        crossrefs.append(list(dict.fromkeys(j for j, _ in refs if j not in own)))
    return links, crossrefs, topics


def foldoc(path: str | os.PathLike | None = None, *, seed: int = 0, test_fraction: float = 0.2) -> Dataset:
    """Builds the FOLDOC task from the dictd file `path` (default /usr/share/dictd/foldoc.dict.dz;
    `foldoc.index` beside it; a folder holding both also works).

    - Entries: dictd's articles (its own 00-database-* ones left out), titled by their first line
      (its other headlines and index headwords are aliases); articles of one title, and the
      numbered senses of one article, are one entry.
    - References: `{text}` resolves to the entry of that name (exact, then ignoring case, then the
      singular: "{protocols}"); unresolved ones (external links `{name (URL)}`, missing entries)
      are dropped. An entry whose body is one reference ("IOS: {Internetworking Operating
      System}", "See {x}.") or a `<spelling>` entry naming one is a redirect: references to it mean
      its target, and it is neither query nor label (it would split one concept into two labels).
    - Labels of an entry: the entries its "See also" and "Compare" phrases name (to the end of
      their sentence), itself excluded, over all its senses. Queries: the entries with at least one
      label (the others have nothing to predict); labels: the entries some query links to. Queries
      are split by a seeded draw, floor(test_fraction * queries) test (at least 1), so every test
      query is unseen in training; each test query's own title, where it is a label, is never
      predicted.
    - Anchor set "crossref": the entry's other body references (not its labels, not itself); an
      anchor is the entry referred to (text: its title). Anchor set "topic": its `<topic>` tags
      ("programming", "jargon"), those of every sense. Both for queries and labels (test too).

    Why the labels are left out of "crossref": in LF-WikiSeeAlsoTitles the labels are an article's
    "See also" section and the anchors its body hyperlinks, which Wikipedia's style asks not to
    repeat, so the two barely overlap. In FOLDOC a "See also" link is itself a `{reference}` of
    the body: kept, every label would also be an anchor of its query, with the label's own title,
    and the query-anchor graph would hold the answer (test_X_A, which an OAK-style method reads,
    would give away the test labels). A body reference to an entry that is a label elsewhere,
    but not a link of this entry, stays: that is the anchors' ordinary metadata. So does the other
    direction: a label's body may refer to one of its queries (32% of the test pairs, 35% of the
    train pairs with the defaults), an anchor whose text is the query's title; a label article's
    hyperlinks reach its "See also" articles in LF-WikiSeeAlsoTitles too, and it is the label's
    metadata, known before any query is seen.

    The same (file, seed, test_fraction) gives the same Dataset.

    Sizes with the defaults (dict-foldoc 20230119, seed 0): 12,010 entries (208 redirects), 60,432
    references (48,316 resolve), 1,363 link phrases; 1,242 queries, floor(0.2 * 1,242) = 248 test
    and 994 train, 1,729 labels (571 of them also queries), 1,902 train and 424 test positives (1.9
    labels a train query, 1.1 train queries a label; 234 labels have none); "crossref" 3,521 anchors,
    5.1 a train query and 4.8 a label; "topic" 103 anchors, 1.0 a query and 0.9 a label.
    """

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must lie in (0, 1), got {test_fraction}")
    source = _dict_file(path)
    entries = _entries(read_dictd(source))
    links, crossrefs, topics = _graph(entries)

    queries = np.array([i for i in range(len(entries)) if links[i]], dtype=np.int64)
    if len(queries) < 2:
        raise ValueError(f"{source}: {len(queries)} entries with 'See also' or 'Compare' links "
                         "(at least 2 are needed for a train and a test split)")
    labels = np.unique([j for i in queries for j in links[i]])
    label_of = {int(j): k for k, j in enumerate(labels)}
    rng = np.random.default_rng(seed)
    num_test = max(1, int(test_fraction * len(queries)))
    is_test = np.zeros(len(queries), dtype=bool)
    is_test[rng.permutation(len(queries))[:num_test]] = True
    split = {"train": queries[~is_test], "test": queries[is_test]}

    task = np.union1d(queries, labels)
    cross_nodes = sorted({j for i in task for j in crossrefs[i]})
    cross_col = {j: k for k, j in enumerate(cross_nodes)}
    topic_nodes = sorted({t for i in task for t in topics[i]})
    topic_col = {t: k for k, t in enumerate(topic_nodes)}
    rows = {"train_X_A": split["train"], "test_X_A": split["test"], "label_A": labels}

    def anchors(cols_of: dict[int, list[int]], width: int) -> dict[str, sp.csr_matrix]:
        return {part: _csr([(r, c) for r, i in enumerate(ids) for c in cols_of[int(i)]], (len(ids), width))
                for part, ids in rows.items()}

    cross = {int(i): [cross_col[j] for j in crossrefs[i]] for i in task}
    topic = {int(i): [topic_col[t] for t in topics[i]] for i in task}
    Y = {s: _csr([(r, label_of[j]) for r, i in enumerate(ids) for j in links[i]], (len(ids), len(labels)))
         for s, ids in split.items()}
    test_filter = np.array([(r, label_of[int(i)]) for r, i in enumerate(split["test"]) if int(i) in label_of],
                           dtype=np.int64).reshape(-1, 2)
    return Dataset(
        train_texts=[entries[i].title for i in split["train"]], test_texts=[entries[i].title for i in split["test"]],
        label_texts=[entries[i].title for i in labels], train_Y=Y["train"], test_Y=Y["test"],
        anchor_sets={"crossref": AnchorSet([entries[j].title for j in cross_nodes], **anchors(cross, len(cross_nodes))),
                     "topic": AnchorSet(topic_nodes, **anchors(topic, len(topic_nodes)))},
        test_filter=test_filter, name="foldoc").validate()
