"""One batch of the index loader fuzz test (tests/test_index_fuzz.py), run in its own process so that a
crash fails the test instead of killing pytest.

Usage: python _index_fuzz_worker.py GOOD_FILE WORK_DIR SEED CASES
Mutates GOOD_FILE CASES times (seeded: bit flips, truncations, header field edits, section offset
edits), in three modes, and checks each outcome:
  corrupt  the mutated file as it is (what a bad disk or a cut copy gives): a ValueError naming the
           file, or a clean load (view loads then call verify()) whose search equals the original's;
  hostile  every checksum recomputed after the mutation (what a hostile writer gives): a ValueError
           naming the file, or a load whose search returns well-formed results (ids of the index or -1);
  old      checksums removed before the mutation (a file saved before checksums): as hostile.
Prints "case N MODE KIND" before each case (so a crash names it) and "done" at the end; exits 1 on
the first violation, with the case and what went wrong.
"""
from __future__ import annotations

import json
import sys
import zlib
from pathlib import Path

import numpy as np

from ramen.index import LabelIndex
from ramen.index_file import header_crc

FIELD_VALUES = [None, "x", "", -1, 0, 1, 2, 3, 7, 63, 64, 255, 4096, 2**31 - 1, 2**31, 2**63, -(2**63), 1.5, 0.0,
                True, False, [], {}, [1, 2], [0, 0], [-1, -1], "f16", "f32", "i8", "ramen", "usearch"]


def header_of(blob: bytes) -> dict:
    length = int.from_bytes(blob[-16:-8], "little")
    return json.loads(bytes(blob[-16 - length:-16]))


def with_header(blob: bytes, header: dict) -> bytes:
    length = int.from_bytes(blob[-16:-8], "little")
    text = json.dumps(header).encode()
    return bytes(blob[:-16 - length]) + text + len(text).to_bytes(8, "little") + blob[-8:]


def reseal(blob: bytes) -> bytes:
    """Every checksum recomputed from the bytes as they are (where the header still parses)."""
    try:
        header = header_of(blob)
        sums = header["checksums"]
        crcs = {}
        for name, (offset, size) in header["sections"].items():
            crcs[name] = zlib.crc32(blob[int(offset):int(offset) + int(size)])
        header = {**header, "checksums": {**sums, "sections": crcs}}
        header["checksums"]["header"] = header_crc(header)
        return with_header(blob, header)
    except Exception:  # noqa: BLE001 - a header mangled past parsing stays as it is
        return blob


def strip(blob: bytes) -> bytes:
    header = header_of(blob)
    return with_header(blob, {k: v for k, v in header.items() if k != "checksums"})


def mutate(blob: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One random mutation of `blob`: (kind, mutated bytes)."""
    header = header_of(blob)
    kind = str(rng.choice(["flip", "flip-section", "truncate", "field", "offset"], p=[0.2, 0.3, 0.1, 0.25, 0.15]))
    out = bytearray(blob)
    if kind == "flip":  # anywhere: magic, padding, sections, header, trailer
        for _ in range(int(rng.integers(1, 4))):
            out[int(rng.integers(0, len(out)))] ^= 1 << int(rng.integers(0, 8))
    elif kind == "flip-section":
        offset, size = header["sections"][str(rng.choice(sorted(header["sections"])))]
        if size:
            for _ in range(int(rng.integers(1, 4))):
                out[offset + int(rng.integers(0, size))] ^= 1 << int(rng.integers(0, 8))
    elif kind == "truncate":
        cut = int(rng.integers(0, len(out)))
        out = out[:cut] if rng.random() < 0.5 else out[:cut] + out[cut + int(rng.integers(1, 4097)):]
    elif kind == "field":
        keys = [k for k in header if k not in ("format", "format_version")]
        key = str(rng.choice(keys))
        old = header[key]
        pool = list(FIELD_VALUES)
        if isinstance(old, int) and not isinstance(old, bool):
            pool += [old + 1, old - 1, str(old), float(old)]
        if key == "hnsw_entry":
            pool += [[old[0], old[1] + 1], [old[0] + 1, old[1]], [old[0], 0], [int(rng.integers(0, 400)), 1]]
        header[key] = pool[int(rng.integers(0, len(pool)))]
        out = bytearray(with_header(blob, header))
    else:  # a section's offset or size moved
        name = str(rng.choice(sorted(header["sections"])))
        which = int(rng.integers(0, 2))
        span = list(header["sections"][name])
        span[which] += int(rng.choice([-4096, -8, -4, -1, 1, 4, 8, 4096, int(rng.integers(-10**6, 10**6))]))
        header["sections"] = {**header["sections"], name: span}
        out = bytearray(with_header(blob, header))
    return kind, bytes(out)


def main() -> None:
    good, work, seed, cases = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    queries = np.random.default_rng(99).standard_normal((12, LabelIndex.load(good).dim)).astype(np.float32)
    original = LabelIndex.load(good)
    want_ids, want_scores = original.search(queries, 5, threads=1)
    blob = good.read_bytes()
    rng = np.random.default_rng(seed)
    counts: dict[str, int] = {}
    for case in range(cases):
        mode = ("corrupt", "hostile", "old")[case % 3]
        base = strip(blob) if mode == "old" else blob
        kind, bad = mutate(base, rng)
        if mode == "hostile":
            bad = reseal(bad)
        view = bool(rng.integers(0, 2))
        path = work / f"case-{seed}-{case}.idx"
        path.write_bytes(bad)
        print(f"case {case} {mode} {kind} view={view}", flush=True)
        try:
            index = LabelIndex.load(path, view=view)
            if view:
                index.verify()
            ids, scores = index.search(queries, 5, threads=1)
        except ValueError as e:
            if path.name not in str(e):
                raise SystemExit(f"case {case} {mode} {kind}: a ValueError that does not name the file: {e}")
            outcome = "ValueError"
        except Exception as e:  # noqa: BLE001
            raise SystemExit(f"case {case} {mode} {kind}: {type(e).__name__} instead of a ValueError: {e}")
        else:
            if ids.shape != (len(queries), 5) or ids.dtype != np.int64 or scores.dtype != np.float32:
                raise SystemExit(f"case {case} {mode} {kind}: malformed results {ids.shape} {ids.dtype}")
            if not np.isin(ids, np.append(index.ids, -1)).all():
                raise SystemExit(f"case {case} {mode} {kind}: an id the index does not hold: {ids}")
            same = np.array_equal(ids, want_ids) and np.allclose(scores, want_scores, atol=1e-6, equal_nan=True)
            if mode == "corrupt" and not same:
                raise SystemExit(f"case {case} {mode} {kind}: a clean load whose search differs from the original's")
            outcome = "same" if same else "different"
            del index
        counts[f"{mode} {outcome}"] = counts.get(f"{mode} {outcome}", 0) + 1
        path.unlink()
    print("done", json.dumps(counts, sort_keys=True), flush=True)


if __name__ == "__main__":
    main()
