"""Reading dictd dictionaries: the `.index` and `.dict` (or dictzip `.dict.dz`) pair that `dictfmt`
writes and Debian's dict-* packages install under /usr/share/dictd.

The index has one line per headword, `headword TAB offset TAB length` (a fourth field, the original
headword, is allowed), offset and length in dictd's base64 digits (A-Z a-z 0-9 + /, most
significant first); they address the article's bytes in the uncompressed dict file. Several
headwords may address one article (its aliases). Files are untrusted: anything malformed is a
ValueError naming the file and the line (or the article's headword and index line).
"""
from __future__ import annotations

import dataclasses
import gzip
import os
import zlib
from pathlib import Path

_DIGITS = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Article:
    """One article of a dictd dictionary: its headwords in index order, its text, where it lies."""

    headwords: tuple[str, ...]
    text: str
    offset: int
    index_line: int  # the first index line that names it (1-based)


def _number(field: str, path: Path, line: int, what: str) -> int:
    if not field or len(field) > 16:  # 16 digits address 2^96 bytes: longer is garbage
        raise ValueError(f"{path}: line {line}: the {what} {field!r} is not a dictd base64 number")
    value = 0
    for c in field:
        digit = _DIGITS.get(c)
        if digit is None:
            raise ValueError(f"{path}: line {line}: the {what} {field!r} is not a dictd base64 number "
                             f"(bad digit {c!r})")
        value = value * 64 + digit
    return value


def read_index(path: str | os.PathLike) -> list[tuple[str, int, int, int]]:
    """(headword, offset, length, line) for every line of a dictd index, in file order."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read the dictd index ({exc.strerror or exc})") from None
    out = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        line = line.rstrip(b"\r")
        if not line:
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path}: line {number}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
        fields = text.split("\t")
        if len(fields) not in (3, 4):
            raise ValueError(f"{path}: line {number}: expected 3 tab-separated fields (headword, offset, "
                             f"length), found {len(fields)}")
        if not fields[0].strip():
            raise ValueError(f"{path}: line {number}: empty headword")
        out.append((fields[0], _number(fields[1], path, number, "offset"),
                    _number(fields[2], path, number, "length"), number))
    if not out:
        raise ValueError(f"{path}: the dictd index holds no headwords")
    return out


def _read_prefix(path: Path, size: int) -> bytes:
    """The first `size` bytes of the uncompressed dict file (fewer if it is shorter)."""
    with open(path, "rb") as f:
        compressed = f.read(2) == b"\x1f\x8b"  # gzip magic: dictzip is gzip with a random-access table
    chunks, total = [], 0
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            while total < size:
                chunk = f.read(min(_CHUNK, size - total))
                if not chunk:
                    break
                chunks.append(chunk)
                total += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path}: cannot read the dict file ({exc})") from None
    return b"".join(chunks)


def read_dictd(dict_path: str | os.PathLike, index_path: str | os.PathLike | None = None) -> list[Article]:
    """The articles of a dictd dictionary in dict-file order. `index_path` defaults to the dict
    path with `.dict` or `.dict.dz` replaced by `.index`; given the `.index` file as `dict_path`,
    the dict file beside it is read (`.dict.dz`, else `.dict`)."""
    dict_path = Path(dict_path)
    if index_path is None and dict_path.name.endswith(".index"):
        index_path, stem = dict_path, dict_path.name.removesuffix(".index")
        beside = [dict_path.with_name(stem + suffix) for suffix in (".dict.dz", ".dict")]
        dict_path = next((p for p in beside if p.is_file()), beside[0])
    if index_path is None:
        name = dict_path.name
        stem = name[: -len(".dict.dz")] if name.endswith(".dict.dz") else name.removesuffix(".dict")
        index_path = dict_path.with_name(stem + ".index")
    index_path = Path(index_path)
    for p, what in ((dict_path, "dict"), (index_path, "index")):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such dictd {what} file")
    entries = read_index(index_path)
    end = max(offset + length for _, offset, length, _ in entries)
    data = _read_prefix(dict_path, end)
    by_span: dict[tuple[int, int], list] = {}
    for headword, offset, length, line in entries:
        if offset + length > len(data):
            raise ValueError(f"{index_path}: line {line}: {headword!r} addresses bytes {offset}..{offset + length} "
                             f"but {dict_path} holds {len(data)} bytes (uncompressed)")
        by_span.setdefault((offset, length), []).append((headword, line))
    articles = []
    for (offset, length), names in sorted(by_span.items()):
        try:
            text = data[offset: offset + length].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"{dict_path}: the article of {names[0][0]!r} (index line {names[0][1]}, bytes "
                             f"{offset}..{offset + length}) is not UTF-8 ({exc.reason} at byte "
                             f"{offset + exc.start})") from None
        articles.append(Article(tuple(h for h, _ in names), text, offset, min(line for _, line in names)))
    return articles
