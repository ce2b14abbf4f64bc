"""The Extreme Classification Repository's text files: sparse matrices, one-text-per-line files, pairs.

Sparse matrix (`trn_X_Y.txt`, ...): a first line `rows cols`, then one line per row of
space-separated `col:value` entries (0-based column ids; a bare `col` means value 1); an empty line
is an empty row. Values are float32. Text files (`raw_data/*.raw.txt`): one UTF-8 text per line,
optionally `id->text` lines. Pair files (`filter_labels_test.txt`): one `row col` pair per line.
Every error names the file and, where it lies on one, the line.
"""
from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import scipy.sparse as sp

_INT32_MAX = np.iinfo(np.int32).max


def canonical_csr(m: object, what: str = "matrix") -> sp.csr_matrix:
    """`m` as the CSR form every ramen matrix has: float32 values, sorted column ids, int32 indices
    (int64 when nnz or a dimension needs it). Returns `m` itself when it already is; never modifies it."""
    if isinstance(m, np.ndarray):
        if m.ndim != 2:
            raise ValueError(f"{what} must be 2-D, got shape {m.shape}")
        m = sp.csr_matrix(m)
    elif not sp.issparse(m):
        raise TypeError(f"{what} must be a scipy sparse matrix or a 2-D numpy array, got {type(m).__name__}")
    if not isinstance(m, sp.csr_matrix):
        m = sp.csr_matrix(m)
    wide = m.nnz > _INT32_MAX or max(m.shape, default=0) > _INT32_MAX
    idx = np.int64 if wide else np.int32
    if m.dtype == np.float32 and m.indices.dtype == idx and m.indptr.dtype == idx and m.has_sorted_indices:
        return m
    out = sp.csr_matrix((m.data.astype(np.float32), m.indices.astype(idx), m.indptr.astype(idx)), shape=m.shape)
    out.sort_indices()
    return out


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Calls write(tmp) on a temporary sibling of `path`, then renames it to `path`."""
    tmp = _tmp_name(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def require_file(path: Path) -> None:
    """FileNotFoundError when nothing is at `path`, ValueError naming it when something other than a
    regular file is (a directory, a broken link, a FIFO that would block the read)."""
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no such file: {path}")
    if not path.is_file():
        what = "a directory" if path.is_dir() else "not a regular file"
        raise ValueError(f"{path}: is {what}, expected a file")


def read_sparse(path: str | os.PathLike, *, num_threads: int = 0) -> sp.csr_matrix:
    """Reads one sparse matrix text file (rows x cols CSR, float32), parsed in parallel in C++.

    ValueError naming the file and line: a bad header, a header whose row count disagrees with the
    file, a column id that is negative, not an integer, >= the column count or repeated in its
    row, a value that is not a finite number (one too small for float32 reads as +-0). Bytes that
    are not printable ASCII are quoted as \\xHH in the message.
    """
    from ramen._build import load_C
    _C = load_C()

    path = Path(path)
    require_file(path)
    try:
        rows, cols, indptr, indices, data = _C.read_sparse_text(str(path), num_threads=num_threads)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    return canonical_csr(sp.csr_matrix((data, indices, indptr), shape=(rows, cols)), str(path))


def write_sparse(path: str | os.PathLike, m: object, *, num_threads: int = 0) -> None:
    """Writes a sparse matrix in the text format (float32 values, shortest round-trip form), atomically."""
    from ramen._build import load_C
    _C = load_C()

    path = Path(path)
    m = canonical_csr(m, "the matrix to write")
    if m.shape[1] > _INT32_MAX:
        raise ValueError(f"{path}: the text format's column ids are int32, the matrix has {m.shape[1]} columns")
    if not np.isfinite(m.data).all():
        raise ValueError(f"{path}: the matrix to write holds a NaN or infinite value")
    indptr = np.ascontiguousarray(m.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(m.indices, dtype=np.int32)
    data = np.ascontiguousarray(m.data, dtype=np.float32)
    _replace_atomically(path, lambda tmp: _C.write_sparse_text(
        str(tmp), m.shape[0], m.shape[1], indptr=indptr, indices=indices, data=data, num_threads=num_threads))


def read_utf8(path: Path) -> str:
    """The file's text (a BOM dropped, CRLF as LF); a ValueError naming the file and line of bad UTF-8."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not valid UTF-8") from None
    return text.replace("\r\n", "\n") if "\r" in text else text


