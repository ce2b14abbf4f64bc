"""The FOLDOC task (ramen.foldoc) and the dictd reader under it: a hand-made dictd dictionary written
by the test (CI has no dict-foldoc), hostile files, and the real dictionary where it is installed."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ramen.datasets import Dataset, describe, load_xc, save_xc
from ramen.datasets.dictd import read_dictd
from ramen.datasets.foldoc import DEFAULT_PATH, foldoc

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def b64(n: int) -> str:
    out = ""
    while True:
        out = _B64[n % 64] + out
        n //= 64
        if n == 0:
            return out


def write_dictd(folder: Path, articles: list[str], *, compress: bool = True) -> Path:
    """A dictd pair as dictfmt writes it: the articles concatenated, one index line per headline
    (lower case, sorted), offsets and lengths in base64. Returns the dict file's path."""
    data, index = b"", []
    for text in articles:
        raw = text.encode("utf-8")
        heads = []
        for line in text.split("\n"):
            if not line.strip():
                break
            heads.append(line.strip().lower())
        index += [f"{h}\t{b64(len(data))}\t{b64(len(raw))}" for h in heads]
        data += raw
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("test.dict.dz" if compress else "test.dict")
    path.write_bytes(gzip.compress(data) if compress else data)
    (folder / "test.index").write_text("\n".join(sorted(index)) + "\n", encoding="utf-8")
    return path


ARTICLES = [
    "00-database-short\n\n   A test dictionary\n\n",
    "compiler\n\n   <programming, tool> A program that translates {source code}.  See also\n"
    "   {interpreters}, {linker}.  Compare {assembler}.\n\n   (2001-01-01)\n\n",
    "interpreter\n\n   <programming> Runs {source code} directly.  Compare with: {compiler}.\n\n",
    "linker\nld\n\n   <tool> Joins {object file}s.  See {compiler}.\n\n",
    "assembler\n\n   <tool> Translates assembly language.  See also {ld}.\n\n",
    "source code\n\n   <programming> The text of a program; see also {SRC}.\n\n",
    "SRC\n\n   {source code}\n\n",
    "object file\n\n   1. <file format> The output of a {compiler}.\n\n"
    "   2. <jargon> See also {linker (http://example.com/linker.html)} and {LD}.\n\n",
    "complier\n\n   <spelling> Misspelling of {compiler}.\n\n",
    "foo\n\n   Something to compare the speeds of {interpreter}s with.  See also {complier};\n"
    "   compare {nowhere}.  {Unbalanced\n\n",
    "linker\n\n   <jargon> (A second article of one title.)  See also {interpreter}.\n\n",
]
# the task the rules of foldoc()'s docstring make of ARTICLES: query -> (labels, crossref anchors, topics)
EXPECTED = {
    "compiler": ({"interpreter", "linker", "assembler"}, {"source code"}, {"programming", "tool"}),
    "interpreter": ({"compiler"}, {"source code"}, {"programming"}),
    "linker": ({"interpreter"}, {"object file", "compiler"}, {"tool", "jargon"}),
    "assembler": ({"linker"}, set(), {"tool"}),
    "object file": ({"linker"}, {"compiler"}, {"file format", "jargon"}),
    "foo": ({"compiler"}, {"interpreter"}, set()),
}


def _rows(ds: Dataset) -> dict[str, tuple[set[str], set[str], set[str]]]:
    """query text -> (labels, crossref anchors, topics), over both splits."""
    out = {}
    for texts, Y, part in ((ds.train_texts, ds.train_Y, "train_X_A"), (ds.test_texts, ds.test_Y, "test_X_A")):
        for r, t in enumerate(texts):
            sets = [{ds.label_texts[j] for j in Y[r].indices}]
            for name in ("crossref", "topic"):
                a = ds.anchor_sets[name]
                sets.append({a.texts[j] for j in getattr(a, part)[r].indices})
            out[t] = tuple(sets)
    return out


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return write_dictd(tmp_path / "dict", ARTICLES)


