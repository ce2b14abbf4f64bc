"""The label index's file: its layout, checksums and header checks, and the load of a ramen graph
that checks everything a search follows (ramen.index's save and load use these).

Layout: "RAMENIDX", then 4096-aligned sections (ids int64, vectors, the graph: ramen's arrays or
usearch's own file), then a JSON header (settings, sections, CRC-32 checksums), its length (u64
little-endian) and "RAMENIDX" again.
"""
from __future__ import annotations

import json
import math
import mmap
import zlib
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "ramen-label-index"
FORMAT_VERSION = 1
MAGIC = b"RAMENIDX"  # at the start of the file and at its very end (after the header length)
ALIGN = 4096
DTYPES = ("f32", "f16", "i8")  # the stored vectors' types
ENGINES = ("ramen", "usearch")  # the graph's implementations
NP_DTYPE = {"f32": np.float32, "f16": np.float16}
INT32_MAX = 2**31 - 1  # k, widths, threads and settings reach the C++ kernels as int


def load_hnsw(graph: Any, mm: mmap.mmap, header: dict[str, Any], view: bool, path: Path) -> None:
    """Fills `graph` (an empty ramen.hnsw.HnswGraph) from the file's hnsw_* sections, checking every
    link, level and the entry so that a corrupt file raises instead of crashing the search."""
    rows = header["rows"]
    upper_rows = _header_int(header, "hnsw_upper_rows", path, 0, _MAX_ROWS)
    entry = header.get("hnsw_entry")
    if not isinstance(entry, list) or len(entry) != 2 or not all(_is_int(v) for v in entry) \
            or not -1 <= entry[0] < _MAX_ROWS or not -1 <= entry[1] <= 63:
        raise ValueError(f"{path}: header field 'hnsw_entry' must be [node, level] (two integers), got {entry!r}")
    entry = (int(entry[0]), int(entry[1]))
    shapes = {"vectors": (NP_DTYPE[graph.dtype], (rows, graph.dim)), "level0": (np.int32, (rows, graph.m0 + 1)),
              "level": (np.int8, (rows,)), "upper_row": (np.int64, (rows,)),
              "upper": (np.int32, (upper_rows, graph.m + 1))}
    for name, (dtype, shape) in shapes.items():
        a = section(mm, header["sections"], f"hnsw_{name}", dtype, shape, path)
        setattr(graph, name, a if view else a.copy())
    graph.n, graph.upper_rows, graph.entry = rows, upper_rows, entry
    level, first = graph.level.astype(np.int64), graph.upper_row
    tall = np.flatnonzero(level > 0)
    if (level < 0).any() or (level > 63).any() or (first[tall] < 0).any() or \
            (first[tall] + level[tall] > upper_rows).any():
        raise ValueError(f"{path}: corrupt hnsw levels (a level or upper row outside the arrays)")
    by_first = tall[np.argsort(first[tall], kind="stable")]
    if (first[by_first[:-1]] + level[by_first[:-1]] > first[by_first[1:]]).any():
        raise ValueError(f"{path}: corrupt hnsw upper_row (two nodes share an upper row)")
    for name, links, cap in (("level0", graph.level0, graph.m0), ("upper", graph.upper, graph.m)):
        counts = links[:, 0]
        if (counts < 0).any() or (counts > cap).any():
            raise ValueError(f"{path}: corrupt hnsw {name} (a link count outside [0, {cap}])")
        used = links[:, 1:][np.arange(cap)[None, :] < counts[:, None]]
        if len(used) and (used.min() < 0 or used.max() >= rows):
            raise ValueError(f"{path}: corrupt hnsw {name} (a link to a node outside [0, {rows}))")
    _check_upper_link_levels(graph, level, tall, path)
    if (rows == 0) != (entry[0] < 0) or (rows and not (0 <= entry[0] < rows and level[entry[0]] == entry[1])):
        raise ValueError(f"{path}: corrupt hnsw entry {list(entry)}")