_ID_ARROW = re.compile(r"^\S+?->", re.MULTILINE)


def read_texts(path: str | os.PathLike, expected: int | None = None, what: str = "") -> list[str]:
    """One text per line. When every line reads `id->text` (an id without spaces), the ids are
    dropped. `expected`: the line count the matching matrix implies (ValueError naming the file
    otherwise)."""
    path = Path(path)
    require_file(path)
    content = read_utf8(path)
    text = content[:-1] if content.endswith("\n") else content
    lines = text.split("\n") if content else []
    if expected is not None and len(lines) != expected:
        raise ValueError(f"{path}: {len(lines)} lines of text but {what or 'its matrix'} has {expected} "
                         "(one text per line; an empty text is an empty line)")
    if lines and len(_ID_ARROW.findall(text)) == len(lines):
        lines = [line.partition("->")[2] for line in lines]
    return lines


def write_texts(path: str | os.PathLike, texts: list[str]) -> None:
    """Writes one text per line (UTF-8), atomically, so that read_texts gives `texts` back: as
    `i->text` lines when every text would read as `id->text`, with a byte-order mark before a first
    text that starts with one, and CRLF line ends when a text ends with CR. A text may not contain a
    line feed. Other texts are written plainly, one per line."""
    path = Path(path)
    bad = next((i for i, t in enumerate(texts) if "\n" in t), None)
    if bad is not None:
        raise ValueError(f"{path}: text {bad} contains a line break, which the one-per-line format cannot hold")
    if texts and all(_ID_ARROW.match(t) for t in texts):
        texts = [f"{i}->{t}" for i, t in enumerate(texts)]  # read_texts drops the ids, not the text's arrow
    end = "\r\n" if any(t.endswith("\r") for t in texts) else "\n"  # read_texts reads CRLF as LF
    body = "".join(t + end for t in texts)
    if body.startswith("\ufeff"):
        body = "\ufeff" + body  # read_texts drops one byte-order mark
    try:
        data = body.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = next(i for i, t in enumerate(texts) if not _encodes(t))
        raise ValueError(f"{path}: text {bad} cannot be written as UTF-8 ({e.reason})") from None
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_PAIR = re.compile(r"^[ \t]*([0-9]{1,18})[ \t]+([0-9]{1,18})[ \t]*$", re.MULTILINE)  # ASCII, < 10^18


def read_pairs(path: str | os.PathLike) -> np.ndarray:
    """(n, 2) int64 array of the `row col` pairs of a file such as filter_labels_test.txt."""
    path = Path(path)
    require_file(path)
    text = read_utf8(path)
    found = _PAIR.findall(text)
    lines = [line for line in text.split("\n") if line.strip()]
    if len(found) != len(lines):
        for number, line in enumerate(text.split("\n"), start=1):
            if line.strip() and not _PAIR.fullmatch(line):
                raise ValueError(f"{path}: line {number}: expected two non-negative integers 'row col' "
                                 f"(ASCII digits, below 10^18), found {line[:40]!r}")
    return np.array(found, dtype=np.int64).reshape(-1, 2)


def write_pairs(path: str | os.PathLike, pairs: np.ndarray) -> None:
    """Writes an (n, 2) integer array as `row col` lines, atomically."""
    path = Path(path)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if len(pairs):
        body = np.char.add(np.char.add(pairs[:, 0].astype(str), " "), pairs[:, 1].astype(str))
        data = ("\n".join(body.tolist()) + "\n").encode()
    else:
        data = b""
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))
