"""ramen.data: the XC text formats (C++ parser checked against a plain Python one), whole-dataset
round trips (directory and .npz), validation, describe, and the Wikispeedia build."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from ramen import _C
from ramen.datasets import AnchorSet, Dataset, describe, load_xc, read_sparse, save_xc, wikispeedia, write_sparse
from ramen.datasets.xc_format import read_pairs, read_texts, write_pairs, write_texts


def _find_wikispeedia() -> Path:
    """$RAMEN_WIKISPEEDIA, else ../shared/data/wikispeedia beside the checkout (or one level up)."""
    if os.environ.get("RAMEN_WIKISPEEDIA"):
        return Path(os.environ["RAMEN_WIKISPEEDIA"])
    root = Path(__file__).resolve().parents[1]
    candidates = [p / "shared" / "data" / "wikispeedia" for p in (root.parent, root.parent.parent)]
    return next((c for c in candidates if c.is_dir()), candidates[0])


WIKISPEEDIA = _find_wikispeedia()


def reference_parse(text: str) -> sp.csr_matrix:
    """The format read the plain way: one line per row, `col:value` tokens (bare col = 1)."""
    lines = text.split("\n")
    rows, cols = map(int, lines[0].split())
    body = lines[1:]
    if body and body[-1] == "":
        body = body[:-1]
    assert len(body) == rows
    r, c, v = [], [], []
    for i, line in enumerate(body):
        for tok in line.split():
            col, _, val = tok.partition(":")
            r.append(i)
            c.append(int(col))
            v.append(np.float32(val) if val else np.float32(1))
    m = sp.csr_matrix((np.array(v, np.float32), (r, c)), shape=(rows, cols))
    m.sort_indices()
    return m


def random_csr(rng: np.random.Generator, rows: int, cols: int, density: float, empty_rows: float = 0.2) -> sp.csr_matrix:
    m = sp.random(rows, cols, density=density, format="csr", random_state=rng, dtype=np.float32)
    m.data = (rng.standard_normal(m.nnz) * 10.0 ** rng.integers(-8, 8, m.nnz)).astype(np.float32)
    m = m.multiply(rng.random((rows, 1)) > empty_rows).tocsr()  # some empty rows
    return sp.csr_matrix(m, dtype=np.float32)


def same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return (a.shape == b.shape and a.dtype == b.dtype and a.indices.dtype == b.indices.dtype
            and np.array_equal(a.indptr, b.indptr) and np.array_equal(a.indices, b.indices)
            and np.array_equal(a.data, b.data))


def write(tmp_path: Path, text: str | bytes, name: str = "m.txt") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# ---- sparse text: parsing -------------------------------------------------------------------

def test_read_sparse_small_cases(tmp_path: Path) -> None:
    text = "4 6\n3:0.5 1:2\n\n5 0:1e-3 2:+4\n\t 4:1.0  \n"
    m = read_sparse(write(tmp_path, text))
    assert m.shape == (4, 6) and m.dtype == np.float32 and m.indices.dtype == np.int32
    assert m.has_sorted_indices
    np.testing.assert_array_equal(m.indptr, [0, 2, 2, 5, 6])
    np.testing.assert_array_equal(m.indices, [1, 3, 0, 2, 5, 4])
    np.testing.assert_array_equal(m.data, np.float32([2, 0.5, 1e-3, 4, 1, 1]))
    assert same_csr(read_sparse(write(tmp_path, text.replace("\n", "\r\n"), "crlf.txt")), m)
    assert same_csr(read_sparse(write(tmp_path, text.rstrip("\n"), "no_final_newline.txt")), m)


@pytest.mark.parametrize("text,shape,nnz", [
    ("0 5\n", (0, 5), 0),
    ("0 0", (0, 0), 0),
    ("1 3\n\n", (1, 3), 0),       # one empty row
    ("3 3\n\n\n\n", (3, 3), 0),   # only empty rows
    ("2 3\n\n1:1", (2, 3), 1),    # empty first row, no final newline
])
def test_read_sparse_empty_rows(tmp_path: Path, text: str, shape: tuple, nnz: int) -> None:
    m = read_sparse(write(tmp_path, text))
    assert m.shape == shape and m.nnz == nnz


def test_parser_matches_reference_and_thread_count(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    m = random_csr(rng, 3000, 50_000, 0.002)  # ~300K entries, ~4.7 MB: several 1 MiB parallel ranges
    path = tmp_path / "big.txt"
    write_sparse(path, m)
    assert path.stat().st_size > 4 * (1 << 20)
    ref = reference_parse(path.read_text())
    one = read_sparse(path, num_threads=1)
    assert same_csr(one, ref) and same_csr(one, sp.csr_matrix(m))
    for threads in (2, 3, 8):
        assert same_csr(read_sparse(path, num_threads=threads), one)


def _parse(text: bytes, **kw) -> tuple:
    rows, cols, indptr, indices, data = _C.parse_sparse_text(text, **kw)
    return rows, cols, indptr.tolist(), indices.tolist(), data.tolist()


@pytest.mark.parametrize("text", [
    b"5 9\n3:1 1:2\n\n\n8:0.25 0:1 4\n7:3",
    b"4 9\r\n3:1\r\n\r\n 2:5  6:1 \r\n\r\n",
    b"3 100\n" + b" ".join(b"%d:%d" % (c, c) for c in range(99, 0, -3)) + b"\n\n0\n",
])
def test_parser_range_boundaries(text: bytes) -> None:
    """Every split of the text into parallel ranges gives the result of one range."""
    whole = _parse(text, num_threads=1, chunk_bytes=1 << 20)
    for chunk_bytes in range(1, len(text) + 2):
        for threads in (1, 3):
            assert _parse(text, num_threads=threads, chunk_bytes=chunk_bytes) == whole, chunk_bytes


def test_parser_error_line_for_every_range_split() -> None:
    text = b"5 4\n1:1\n\n2:1 0:1\n3:x 9:1\n-1:1\n"
    for chunk_bytes in range(1, len(text) + 2):
        with pytest.raises(ValueError, match=r"^line 5: value 'x'"):
            _C.parse_sparse_text(text, num_threads=2, chunk_bytes=chunk_bytes)


def test_parser_long_row_spanning_ranges(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    cols = rng.choice(2_000_000, size=250_000, replace=False)  # one line of ~2.5 MB, then short ones
    row = " ".join(f"{c}:{v}" for c, v in zip(cols, rng.integers(1, 9, cols.size)))
    text = f"4 2000000\n\n{row}\n3:1\n\n"
    m = read_sparse(write(tmp_path, text), num_threads=4)
    assert same_csr(m, reference_parse(text))


def nearest_float32(text: str) -> np.float32:
    """The float32 nearest to the decimal `text` (ties to even), computed exactly with fractions."""
    from fractions import Fraction

    x = Fraction(text)
    if x == 0:
        return np.float32(-0.0 if text.startswith("-") else 0.0)
    f = np.float32(float(x))
    with np.errstate(over="ignore"):
        candidates = [np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))]
    candidates = [c for c in candidates if np.isfinite(c)]
    key = [(abs(Fraction(float(c)) - x), int(np.array(c).view(np.uint32)) & 1) for c in candidates]
    return candidates[min(range(len(candidates)), key=key.__getitem__)]


def test_values_are_correctly_rounded(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    floats = rng.integers(0, 2**32, 3000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    floats = floats[np.isfinite(floats) & (np.abs(floats) < 1e30) & (np.abs(floats) > 1e-30)]
    texts = [repr(float(f)) for f in floats]  # the double's shortest form: up to 17 digits
    texts += [f"{f:.6f}" for f in floats[:500]] + [f"{f:.9e}" for f in floats[500:1000]]
    texts += ["1.00000005960464477", "1.00000005960464478", "1.000000059604644775390625",  # around a midpoint
              "0.50000002980232239", "16777217", "16777219", "33554433", "3.4028235e38", "1.1754944e-38",
              "1e-45", "7.0064923e-45", "-0", "0.0", "-2.5E+3", "1.", ".5", "+0.25", "123456789012345678901234",
              # finite but below half the smallest denormal: they round to +-0 (not "not finite")
              "1e-50", "-1e-50", "7e-46", "7.1e-46", "1e-400", "-0.5e-999", "+1e-46",
              "0.000000000000000000000000000000000000000000000000001", "123456e-60", "4e-45"]
    path = write(tmp_path, f"1 {len(texts)}\n" + " ".join(f"{i}:{t}" for i, t in enumerate(texts)) + "\n")
    got = read_sparse(path).data
    want = np.array([nearest_float32(t.lstrip("+")) for t in texts], dtype=np.float32)
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


def test_unsorted_rows_are_sorted(tmp_path: Path) -> None:
    m = read_sparse(write(tmp_path, "2 10\n9:1 2:2 5:3\n1 0\n"))
    np.testing.assert_array_equal(m.indices, [2, 5, 9, 0, 1])
    np.testing.assert_array_equal(m.data, [2, 3, 1, 1, 1])


BAD_FILES = [
    ("", 1, "empty"),
    ("2 5 7\n\n\n", 1, "header"),
    ("x 5\n", 1, "header"),
    ("-1 5\n", 1, "header"),
    ("3 5\n1:1\n\n", 1, "header says 3 rows but 2"),
    ("1 5\n1:1\n2:1\n", 1, "header says 1 rows but 2"),
    ("2 5\n1:1\n0:1 5:1\n", 3, ">= the header's column count 5"),
    ("2 5\n1:1\n0:1 99999999999999999999:1\n", 3, ">= the header's column count"),
    ("2 5\n-2:1\n\n", 2, "negative column id '-2'"),
    ("2 5\n\n1:abc\n", 3, "value 'abc' is not a finite number"),
    ("2 5\n\n1:\n", 3, "is not a finite number"),
    ("2 5\n\n1:nan\n", 3, "'nan' is not a finite number"),
    ("2 5\n\n1:inf\n", 3, "'inf' is not a finite number"),
    ("2 5\n\n1:1e99\n", 3, "not a finite number"),
    ("2 5\n\n1:1.5x\n", 3, "not a finite number"),
    ("2 5\n\nq:1\n", 3, "column id 'q' is not an integer"),
    ("2 5\n\n1.5:1\n", 3, "column id '1.5' is not an integer"),
    ("2 5\n\n:1\n", 3, "is not an integer"),
    ("2 5\n3:1 1:1 3:2\n\n", 2, "column id 3 appears twice"),
    ("2 5\n3:1 3:2\n\n", 2, "column id 3 appears twice"),
    ("2 5\n\n0:+-1\n", 3, "value '+-1' is not a finite number"),
    ("2 5\n\n0:++1\n", 3, "value '++1' is not a finite number"),
    ("2 5\n\n0:+\n", 3, "value '+' is not a finite number"),
    ("2 5\n\n0:1e39\n", 3, "value '1e39' is not a finite number"),
    ("2 5\n\n0:-1e99999999999999999999\n", 3, "is not a finite number"),
]


@pytest.mark.parametrize("text,line,message", BAD_FILES)
def test_malformed_sparse_names_file_and_line(tmp_path: Path, text: str, line: int, message: str) -> None:
    path = write(tmp_path, text, "bad_X_Y.txt")
    with pytest.raises(ValueError) as info:
        read_sparse(path)
    assert str(path) in str(info.value)
    assert f"line {line}:" in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("text,line,quoted", [
    (b"2 5\n0:1\n1:\xff\n", 3, r"value '\xff'"),
    (b"2 5\n\n\xc3\xa9:1\n", 3, r"column id '\xc3\xa9'"),
    (b"2 \xe2\x82\n\n\n", 1, r"found '2 \xe2\x82'"),
    (b"1 5\n" + "\u00e9".encode() * 30 + b"\n", 2, r"'\xc3\xa9\xc3\xa9"),  # cut inside a character
    (b"1 5\n0:1\x00 1:1\n", 2, r"'1\x00'"),
    (b"1 5\n0:\\\n", 2, r"'\x5c'"),
], ids=["invalid-utf8-value", "utf8-column-id", "truncated-utf8-header", "cut-inside-a-character", "nul", "backslash"])
def test_malformed_bytes_keep_file_and_line(tmp_path: Path, text: bytes, line: int, quoted: str) -> None:
    """A byte that is not printable ASCII is quoted as \\xHH: the message keeps its file and line."""
    path = write(tmp_path, text, "bad_X_Y.txt")
    with pytest.raises(ValueError) as info:
        read_sparse(path)
    assert str(info.value).startswith(f"{path}: line {line}: ")
    assert quoted in str(info.value)


def test_error_line_numbers_far_into_a_big_file(tmp_path: Path) -> None:
    rows = [" ".join(f"{c}:1" for c in range(i % 50, i % 50 + 40)) for i in range(40_000)]  # ~8 MB
    rows[31_234] = "1:1 7:oops"
    rows[35_000] = "-5:1"
    path = write(tmp_path, "40000 100\n" + "\n".join(rows) + "\n")
    for threads in (1, 4):  # the earliest error, whatever the thread count
        with pytest.raises(ValueError, match=r"line 31236: value 'oops'"):
            read_sparse(path, num_threads=threads)


def test_missing_file() -> None:
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        read_sparse("/nonexistent/nope.txt")


def test_parse_from_bytes() -> None:
    rows, cols, indptr, indices, data = _C.parse_sparse_text(b"2 3\n2:1\n0:2\n")
    assert (rows, cols) == (2, 3)
    np.testing.assert_array_equal(indptr, [0, 1, 2])
    np.testing.assert_array_equal(indices, [2, 0])
    np.testing.assert_array_equal(data, [1, 2])


# ---- sparse text: writing -------------------------------------------------------------------

@pytest.mark.parametrize("shape,density", [((0, 4), 0.0), ((3, 0), 0.0), ((5, 5), 0.0), ((200, 300), 0.05),
                                           ((40_000, 1000), 0.002)])
def test_write_read_round_trip(tmp_path: Path, shape: tuple, density: float) -> None:
    m = random_csr(np.random.default_rng(2), *shape, density)
    path = tmp_path / "x.txt"
    write_sparse(path, m)
    back = read_sparse(path)
    assert same_csr(back, sp.csr_matrix(m)) and back.shape == shape
    assert same_csr(back, reference_parse(path.read_text()))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.txt"]  # no temporary left behind


def test_write_is_the_same_for_any_thread_count(tmp_path: Path) -> None:
    m = random_csr(np.random.default_rng(3), 50_000, 300, 0.01)  # several 8192-row formatting tasks
    write_sparse(tmp_path / "a.txt", m, num_threads=1)
    write_sparse(tmp_path / "b.txt", m, num_threads=3)
    assert (tmp_path / "a.txt").read_bytes() == (tmp_path / "b.txt").read_bytes()


def test_write_format_is_the_xc_one(tmp_path: Path) -> None:
    m = sp.csr_matrix(np.array([[0, 1, 0.5], [0, 0, 0], [2, 0, 0]], dtype=np.float32))
    write_sparse(tmp_path / "y.txt", m)
    assert (tmp_path / "y.txt").read_text() == "3 3\n1:1 2:0.5\n\n0:2\n"


def test_write_rejects_non_finite_and_keeps_old_file(tmp_path: Path) -> None:
    path = tmp_path / "y.txt"
    path.write_text("old")
    with pytest.raises(ValueError, match="NaN or infinite"):
        write_sparse(path, sp.csr_matrix(np.array([[np.nan, 1.0]])))
    assert path.read_text() == "old"


def test_write_converts_to_float32_csr(tmp_path: Path) -> None:
    dense = np.array([[0, 3], [1, 0]], dtype=np.int64)
    write_sparse(tmp_path / "d.txt", dense)
    assert same_csr(read_sparse(tmp_path / "d.txt"), sp.csr_matrix(dense.astype(np.float32)))


# ---- texts and pairs ------------------------------------------------------------------------

def test_texts_plain_empty_and_id_arrow(tmp_path: Path) -> None:
    assert read_texts(write(tmp_path, "a b\n\nc\n")) == ["a b", "", "c"]
    assert read_texts(write(tmp_path, "a\n\n")) == ["a", ""]
    assert read_texts(write(tmp_path, "\n")) == [""]
    assert read_texts(write(tmp_path, "")) == []
    assert read_texts(write(tmp_path, "x\r\ny")) == ["x", "y"]
    assert read_texts(write(tmp_path, "\ufeffÅland\n".encode("utf-8"))) == ["Åland"]
    assert read_texts(write(tmp_path, "12->Foo -> bar\nQ7->\nab-c->x\n")) == ["Foo -> bar", "", "x"]
    # not every line is id->text: kept whole
    assert read_texts(write(tmp_path, "12->Foo\nplain title\n")) == ["12->Foo", "plain title"]
    assert read_texts(write(tmp_path, "a -> b\n")) == ["a -> b"]


def test_texts_line_count_and_encoding_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "a\nb\n", "train.raw.txt")
    with pytest.raises(ValueError, match=r"train.raw.txt: 2 lines of text but trn_X_Y.txt has 3"):
        read_texts(path, 3, "trn_X_Y.txt")
    bad = write(tmp_path, b"ok\nok\n\xff\xfe\n", "bad.raw.txt")
    with pytest.raises(ValueError, match=r"bad.raw.txt: line 3: not valid UTF-8"):
        read_texts(bad)


def test_write_texts_round_trip_and_rejects_line_breaks(tmp_path: Path) -> None:
    texts = ["", "Åland", "a  b", "", "x->y", ""]
    write_texts(tmp_path / "t.txt", texts)
    assert read_texts(tmp_path / "t.txt", len(texts)) == texts
    write_texts(tmp_path / "e.txt", [])
    assert read_texts(tmp_path / "e.txt", 0) == []
    with pytest.raises(ValueError, match="text 1 contains a line break"):
        write_texts(tmp_path / "t.txt", ["a", "b\nc"])
    with pytest.raises(ValueError, match="text 0 contains a line break"):
        write_texts(tmp_path / "t.txt", ["a\n"])
    with pytest.raises(ValueError, match=r"t.txt: text 1 cannot be written as UTF-8"):
        write_texts(tmp_path / "t.txt", ["a", "\ud800"])


# Texts that read_texts could mistake for something else: a CR (read_texts reads CRLF as LF), a
# byte-order mark (dropped at the start of a file), `id->text` lines (ids dropped), control characters.
TRICKY_TEXTS = [
    ["a\r"], ["\r"], ["a\rb", "c\r", ""], ["x->y"], ["x->y", "a->", "1->2->3"], ["\ufeff"], ["\ufeffabc", "d"],
    ["\ufeff\ufeffx->y", "k->v\r"], ["\x0bv\x0c", "\x1c\x1d\x1e\x85\u2028\u2029", "\x00\x7f"], ["", "->x"],
    [" ->x", "a->b"], ["x->y", "plain"], ["\r\r", "\ufeff\r"], [""], [],
]


@pytest.mark.parametrize("texts", TRICKY_TEXTS, ids=lambda t: ascii(t)[:40])
def test_write_texts_reads_back_exactly(tmp_path: Path, texts: list[str]) -> None:
    write_texts(tmp_path / "t.txt", texts)
    assert read_texts(tmp_path / "t.txt", len(texts)) == texts


def test_plain_texts_are_written_as_before(tmp_path: Path) -> None:
    """The id, BOM and CRLF forms are used only where plain lines would not read back."""
    write_texts(tmp_path / "t.txt", ["a b", "x->y", "", "é\rz"])
    assert (tmp_path / "t.txt").read_bytes() == "a b\nx->y\n\né\rz\n".encode()
    write_texts(tmp_path / "t.txt", ["x->y", "a->"])
    assert (tmp_path / "t.txt").read_bytes() == b"0->x->y\n1->a->\n"
    write_texts(tmp_path / "t.txt", ["a\r", "b"])
    assert (tmp_path / "t.txt").read_bytes() == b"a\r\r\nb\r\n"
    write_texts(tmp_path / "t.txt", ["\ufeffa"])
    assert (tmp_path / "t.txt").read_bytes() == "\ufeff\ufeffa\n".encode()


def test_pairs(tmp_path: Path) -> None:
    pairs = np.array([[0, 5], [3, 1], [3, 2]])
    write_pairs(tmp_path / "f.txt", pairs)
    assert (tmp_path / "f.txt").read_text() == "0 5\n3 1\n3 2\n"
    out = read_pairs(tmp_path / "f.txt")
    assert out.dtype == np.int64 and np.array_equal(out, pairs)
    assert read_pairs(write(tmp_path, "1\t2\r\n\n 4 5 \n")).tolist() == [[1, 2], [4, 5]]
    assert read_pairs(write(tmp_path, "")).shape == (0, 2)
    for text, line in [("1 2\n3\n", 2), ("1 2\n3 4 5\n", 2), ("1 x\n", 1), ("1 2\n\n-1 2\n", 3),
                       ("0 \u0661\n", 1), ("\uff11 2\n", 1), ("1 2\n0 \u00b2\n", 2),  # digits, but not ASCII ones
                       ("0 99999999999999999999999\n", 1), ("1 2\n1000000000000000000 0\n", 2)]:  # int64 overflow
        with pytest.raises(ValueError, match=rf"filter.txt: line {line}: expected two"):
            read_pairs(write(tmp_path, text, "filter.txt"))
    assert read_pairs(write(tmp_path, "999999999999999999 0\n")).tolist() == [[999999999999999999, 0]]


# ---- whole datasets -------------------------------------------------------------------------

def make_dataset(seed: int = 0, *, anchors: bool = True, name: str = "toy") -> Dataset:
    rng = np.random.default_rng(seed)
    N, T, L = 30, 12, 20
    anchor_sets = {}
    if anchors:
        anchor_sets = {
            "hyperlink": AnchorSet([f"anchor {i} é" for i in range(15)], random_csr(rng, N, 15, 0.2),
                                   random_csr(rng, L, 15, 0.2), random_csr(rng, T, 15, 0.2)),
            "also_view": AnchorSet(["", "x", "y->z"], random_csr(rng, N, 3, 0.5), random_csr(rng, L, 3, 0.5)),
        }
    return Dataset(
        train_texts=[f"query {i}" if i % 7 else "" for i in range(N)], test_texts=[f"test {i} ünï" for i in range(T)],
        label_texts=[f"label {i}" for i in range(L)],
        train_Y=(random_csr(rng, N, L, 0.1) != 0).astype(np.float32), test_Y=(random_csr(rng, T, L, 0.1) != 0),
        anchor_sets=anchor_sets, test_filter=np.array([[0, 3], [5, 19]]), A=0.6, B=2.6, name=name)


def test_dataset_canonical_form() -> None:
    ds = make_dataset()
    for m in (ds.train_Y, ds.test_Y, ds.anchor_sets["hyperlink"].train_X_A):
        assert isinstance(m, sp.csr_matrix) and m.dtype == np.float32 and m.indices.dtype == np.int32
        assert m.has_sorted_indices
    assert ds.test_filter.dtype == np.int64
    assert ds == make_dataset() and ds != make_dataset(1)  # negative control
    other = make_dataset()
    other.anchor_sets["hyperlink"].label_A.data[0] += 1
    assert ds != other


@pytest.mark.parametrize("target", ["dir", "ds.npz"])
def test_save_load_round_trip(tmp_path: Path, target: str) -> None:
    ds = make_dataset()
    save_xc(ds, tmp_path / target)
    back = load_xc(tmp_path / target)
    assert back == ds
    assert list(back.anchor_sets) == ["hyperlink", "also_view"]  # order kept
    assert back.anchor_sets["also_view"].test_X_A is None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # temporaries cleaned


def test_round_trip_without_anchors_or_filter(tmp_path: Path) -> None:
    ds = make_dataset(anchors=False)
    ds.test_filter = None
    save_xc(ds, tmp_path / "d")
    assert load_xc(tmp_path / "d") == ds
    save_xc(ds, tmp_path / "d.npz")
    assert load_xc(tmp_path / "d.npz") == ds


def test_directory_layout_written(tmp_path: Path) -> None:
    save_xc(make_dataset(), tmp_path / "d")
    files = sorted(str(p.relative_to(tmp_path / "d")) for p in (tmp_path / "d").rglob("*") if p.is_file())
    assert files == sorted([
        "trn_X_Y.txt", "tst_X_Y.txt", "filter_labels_test.txt", "ramen.json",
        "hyperlink_trn_X_Y.txt", "hyperlink_lbl_X_Y.txt", "hyperlink_tst_X_Y.txt",
        "also_view_trn_X_Y.txt", "also_view_lbl_X_Y.txt",
        "raw_data/train.raw.txt", "raw_data/test.raw.txt", "raw_data/label.raw.txt",
        "raw_data/hyperlink.raw.txt", "raw_data/also_view.raw.txt"])


def write_glf(root: Path) -> None:
    """A G-LF directory as the XC repository ships it: no ramen.json, id->text lines."""
    (root / "raw_data").mkdir(parents=True)
    (root / "trn_X_Y.txt").write_text("2 3\n0:1 2:1\n1:1\n")
    (root / "tst_X_Y.txt").write_text("1 3\n\n")
    (root / "raw_data/train.raw.txt").write_text("101->first query\n102->second query\n")
    (root / "raw_data/test.raw.txt").write_text("201->a test\n")
    (root / "raw_data/label.raw.txt").write_text("l0\nl1\nl2\n")
    (root / "filter_labels_test.txt").write_text("0 1\n")
    (root / "graph_trn_X_Y.txt").write_text("2 2\n0:1\n0:1 1:1\n")
    (root / "graph_lbl_X_Y.txt").write_text("3 2\n1:1\n\n0:0.5\n")
    (root / "raw_data/graph.raw.txt").write_text("7->g0\n8->g1\n")
    (root / "category_trn_X_Y.txt").write_text("2 1\n0:1\n\n")
    (root / "category_lbl_X_Y.txt").write_text("3 1\n\n\n0:1\n")
    (root / "category_tst_X_Y.txt").write_text("1 1\n0:1\n")
    (root / "raw_data/category.raw.txt").write_text("Science > Biology\n")


def test_load_glf_layout(tmp_path: Path) -> None:
    root = tmp_path / "G-LF-Tiny"
    write_glf(root)
    ds = load_xc(root)
    assert ds.name == "G-LF-Tiny" and (ds.A, ds.B) == (0.55, 1.5)
    assert ds.train_texts == ["first query", "second query"] and ds.test_texts == ["a test"]
    assert list(ds.anchor_sets) == ["category", "graph"]  # sorted without ramen.json
    g = ds.anchor_sets["graph"]
    assert g.texts == ["g0", "g1"] and g.test_X_A is None
    np.testing.assert_array_equal(g.label_A.toarray(), [[0, 1], [0, 0], [0.5, 0]])
    assert ds.anchor_sets["category"].test_X_A.nnz == 1
    np.testing.assert_array_equal(ds.test_filter, [[0, 1]])
    assert ds.test_Y.nnz == 0


@pytest.mark.parametrize("breakage,message", [
    (("raw_data/train.raw.txt", "only one\n"), r"train.raw.txt: 1 lines of text but trn_X_Y.txt \(rows\) has 2"),
    (("raw_data/label.raw.txt", "l0\nl1\n"), r"label.raw.txt: 2 lines of text but trn_X_Y.txt \(columns\) has 3"),
    (("raw_data/graph.raw.txt", "g0\n"), r"graph.raw.txt: 1 lines of text but graph_trn_X_Y.txt \(columns\) has 2"),
    (("tst_X_Y.txt", "1 4\n\n"), r"tst_X_Y.txt: 4 label columns but trn_X_Y.txt has 3"),
    (("graph_lbl_X_Y.txt", "2 2\n\n\n"), r"graph_lbl_X_Y.txt: 2 rows but the dataset has 3 labels"),
    (("graph_lbl_X_Y.txt", "3 3\n\n\n\n"), r"anchor set 'graph' files disagree on the number of anchors"),
    (("category_tst_X_Y.txt", "1 1\n0:1\n\n"), r"category_tst_X_Y.txt: line 1: the header says 1 rows but 2"),
    (("filter_labels_test.txt", "0 7\n"), r"test_filter pairs must lie in"),
    (("filter_labels_test.txt", "0 x\n"), r"filter_labels_test.txt: line 1"),
    (("ramen.json", "{"), r"ramen.json: line 1: not valid JSON"),
    (("ramen.json", '{"format": "ramen.xc", "anchor_sets": ["graph"]}'), r"lists anchor sets \['graph'\]"),
    (("ramen.json", '{"format": "ramen.xc", "A": "0.5"}'), r"ramen.json: 'A' must be a number"),
    (("ramen.json", '{"format": "ramen.xc", "version": 99}'), r"ramen.json: written by a newer ramen"),
    (("ramen.json", '{"format": "other"}'), r"ramen.json: not a ramen dataset description"),
    (("ramen.json", '{"format": "ramen.xc", "a": 0.5}'), r"ramen.json: unknown key\(s\) 'a'; known: A, B"),
    (("ramen.json", '{"A": -1}'), r"ramen.json: 'A' must be a finite number >= 0"),
    (("ramen.json", '{"B": -1}'), r"ramen.json: 'B' must be a finite number > -1"),
])
def test_load_errors_name_the_file(tmp_path: Path, breakage: tuple, message: str) -> None:
    write_glf(tmp_path)
    (tmp_path / breakage[0]).write_text(breakage[1])
    with pytest.raises(ValueError, match=message):
        load_xc(tmp_path)


@pytest.mark.parametrize("breakage,message", [
    ((b"ramen.json", b'{"format": "ramen.xc",\n "name": "\xff"}'), r"ramen.json: line 2: not valid UTF-8"),
    ((b"ramen.json", b'{"format": "ramen.xc", "version": "1"}'), r"ramen.json: 'version' must be a positive integer"),
    ((b"ramen.json", b'{"format": "ramen.xc", "version": 1.0}'), r"ramen.json: 'version' must be a positive integer"),
    ((b"ramen.json", b'{"format": "ramen.xc", "version": true}'), r"ramen.json: 'version' must be a positive integer"),
    ((b"ramen.json", b'{"format": "ramen.xc", "version": [2]}'), r"ramen.json: 'version' must be a positive integer"),
    ((b"ramen.json", b'{"format": "ramen.xc", "version": null}'), r"ramen.json: 'version' must be a positive integer"),
    ((b"ramen.json", b'{"format": "ramen.xc", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
     r"ramen.json: not valid JSON \(nested too deeply\)"),
    ((b"ramen.json", b'{"format": "ramen.xc", "A": 1' + b"0" * 5000 + b"}"), r"ramen.json: not valid JSON"),
    ((b"ramen.json", b'{"format": "ramen.xc", "A": 1' + b"0" * 400 + b"}"), r"ramen.json: 'A' must be a finite number"),
    ((b"ramen.json", b'{"format": "ramen.xc", "B": 1e999}'), r"ramen.json: 'B' must be a finite number"),
    ((b"ramen.json", b'{"format": "ramen.xc", "A": NaN}'), r"ramen.json: 'A' must be a finite number"),
    ((b"ramen.json", b'{"format": "ramen.xc", "anchor_sets": ["graph", "graph", "category"]}'),
     r"ramen.json: 'anchor_sets' names a set twice"),
    ((b"ramen.json", b"\xef\xbb\xbf" + b'{"format": "ramen.xc", "name": "bom"}'), None),  # a BOM is fine
])
def test_bad_description_names_the_file(tmp_path: Path, breakage: tuple, message: str | None) -> None:
    write_glf(tmp_path)
    (tmp_path / breakage[0].decode()).write_bytes(breakage[1])
    if message is None:
        assert load_xc(tmp_path).name == "bom"
        return
    with pytest.raises(ValueError, match=message):
        load_xc(tmp_path)


@pytest.mark.parametrize("name", ["ramen.json", "filter_labels_test.txt", "graph_tst_X_Y.txt", "trn_X_Y.txt",
                                  "raw_data/label.raw.txt", "category_lbl_X_Y.txt"])
def test_a_directory_in_place_of_a_file_is_an_error(tmp_path: Path, name: str) -> None:
    write_glf(tmp_path)
    path = tmp_path / name
    path.unlink(missing_ok=True)
    path.mkdir()
    with pytest.raises(ValueError, match=rf"{name}: is a directory, expected a file"):
        load_xc(tmp_path)
    path.rmdir()
    path.symlink_to(tmp_path / "nowhere")  # a broken link is not an absent file either
    with pytest.raises(ValueError, match=rf"{name}: is not a regular file"):
        load_xc(tmp_path)


def test_loaded_texts_save_and_load_unchanged(tmp_path: Path) -> None:
    """Whatever texts load_xc accepts, save_xc writes, and they load back the same."""
    write_glf(tmp_path / "src")
    (tmp_path / "src/raw_data/label.raw.txt").write_bytes(b"\xef\xbb\xbf\xef\xbb\xbfl\r0\nl1\x0b\x1c\nl2\r")
    (tmp_path / "src/raw_data/graph.raw.txt").write_bytes(b"7->g->0\n8->g->1\n")
    (tmp_path / "src/raw_data/category.raw.txt").write_bytes(b"\r\r\n")
    ds = load_xc(tmp_path / "src")
    assert ds.label_texts == ["\ufeffl\r0", "l1\x0b\x1c", "l2\r"]
    assert ds.anchor_sets["graph"].texts == ["g->0", "g->1"] and ds.anchor_sets["category"].texts == ["\r"]
    for target in ("dir", "ds.npz"):
        save_xc(ds, tmp_path / target)
        assert load_xc(tmp_path / target) == ds


def test_tricky_texts_round_trip_through_save_xc(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.label_texts = [f"{i}->{i}" for i in range(20)]
    ds.train_texts = ["\ufeffq\r"] + [f"q{i}\r" for i in range(29)]
    ds.test_texts = [f"\x85t{i}\u2028" for i in range(12)]
    ds.anchor_sets["also_view"].texts = ["a->", "b->c", "\ufeff"]
    save_xc(ds, tmp_path / "d")
    assert load_xc(tmp_path / "d") == ds


def test_save_error_names_the_target_file(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.test_texts[3] = "two\nlines"
    with pytest.raises(ValueError) as info:
        save_xc(ds, tmp_path / "d")
    assert str(info.value).startswith(f"{tmp_path / 'd' / 'raw_data' / 'test.raw.txt'}: text 3 contains a line break")


def test_load_missing_files(tmp_path: Path) -> None:
    write_glf(tmp_path)
    (tmp_path / "graph_lbl_X_Y.txt").unlink()
    with pytest.raises(FileNotFoundError, match="graph_lbl_X_Y.txt"):
        load_xc(tmp_path)
    with pytest.raises(FileNotFoundError, match="no dataset"):
        load_xc(tmp_path / "absent")


def test_a_hand_written_description_needs_no_format_key(tmp_path: Path) -> None:
    """The README lists name, A, B and the anchor-set order as ramen.json's keys; a file of just those
    was refused for want of "format": "ramen.xc"."""
    write_glf(tmp_path)
    (tmp_path / "ramen.json").write_text('{"name": "mydata", "A": 0.6, "B": 2.0}')
    ds = load_xc(tmp_path)
    assert (ds.name, ds.A, ds.B) == ("mydata", 0.6, 2.0)


def test_save_refuses_to_clobber(tmp_path: Path) -> None:
    ds = make_dataset()
    save_xc(ds, tmp_path / "d")
    with pytest.raises(FileExistsError, match=r"overwrite=True \(--overwrite on the command line\)"):
        save_xc(ds, tmp_path / "d")
    other = make_dataset(3, name="other")
    save_xc(other, tmp_path / "d", overwrite=True)
    assert load_xc(tmp_path / "d") == other
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("keep me")
    for overwrite in (False, True):  # without overwrite it used to advise overwrite=True, then refuse that
        with pytest.raises(ValueError, match="not a dataset directory"):
            save_xc(ds, tmp_path / "notes", overwrite=overwrite)
    assert (tmp_path / "notes" / "mine.txt").read_text() == "keep me"
    save_xc(ds, tmp_path / "d.npz")
    with pytest.raises(FileExistsError):
        save_xc(ds, tmp_path / "d.npz")
    save_xc(other, tmp_path / "d.npz", overwrite=True)
    assert load_xc(tmp_path / "d.npz") == other


def test_overwriting_a_dataset_keeps_what_is_not_part_of_it(tmp_path: Path) -> None:
    """`train --out DATASET/run1` then `data synth --out DATASET --overwrite` deleted the trained run with
    the dataset it replaced; so did any other file kept there (another tool's features, notes)."""
    ds, other = make_dataset(), make_dataset(3, name="other")
    save_xc(ds, tmp_path / "d")
    for extra, shown in (("run1/run.json", "run1/"), ("trn_X_Xf.txt", "trn_X_Xf.txt"),
                         ("raw_data/notes.md", "raw_data/notes.md"), (".hidden", ".hidden")):
        (tmp_path / "d" / extra).parent.mkdir(exist_ok=True)
        (tmp_path / "d" / extra).write_text("keep me")
        with pytest.raises(ValueError, match=f"refusing to replace .*: it holds {re.escape(shown)}, which is not part"):
            save_xc(other, tmp_path / "d", overwrite=True)
        assert (tmp_path / "d" / extra).read_text() == "keep me" and load_xc(tmp_path / "d") == ds
        (tmp_path / "d" / extra).unlink()
        if extra.startswith("run1/"):
            (tmp_path / "d" / "run1").rmdir()
    save_xc(other, tmp_path / "d", overwrite=True)  # a dataset's own files, however many, go with it
    assert load_xc(tmp_path / "d") == other


def test_save_failure_leaves_nothing(tmp_path: Path) -> None:
    ds = make_dataset()
    ds.label_texts[2] = "two\nlines"
    with pytest.raises(ValueError, match="text 2 contains a line break"):
        save_xc(ds, tmp_path / "d")
    assert list(tmp_path.iterdir()) == []


def test_bad_npz(tmp_path: Path) -> None:
    np.savez(tmp_path / "x.npz", a=np.zeros(3))
    with pytest.raises(ValueError, match="x.npz: not a valid ramen dataset archive"):
        load_xc(tmp_path / "x.npz")


def _archive_arrays(tmp_path: Path) -> dict[str, np.ndarray]:
    save_xc(make_dataset(), tmp_path / "good.npz")
    with np.load(tmp_path / "good.npz") as z:
        return dict(z)


@pytest.mark.parametrize("damage", ["empty", "npy", "text", "truncated", "flipped_crc", "flipped_name", "encrypted"])
def test_corrupt_npz_is_a_value_error(tmp_path: Path, damage: str) -> None:
    save_xc(make_dataset(), tmp_path / "good.npz")
    good = (tmp_path / "good.npz").read_bytes()
    data = {"empty": b"", "text": b"2 3\n0:1\n\n", "truncated": good[: len(good) // 2],
            "flipped_crc": good[:200] + bytes([good[200] ^ 0x10]) + good[201:],  # inside a member: bad CRC
            "flipped_name": good[:31] + bytes([good[31] ^ 0x01]) + good[32:]}.get(damage)  # local header's name
    if damage == "encrypted":  # the flag bit of the first member in the central directory: RuntimeError in zipfile
        at = good.index(b"PK\x01\x02") + 8
        data = good[:at] + bytes([good[at] | 1]) + good[at + 1:]
    if damage == "npy":
        np.save(tmp_path / "a.npy", np.zeros(3))
        data = (tmp_path / "a.npy").read_bytes()
    path = write(tmp_path, data, "bad.npz")
    with pytest.raises(ValueError, match=r"bad.npz: not a valid"):
        load_xc(path)


@pytest.mark.parametrize("edit,message", [
    (lambda a: a.update({"meta": np.array([1, 2])}), r"'meta' is a int64 array"),
    (lambda a: a.update({"meta": np.array('{"format": "ramen.xc", "version": 1.5}')}), r"'version' must be"),
    (lambda a: a.update({"meta": np.array("[" * 100_000)}), r"nested too deeply"),
    (lambda a: a.pop("train_Y.indptr"), r"no 'train_Y.indptr' array"),
    (lambda a: a.pop("test_Y.shape"), r"no 'test_Y' matrix"),
    (lambda a: a.update({"label_texts.offsets": a["label_texts.offsets"].astype(np.float64)}),
     r"'label_texts.offsets' is a float64 array"),
    (lambda a: a.update({"label_texts.offsets": a["label_texts.offsets"][::-1].copy()}), r"must ascend from 0"),
    (lambda a: a.update({"label_texts.offsets": a["label_texts.offsets"] * 2}), r"must ascend from 0"),
    (lambda a: a.update({"train_texts.utf8": np.frombuffer(b"\xff" * 10, np.uint8)}), r"can't decode"),
    (lambda a: a.update({"train_Y.indices": a["train_Y.indices"] + 100}), r"train_Y: \d+ column ids in \[0, 20\)"),
    (lambda a: a.update({"train_Y.indices": a["train_Y.indices"][:-1].copy()}), r"train_Y.indptr must ascend"),
    (lambda a: a.update({"train_Y.data": a["train_Y.data"][:-1].copy()}), r"train_Y: \d+ column ids .* as many values"),
    (lambda a: a.update({"train_Y.indptr": a["train_Y.indptr"][::-1].copy()}), r"train_Y.indptr must ascend"),
    (lambda a: a.update({"train_Y.indptr": a["train_Y.indptr"][:-1].copy()}), r"train_Y.indptr must ascend"),
    # scipy's full check passes this one (a negative last value), and sorting its indices then crashes
    (lambda a: a["anchor0.test_X_A.indptr"].__setitem__(slice(-3, None), [454758640, 612813937, -823439604]),
     r"anchor0.test_X_A.indptr must ascend"),
    (lambda a: a.update({"train_Y.shape": np.array([30, -1])}), r"train_Y.shape must be two non-negative"),
    (lambda a: a.update({"train_Y.data": a["train_Y.data"].astype(np.complex64)}),
     r"'train_Y.data.npy': unsupported array type <c8"),
    (lambda a: a.update({"test_filter": np.array([[0.5, 1.0]])}), r"'test_filter' is a float64 array"),
    (lambda a: a.update({"obj": np.array([{"x": 1}], dtype=object)}), r"unsupported array type"),
    (lambda a: a.update({"meta": np.array('{"format": "ramen.xc", "version": 1, "A": 1, "B": 1, "name": ""}')}),
     r"the description lacks \['anchor_sets'\]"),
])
def test_npz_contents_are_checked(tmp_path: Path, edit, message: str) -> None:
    arrays = _archive_arrays(tmp_path)
    edit(arrays)
    np.savez(tmp_path / "bad.npz", **arrays)  # an object array is pickled
    with pytest.raises(ValueError, match=r"bad.npz: .*" + message):
        load_xc(tmp_path / "bad.npz")


def test_npz_header_is_checked_before_reading(tmp_path: Path) -> None:
    """A shape that promises more than the member holds fails before anything that large is allocated."""
    ds = Dataset([""] * 3000, ["t"], ["a", "b"], sp.csr_matrix((3000, 2)), sp.csr_matrix((1, 2)))
    save_xc(ds, tmp_path / "good.npz")  # indptr: 12 KB, more than zipfile reads (and checks) at once
    good = (tmp_path / "good.npz").read_bytes()
    at = good.index(b"(3001,), }", good.index(b"train_Y.indptr.npy"))  # its header: 3001 entries, then padding
    old = b"(3001,), }" + b" " * 12
    assert good[at:at + len(old)] == old
    bad = good[:at] + b"(99999999999,), }".ljust(len(old)) + good[at + len(old):]  # the zip's sizes unchanged
    path = write(tmp_path, bad, "bad.npz")
    with pytest.raises(ValueError, match=r"bad.npz: not a valid .npz archive .*header promises 399999999996 bytes"):
        load_xc(path)


@pytest.mark.parametrize("header", [b"{'descr': '<i8', 'fortran_order': False, 'shape': ((3,), }",  # TokenError
                                    b"{'descr': 5, 'fortran_order': False, 'shape': (3,), }",
                                    b"{'descr': '<i8', 'fortran_order': False, 'shape': (-3,), }",
                                    b"{'descr': 'O', 'fortran_order': False, 'shape': (3,), }",
                                    b"{'descr': [('a', '<i8')], 'fortran_order': False, 'shape': (3,), }"])
def test_npz_bad_npy_headers(tmp_path: Path, header: bytes) -> None:
    import struct
    import zipfile

    header += b" " * (63 - (10 + len(header)) % 64) + b"\n"
    with zipfile.ZipFile(tmp_path / "bad.npz", "w") as zf:
        zf.writestr("meta.npy", b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(24))
    with pytest.raises(ValueError, match=r"bad.npz: not a valid .npz archive \(ValueError: member 'meta.npy'"):
        load_xc(tmp_path / "bad.npz")


def test_npz_duplicate_members_and_compressed_archives(tmp_path: Path) -> None:
    import zipfile

    arrays = _archive_arrays(tmp_path)
    np.savez_compressed(tmp_path / "deflated.npz", **arrays)  # not what save_xc writes, but a valid archive
    assert load_xc(tmp_path / "deflated.npz") == make_dataset()
    with zipfile.ZipFile(tmp_path / "good.npz", "a") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.writestr("meta.npy", (tmp_path / "good.npz").read_bytes()[:0])
    with pytest.raises(ValueError, match=r"good.npz: not a valid .npz archive .*appears twice"):
        load_xc(tmp_path / "good.npz")


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.train_texts.pop(), r"train_Y has shape \(30, 20\) but there are 29 train texts"),
    (lambda d: d.label_texts.append("x"), r"train_Y has shape \(30, 20\) but there are 30 train texts and 21"),
    (lambda d: setattr(d, "test_Y", sp.csr_matrix((12, 21), dtype=np.float32)), r"test_Y has shape \(12, 21\)"),
    (lambda d: d.anchor_sets["hyperlink"].texts.pop(), r"anchor set 'hyperlink': train_X_A has shape \(30, 15\), expected \(30, 14\)"),
    (lambda d: setattr(d.anchor_sets["also_view"], "label_A", sp.csr_matrix((19, 3), dtype=np.float32)),
     r"anchor set 'also_view': label_A has shape \(19, 3\), expected \(20, 3\)"),
    (lambda d: d.anchor_sets.update({"bad name": d.anchor_sets["also_view"]}), r"anchor set name 'bad name'"),
    (lambda d: setattr(d, "test_filter", np.array([[12, 0]])), r"test_filter pairs must lie in \[0, 12\) x \[0, 20\)"),
    (lambda d: setattr(d, "B", float("nan")), r"propensity constants"),
    (lambda d: d.train_Y.data.__setitem__(0, np.inf), r"train_Y holds a NaN or infinite value"),
])
def test_validate_errors(edit, message: str) -> None:
    ds = make_dataset()
    ds.validate()
    edit(ds)
    with pytest.raises(ValueError, match=message):
        ds.validate()


