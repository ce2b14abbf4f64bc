"""What the index file checksums cost per GB: copy load with and without them, a view's load and
its verify(), and the raw CRC-32 speed, on a file of about `--gb` GB (an exact f32 index: only
vectors and ids, so its size is easy to set; the CRC-32 pass costs the same per byte whatever the section).
The file is read once before timing, so the numbers are with the file in the page cache.

    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/index_checksum_cost.py --gb 1 --dir /tmp \
        --json benchmarks/results/index-checksum-cost.json
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path

import numpy as np

from ramen.bench.common import best_time, machine_info, report_json
from ramen.index import LabelIndex


def header_of(blob: bytes) -> dict:
    length = int.from_bytes(blob[-16:-8], "little")
    return json.loads(bytes(blob[-16 - length:-16]))



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    rows = int(args.gb * 1e9 / (4 * args.dim + 8))
    index = LabelIndex(args.dim, exact=True)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        index.add(np.arange(start, start + n), rng.standard_normal((n, args.dim), dtype=np.float32))
    path = Path(args.dir) / "checksum-cost.idx"
    old = Path(args.dir) / "checksum-cost-old.idx"
    index.save(path)
    del index
    size = path.stat().st_size
    # the same file without checksums (as saved before them): header rewritten, sections untouched
    with open(path, "rb") as f:
        f.seek(size - 16)
        length = int.from_bytes(f.read(8), "little")
        f.seek(size - 16 - length)
        header = json.loads(f.read(length))
    header.pop("checksums")
    with open(path, "rb") as src, open(old, "wb") as dst:
        remaining = size - 16 - length
        while remaining:
            chunk = src.read(min(1 << 24, remaining))
            dst.write(chunk)
            remaining -= len(chunk)
        text = json.dumps(header).encode()
        dst.write(text + len(text).to_bytes(8, "little") + b"RAMENIDX")
    gb = size / 1e9
    with open(path, "rb") as f:  # warm the page cache
        while f.read(1 << 24):
            pass
    data = np.memmap(path, np.uint8, mode="r")
    out = {"file_gb": round(gb, 3),
           "crc32_s_per_gb": best_time(lambda: zlib.crc32(data), repeat=5) / gb,
           "copy_load_s_per_gb": best_time(lambda: LabelIndex.load(path), repeat=5) / gb,
           "copy_load_no_checksums_s_per_gb": best_time(lambda: LabelIndex.load(old), repeat=5) / gb,
           "view_load_s_per_gb": best_time(lambda: LabelIndex.load(path, view=True), repeat=5) / gb,
           "view_verify_s_per_gb": best_time(lambda: LabelIndex.load(path, view=True).verify(), repeat=5) / gb
           - best_time(lambda: LabelIndex.load(path, view=True), repeat=5) / gb}
    out = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    # the checksum's choice: CRC-32 against hashlib's digests over the same bytes (GB/s)
    out["hash_gb_per_s"] = {"crc32": round(gb / best_time(lambda: zlib.crc32(data), repeat=5), 2),
                            "sha256": round(gb / best_time(lambda: hashlib.sha256(data).digest(), repeat=5), 2),
                            "blake2b": round(gb / best_time(lambda: hashlib.blake2b(data).digest(), repeat=5), 2)}
    out["command"] = f"python benchmarks/index_checksum_cost.py --gb {args.gb} --dim {args.dim}"
    out["machine"] = machine_info()
    report_json(out, args.json)
    del data
    os.unlink(path)
    os.unlink(old)


if __name__ == "__main__":
    main()