def test_dictd_reader(tiny: Path) -> None:
    articles = read_dictd(tiny)
    assert len(articles) == len(ARTICLES) and [a.text for a in articles] == ARTICLES  # dict-file order
    assert articles[3].headwords == ("ld", "linker")  # every headword naming the article, in index order
    plain = write_dictd(tiny.parent.parent / "plain", ARTICLES, compress=False)
    assert [a.text for a in read_dictd(plain)] == ARTICLES
    for path in (tiny, plain):  # its .index file names the dictionary too (it looked for "X.index.index")
        index = next(path.parent.glob("*.index"))
        assert [a.text for a in read_dictd(index)] == ARTICLES


def test_tiny_task(tiny: Path) -> None:
    ds = foldoc(tiny, seed=0, test_fraction=0.5)
    assert ds.name == "foldoc" and (ds.num_train, ds.num_test) == (3, 3)
    assert ds.label_texts == ["compiler", "interpreter", "linker", "assembler"]  # entry order
    assert _rows(ds) == EXPECTED
    # redirects (SRC, complier) and the dictionary's own article are neither queries nor labels
    assert not {"SRC", "complier", "00-database-short"} & set(ds.train_texts + ds.test_texts + ds.label_texts)
    # the test filter: each test query that is a label, with that label
    label_id = {t: j for j, t in enumerate(ds.label_texts)}
    expected = [(r, label_id[t]) for r, t in enumerate(ds.test_texts) if t in label_id]
    assert [tuple(p) for p in ds.test_filter] == expected
    assert ds.anchor_sets["crossref"].label_A.shape == (4, ds.anchor_sets["crossref"].num_anchors)
    assert sorted(ds.anchor_sets["topic"].texts) == ["file format", "jargon", "programming", "tool"]
    labels = {t: {ds.anchor_sets["topic"].texts[j] for j in ds.anchor_sets["topic"].label_A[r].indices}
              for r, t in enumerate(ds.label_texts)}
    assert labels["linker"] == {"tool", "jargon"}


def test_split_is_seeded_and_by_query(tiny: Path, tmp_path: Path) -> None:
    ds = foldoc(tiny, seed=0, test_fraction=0.5)
    assert foldoc(tiny, seed=0, test_fraction=0.5) == ds
    splits = {tuple(sorted(foldoc(tiny, seed=s, test_fraction=0.5).test_texts)) for s in range(8)}
    assert len(splits) > 1  # the seed moves the split
    assert not set(ds.train_texts) & set(ds.test_texts)
    assert foldoc(tiny, seed=0, test_fraction=0.2).num_test == 1
    save_xc(ds, tmp_path / "foldoc.npz")
    assert load_xc(tmp_path / "foldoc.npz") == ds


def _no_label_is_an_anchor(ds: Dataset) -> None:
    """No query's (or label's) crossref anchors include one of its own labels (the leakage the
    loader rules out), checked by text over both splits."""
    a = ds.anchor_sets["crossref"]
    for texts, Y, X_A in ((ds.train_texts, ds.train_Y, a.train_X_A), (ds.test_texts, ds.test_Y, a.test_X_A)):
        for r in range(len(texts)):
            labels = {ds.label_texts[j] for j in Y[r].indices}
            assert not labels & {a.texts[j] for j in X_A[r].indices}, texts[r]
            assert texts[r] not in labels


def test_labels_never_anchors(tiny: Path) -> None:
    _no_label_is_an_anchor(foldoc(tiny, seed=1, test_fraction=0.5))


def test_missing_file_names_the_package(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"absent\.dict\.dz.*apt-get install dict-foldoc"):
        foldoc(tmp_path / "absent.dict.dz")
    with pytest.raises(FileNotFoundError, match="apt-get install dict-foldoc"):
        foldoc(tmp_path)  # a folder without foldoc.dict(.dz)
    (tmp_path / "foldoc.dict").write_text("x\n\n   y\n")
    with pytest.raises(FileNotFoundError, match="foldoc.index"):
        foldoc(tmp_path)


def test_bad_arguments_and_too_few_queries(tiny: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="test_fraction"):
        foldoc(tiny, test_fraction=1.0)
    few = write_dictd(tmp_path / "few", ["a\n\n   See also {b}.\n\n", "b\n\n   Nothing.\n\n"])
    with pytest.raises(ValueError, match="1 entries with 'See also' or 'Compare' links"):
        foldoc(few)