def test_validate_duplicates_and_bad_filter_shape() -> None:
    ds = make_dataset()
    dup = sp.csr_matrix((np.ones(2, np.float32), np.array([1, 1], np.int32), np.array([0, 2] + [2] * 30, np.int32)),
                        shape=(31, 20))
    dup.has_sorted_indices = True  # what a hand-built CSR may claim
    ds.train_texts.append("extra")
    ds.train_Y = dup
    for a in ds.anchor_sets.values():
        a.train_X_A = sp.csr_matrix((31, a.num_anchors), dtype=np.float32)
    with pytest.raises(ValueError, match="train_Y holds a column id twice"):
        ds.validate()
    with pytest.raises(ValueError, match=r"test_filter must be an \(n, 2\) integer array"):
        Dataset([], [], [], sp.csr_matrix((0, 0)), sp.csr_matrix((0, 0)), test_filter=np.zeros((2, 3), int))


def test_describe() -> None:
    Y = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=np.float32))
    A = AnchorSet(["a", "b"], sp.csr_matrix(np.ones((4, 2))), sp.csr_matrix(np.eye(3, 2)))
    ds = Dataset(["q"] * 4, ["t"] * 2, ["x", "y", "z"], Y, sp.csr_matrix(np.eye(2, 3)),
                 anchor_sets={"graph": A}, name="tiny")
    s = describe(ds)
    assert (s["train_points"], s["labels"], s["test_points"]) == (4, 3, 2)
    assert s["avg_points_per_label"] == pytest.approx(4 / 3) and s["avg_labels_per_point"] == pytest.approx(1.0)
    assert s["labels_without_train_points"] == 1
    assert s["anchor_sets"]["graph"] == {"nodes": 2, "avg_neighbours_per_point": 2.0,
                                         "avg_neighbours_per_label": pytest.approx(2 / 3),
                                         "avg_neighbours_per_test_point": None}
    table = str(s)
    assert "avg points per label" in table and "1.33" in table and "[graph] nodes" in table