def _check_upper_link_levels(graph: Any, level: np.ndarray, tall: np.ndarray, path: Path) -> None:
    """Every link at level l >= 1 must lead to a node whose level is at least l: the search reads
    that node's level-l row next (checked in numpy, one row per (node, level) pair)."""
    height = level[tall]
    if not len(height):
        return
    row_level = np.arange(int(height.sum())) - np.repeat(np.cumsum(height) - height, height) + 1  # 1..height
    rows = graph.upper[np.repeat(graph.upper_row[tall], height) + row_level - 1]
    used = np.arange(graph.m)[None, :] < rows[:, :1]
    target_level = level[np.where(used, rows[:, 1:], 0)]
    if (used & (target_level < row_level[:, None])).any():
        raise ValueError(f"{path}: corrupt hnsw upper (a link at level l to a node below level l)")


def usearch_version() -> str:
    import usearch

    return getattr(usearch, "__version__", "?")


def pad(f: Any) -> None:
    f.write(b"\0" * (-f.tell() % ALIGN))


def write_section(f: Any, array: np.ndarray, crcs: dict[str, int], name: str) -> list[int]:
    """Writes `array` at the next aligned offset; its CRC-32 goes to crcs[name]. [offset, size]."""
    pad(f)
    offset = f.tell()
    data = np.ascontiguousarray(array)
    crcs[name] = 0
    if data.size:  # memoryview cannot cast an empty 2-d array
        raw = memoryview(data).cast("B")
        f.write(raw)
        crcs[name] = zlib.crc32(raw)
    return [offset, data.nbytes]


def header_crc(header: dict[str, Any]) -> int:
    """CRC-32 of the header's content without its checksums, as canonical JSON (sorted keys), so
    that it checks the values read, whatever the spacing."""
    body = {key: value for key, value in header.items() if key != "checksums"}
    return zlib.crc32(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def verify_sections(mm: mmap.mmap, header: dict[str, Any], path: Path,
                     skip: tuple[str, ...]) -> list[tuple[str, int, int, int]]:
    """Checks every section but `skip` against the header's CRC-32s (the header's own was checked
    when it was read); returns the skipped ones as (name, offset, size, crc) for `verify`. A file
    saved before checksums has none to check: nothing is done."""
    if "checksums" not in header:
        return []
    crcs = header["checksums"]["sections"]
    left = []
    for name in header["sections"]:
        offset, size = span(header["sections"], name, path, len(mm))
        crc = crcs.get(name)
        if not _is_int(crc) or not 0 <= crc < 2**32:
            raise ValueError(f"{path}: header field 'checksums' has no CRC-32 for section {name!r}")
        if name in skip:
            left.append((name, offset, size, crc))
        elif zlib.crc32(memoryview(mm)[offset:offset + size]) != crc:
            raise ValueError(f"{path}: section {name!r} does not match its checksum (the file is corrupt)")
    return left


def read_header(mm: mmap.mmap, path: Path) -> dict[str, Any]:
    size = len(mm)
    if size < 24 or mm[:8] != MAGIC or mm[size - 8:] != MAGIC:
        raise ValueError(f"{path} is not a ramen label index, or it is truncated (no {MAGIC!r} marks)")
    length = int.from_bytes(mm[size - 16:size - 8], "little")
    if length > size - 24 or length == 0:
        raise ValueError(f"{path}: corrupt header length {length}")
    try:
        header = json.loads(mm[size - 16 - length:size - 16])
    except (ValueError, RecursionError) as e:  # bad JSON or UTF-8, a huge integer, deep nesting
        raise ValueError(f"{path}: corrupt header ({str(e)[:200]})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: corrupt header (a JSON {type(header).__name__}, not an object)")
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a ramen label index (format {str(header.get('format'))[:100]!r})")
    if header.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} has format version {str(header.get('format_version'))[:100]}; this ramen reads "
                         f"version {FORMAT_VERSION}")
    required = ("dim", "dtype", "connectivity", "expansion_add", "expansion_search", "exact", "rescore",
                "fingerprint", "count", "rows", "sections")
    missing = [key for key in required if key not in header]
    if missing:
        raise ValueError(f"{path}: header lacks {missing}")
    if "checksums" in header:  # files saved before checksums have none: they load unchecked
        sums = header["checksums"]
        if not isinstance(sums, dict) or sums.get("algorithm") != "crc32" \
                or not isinstance(sums.get("sections"), dict) or not _is_int(sums.get("header")):
            raise ValueError(f"{path}: header field 'checksums' must be {{'algorithm': 'crc32', 'header': int, "
                             f"'sections': {{...}}}}, got {sums!r}"[:400])
        if header_crc(header) != sums["header"]:
            raise ValueError(f"{path}: the header does not match its checksum (the file is corrupt)")
    _check_header_types(header, path)
    return header