@pytest.mark.parametrize("index, message", [
    ("a\tA\n", r"line 1: expected 3 tab-separated fields"),
    ("a\tA\tB\nb\tA!\tB\n", r"line 2: the offset 'A!' is not a dictd base64 number \(bad digit '!'\)"),
    ("a\tA\t\n", r"line 1: the length '' is not a dictd base64 number"),
    ("a\tA\t" + "B" * 40 + "\n", r"line 1: the length 'B+' is not a dictd base64 number"),
    ("\tA\tB\n", r"line 1: empty headword"),
    ("a\tA\tB\nb\tA\t//\n", r"line 2: 'b' addresses bytes 0\.\.4095 but .* holds 16 bytes"),
    ("\n\n", r"the dictd index holds no headwords"),
])
def test_hostile_index(tmp_path: Path, index: str, message: str) -> None:
    (tmp_path / "x.dict").write_bytes(b"a\n\n   See {b}.\n\n")
    (tmp_path / "x.index").write_text(index)
    with pytest.raises(ValueError, match=r"x\.index: " + message):
        read_dictd(tmp_path / "x.dict")
    with pytest.raises(ValueError, match=r"x\.index: " + message):
        foldoc(tmp_path / "x.dict")


def test_hostile_bytes(tmp_path: Path) -> None:
    (tmp_path / "x.dict").write_bytes(b"ok\n\n   fine\n\nbad\n\n   \xff\xfe\n")
    (tmp_path / "x.index").write_text("ok\tA\tN\nbad\tN\tL\n")  # bytes 0..13 and 13..24
    with pytest.raises(ValueError, match=r"x\.dict: the article of 'bad' \(index line 2, bytes 13\.\.24\) is not "
                                         r"UTF-8 \(invalid start byte at byte 21\)"):
        read_dictd(tmp_path / "x.dict")
    (tmp_path / "x.index").write_bytes(b"ok\tA\tN\n\xff\tN\tL\n")
    with pytest.raises(ValueError, match=r"x\.index: line 2: not UTF-8"):
        read_dictd(tmp_path / "x.dict")
    (tmp_path / "y.dict.dz").write_bytes(gzip.compress(b"ok\n\n   fine\n\n" * 100)[:25])  # truncated
    (tmp_path / "y.index").write_text("ok\tA\tUU\n")  # 1,300 bytes, more than the truncated stream holds
    with pytest.raises(ValueError, match=r"y\.dict\.dz: cannot read the dict file"):
        read_dictd(tmp_path / "y.dict.dz")


def test_hostile_text_is_no_crash(tmp_path: Path) -> None:
    """Unbalanced braces, empty references, nested tags and a link phrase at the very end parse."""
    texts = ["q\n\n   {{{ See also {r}, {} {\n\n", "r\n\n   <<a>> Compare {q} }}}} {\n   See also",
             "s\n\n   See also {q}" + " x" * 5000 + " {r}.\n\n", "t\n\n   \n"]
    ds = foldoc(write_dictd(tmp_path / "h", texts), test_fraction=0.5)
    assert _rows(ds)["q"][0] == {"r"} and _rows(ds)["r"][0] == {"q"}
    assert _rows(ds)["s"][0] == {"q"}  # a phrase reaches 2,000 characters at most


# ---- the real dictionary (Debian's dict-foldoc) ---------------------------------------------

needs_foldoc = pytest.mark.skipif(not DEFAULT_PATH.is_file(),
                                  reason=f"no {DEFAULT_PATH} (apt-get install dict-foldoc)")


@pytest.fixture(scope="module")
def real() -> Dataset:
    if not DEFAULT_PATH.is_file():
        pytest.skip(f"no {DEFAULT_PATH} (apt-get install dict-foldoc)")
    return foldoc()