# ---- Wikispeedia ----------------------------------------------------------------------------

needs_wikispeedia = pytest.mark.skipif(not WIKISPEEDIA.is_dir(), reason=f"no Wikispeedia data at {WIKISPEEDIA}")


@pytest.fixture(scope="module")
def wiki() -> Dataset:
    if not WIKISPEEDIA.is_dir():
        pytest.skip(f"no Wikispeedia data at {WIKISPEEDIA}")
    return wikispeedia(WIKISPEEDIA)


@needs_wikispeedia
def test_wikispeedia_sizes(wiki: Dataset) -> None:
    assert (wiki.num_train, wiki.num_test, wiki.num_labels) == (2984, 745, 3729)
    assert wiki.train_Y.nnz + wiki.test_Y.nnz == 26_470  # the README's mutual-link pairs
    assert np.diff(wiki.train_Y.indptr).min() >= 1 and np.diff(wiki.test_Y.indptr).min() >= 1
    assert list(wiki.anchor_sets) == ["hyperlink", "category"]
    assert len(wiki.test_filter) == 745


@needs_wikispeedia
def test_wikispeedia_structure(wiki: Dataset) -> None:
    label_id = {t: i for i, t in enumerate(wiki.label_texts)}
    assert len(label_id) == 3729  # decoded titles are unique
    assert "Antonín Dvořák" in label_id and "Bahá'í Faith" in label_id  # URL-decoded, underscores as spaces
    # a query's own title is its label of that name; it is never its own label, and test ones are filtered
    queries = wiki.train_texts + wiki.test_texts
    Y = sp.vstack([wiki.train_Y, wiki.test_Y]).tocsr()
    own = np.array([label_id[t] for t in queries])
    assert not Y[np.arange(len(queries)), own].any()
    np.testing.assert_array_equal(wiki.test_filter[:, 1], own[wiki.num_train:])
    # labels are mutual: query a has label b iff query b has label a
    by_label = sp.csr_matrix((Y.data, (own[Y.nonzero()[0]], Y.indices)), shape=(3729, 3729))
    assert (by_label != by_label.T).nnz == 0
    # one-way links never coincide with a label of the same row
    h = wiki.anchor_sets["hyperlink"]
    anchor_label = np.array([label_id.get(t, -1) for t in h.texts])
    H = sp.vstack([h.train_X_A, h.test_X_A]).tocsr()
    rows, cols = H.nonzero()
    linked = anchor_label[cols] >= 0
    assert not np.asarray(Y[rows[linked], anchor_label[cols[linked]]]).any()
    cat = wiki.anchor_sets["category"].texts
    assert "Science > Biology" in cat and "Science" in cat and not any("subject" in c for c in cat)
    assert not any("_" in t or "%" in t for t in queries)