_MAX_ROWS = 2**62  # far past any file; keeps row arithmetic inside int64


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _header_int(header: dict[str, Any], field: str, path: Path, minimum: int, maximum: int) -> int:
    value = header.get(field)
    if not _is_int(value) or not minimum <= value <= maximum:
        raise ValueError(f"{path}: header field {field!r} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def _check_header_types(header: dict[str, Any], path: Path) -> None:
    """Each header field has its JSON type and range (a string, float or null where an integer
    belongs raises ValueError naming the file and the field, not a numpy TypeError later)."""
    for field in ("dim", "connectivity", "expansion_add", "expansion_search"):
        _header_int(header, field, path, 1, INT32_MAX)
    _header_int(header, "rescore", path, 0, INT32_MAX)
    rows = _header_int(header, "rows", path, 0, _MAX_ROWS)
    _header_int(header, "count", path, 0, rows)
    checks = {"dtype": (lambda v: v in DTYPES, f"one of {DTYPES}"),
              "exact": (lambda v: isinstance(v, bool), "true or false"),
              "fingerprint": (lambda v: isinstance(v, str), "a string"),
              "engine": (lambda v: v is None or v in ENGINES, f"null or one of {ENGINES}"),
              "sections": (lambda v: isinstance(v, dict), "an object of [offset, size] pairs")}
    for field, (ok, want) in checks.items():
        if field in header and not (isinstance(header[field], (str, bool, dict, type(None))) and ok(header[field])):
            raise ValueError(f"{path}: header field {field!r} must be {want}, got {header[field]!r}")


def span(sections: dict[str, Any], name: str, path: Path, file_size: int) -> tuple[int, int]:
    span = sections.get(name)
    if not isinstance(span, list) or len(span) != 2 or not all(_is_int(v) for v in span):
        raise ValueError(f"{path}: missing or bad section {name!r} (want [offset, size] integers, got {span!r})")
    offset, size = span
    if offset < 8 or size < 0 or offset + size > file_size - 16:
        raise ValueError(f"{path}: section {name!r} lies outside the file (truncated?)")
    if offset % ALIGN:  # save aligns every section: a shifted offset would read misaligned rows
        raise ValueError(f"{path}: section {name!r} starts at {offset}, not a multiple of {ALIGN}")
    return offset, size


def section(mm: mmap.mmap, sections: dict[str, Any], name: str, dtype: Any, shape: tuple[int, ...],
             path: Path) -> np.ndarray:
    offset, size = span(sections, name, path, len(mm))
    expected = math.prod(shape) * np.dtype(dtype).itemsize  # Python ints: no overflow on hostile shapes
    if size != expected:
        raise ValueError(f"{path}: section {name!r} has {size} bytes, expected {expected}")
    return np.frombuffer(mm, dtype=dtype, count=math.prod(shape), offset=offset).reshape(shape)