@needs_foldoc
def test_real_foldoc(real: Dataset) -> None:
    s = describe(real)
    # dict-foldoc 20230119 (FOLDOC of 19 January 2023); another release moves these a little
    assert 800 < s["train_points"] < 1500 and 1200 < s["labels"] < 2500
    assert s["test_points"] == int(0.2 * (s["train_points"] + s["test_points"]))
    assert np.diff(real.train_Y.indptr).min() >= 1 and np.diff(real.test_Y.indptr).min() >= 1
    assert list(real.anchor_sets) == ["crossref", "topic"]
    assert {"programming", "jargon", "networking"} <= set(real.anchor_sets["topic"].texts)
    rows = _rows(real)
    assert {"bogosity", "psyton", "fat electrons", "magic smoke"} <= rows["bogon"][0]  # "See also ...; compare ..."
    assert "beam search" in rows["best first search"][0] and "heuristic" in rows["best first search"][1]
    texts = set(real.train_texts + real.test_texts + real.label_texts)
    assert len(set(real.label_texts)) == real.num_labels and len(set(real.train_texts + real.test_texts)) == (
        real.num_train + real.num_test)
    # redirects ("fiber optics: {optical fibre}", "MIT Licence: {MIT License}") are never queries or labels
    assert not {"fiber optics", "MIT Licence", "DCT"} & texts
    _no_label_is_an_anchor(real)
    Y = sp.vstack([real.train_Y, real.test_Y]).tocsr()
    assert Y.nnz == sum(len(r[0]) for r in rows.values())


# ---- the command line --------------------------------------------------------------------------


def test_cli(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ramen.__main__ import load_dataset, main

    assert main(["data", "describe", f"foldoc:{tiny}"]) == 0
    out = capsys.readouterr().out
    assert "foldoc" in out and "[crossref] nodes" in out and "[topic] avg neighbours per label" in out
    assert main(["data", "foldoc", str(tiny), "--out", str(tmp_path / "xc"), "--seed", "3"]) == 0
    assert load_xc(tmp_path / "xc") == foldoc(tiny, seed=3)
    folder = tmp_path / "dictd"
    folder.mkdir()
    (folder / "foldoc.dict.dz").write_bytes(tiny.read_bytes())
    (folder / "foldoc.index").write_bytes(tiny.with_name("test.index").read_bytes())
    assert load_dataset(f"foldoc:{folder}") == foldoc(tiny)  # a folder holding the pair
    with pytest.raises(SystemExit, match="apt-get install dict-foldoc"):
        load_dataset(f"foldoc:{tmp_path / 'absent.dict.dz'}")
    with pytest.raises(SystemExit, match="apt-get install dict-foldoc"):
        main(["data", "foldoc", str(tmp_path / "absent"), "--out", str(tmp_path / "x")])


@pytest.mark.parametrize("part", ["index", "dict.dz", "dict"])
def test_mutated_files_give_a_dataset_or_a_clear_error(tmp_path: Path, part: str) -> None:
    """Seeded byte mutations of the fixture's files: foldoc() returns a valid Dataset or raises a
    ValueError naming a file, never another exception."""
    source = write_dictd(tmp_path / "src", ARTICLES * 3, compress=part == "dict.dz")
    index = source.with_name("test.index")
    original = (index if part == "index" else source).read_bytes()
    rng = np.random.default_rng(0)
    outcomes = {"dataset": 0, "error": 0}
    for trial in range(60):
        data = bytearray(original)
        for _ in range(int(rng.integers(1, 6))):
            at = int(rng.integers(len(data)))
            kind = rng.integers(3)
            if kind == 0:
                data[at] = int(rng.integers(256))
            elif kind == 1:
                del data[at: at + int(rng.integers(1, 20))]
            else:
                data[at:at] = bytes(rng.choice(list(b"\t\n{}<>0aA/+."), size=int(rng.integers(1, 6))))
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        for name, raw in ((source.name, source.read_bytes()), ("test.index", index.read_bytes())):
            (folder / name).write_bytes(raw)
        (folder / (index.name if part == "index" else source.name)).write_bytes(bytes(data))
        try:
            ds = foldoc(folder / source.name, test_fraction=0.5)
        except ValueError as exc:
            assert "test." in str(exc) or "test_fraction" in str(exc), str(exc)
            outcomes["error"] += 1
        else:
            assert ds.validate() is ds
            outcomes["dataset"] += 1
    assert outcomes["error"] > 0  # the mutations do reach the checks