@needs_wikispeedia
def test_wikispeedia_seeded(wiki: Dataset, tmp_path: Path) -> None:
    again = wikispeedia(WIKISPEEDIA, seed=0)
    assert again == wiki
    other = wikispeedia(WIKISPEEDIA, seed=1, test_fraction=0.5)
    assert other.test_texts != wiki.test_texts and other.num_test == 1864
    save_xc(wiki, tmp_path / "wiki.npz")
    assert load_xc(tmp_path / "wiki.npz") == wiki


def test_wikispeedia_missing_files(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="articles.tsv"):
        wikispeedia(tmp_path)
    with pytest.raises(ValueError, match="test_fraction"):
        wikispeedia(tmp_path, test_fraction=1.0)


def test_wikispeedia_tiny_source(tmp_path: Path) -> None:
    """A hand-made SNAP-format source: every rule of the task checked on a case small enough to reason about."""
    (tmp_path / "articles.tsv").write_text("# comment\n\nA\nB\nC\nD%C3%A9_x\nDonation\n")
    (tmp_path / "links.tsv").write_text("A\tB\nB\tA\nA\tC\nC\tA\nA\tA\nB\tD%C3%A9_x\nC\tDonation\nD%C3%A9_x\tA\n")
    (tmp_path / "categories.tsv").write_text("A\tsubject.Science.Biology\nB\tsubject.Countries\nD%C3%A9_x\tsubject.Art\n")
    ds = wikispeedia(tmp_path, seed=0, test_fraction=0.4)
    assert sorted(ds.label_texts) == ["A", "B", "C"] and ds.label_texts == ["A", "B", "C"]  # Dé x: no mutual link
    assert ds.num_test == 1 and ds.num_train == 2
    queries = ds.train_texts + ds.test_texts
    Y = sp.vstack([ds.train_Y, ds.test_Y]).toarray()
    expected = {"A": {"B", "C"}, "B": {"A"}, "C": {"A"}}
    for q, row in zip(queries, Y):
        assert {ds.label_texts[j] for j in np.nonzero(row)[0]} == expected[q]
    h = ds.anchor_sets["hyperlink"]
    assert h.texts == ["Dé x"]  # B -> Dé x is one-way; Dé x -> A starts from a non-task article
    assert h.label_A.toarray().ravel().tolist() == [0, 1, 0]
    c = ds.anchor_sets["category"]
    assert c.texts == ["Countries", "Science", "Science > Biology"]
    assert c.label_A.toarray().tolist() == [[0, 1, 1], [1, 0, 0], [0, 0, 0]]
    assert ds.test_filter.tolist() == [[0, ds.label_texts.index(ds.test_texts[0])]]


def test_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_sparse("rel.txt", sp.csr_matrix(np.eye(2)))
    assert read_sparse("rel.txt").nnz == 2
    save_xc(make_dataset(), "sub")
    assert load_xc("sub") == make_dataset()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rel.txt", "sub"]


def test_temp_paths_are_unique_and_keep_the_suffix(tmp_path):
    from ramen.files import temp_path

    names = {temp_path(tmp_path / "cache" / "g.npz") for _ in range(100)}
    assert len(names) == 100
    assert all(n.suffix == ".npz" and n.parent == tmp_path / "cache" and n.name.startswith(".g.tmp-") for n in names)
