"""Seeded fuzzing of load_xc: a small valid dataset, as a directory in the XC layout and as a `.npz`
archive, mutated (bit flips, truncations, inserted bytes, swapped lines, edited headers, invalid
UTF-8) and loaded. Every outcome must be a load that gives the original data or data that saves
and loads back unchanged, or a ValueError naming the file (and the line, for a text file's
content). Loads run in a child process per batch, so a crash or a hang fails the test instead of
killing pytest. RAMEN_FUZZ_CASES sets the number of cases (default 300); RAMEN_FUZZ_SEED the seed.
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

import ramen
from ramen.datasets import AnchorSet, Dataset, save_xc

CASES = int(os.environ.get("RAMEN_FUZZ_CASES", "300"))
SEED = int(os.environ.get("RAMEN_FUZZ_SEED", "0"))
BATCH = 100
TIMEOUT_S = 300  # per batch of BATCH loads, each a few milliseconds: a hang, not a slow machine

# Bytes worth inserting: separators, signs, the BOM, invalid or partial UTF-8, tricky numbers.
PALETTE = [b"\n", b"\r", b"\r\n", b":", b"-", b"+", b" ", b"\t", b"\x00", b"\xff", b"\xc3", b"\xc3(",
           b"\xed\xa0\x80", b"\xc0\xaf", b"\xf8\x88\x80\x80\x80", b"\xef\xbb\xbf", b"->", b"1e-50", b"1e99",
           b"nan", b"inf", b"+-1", b"99999999999999999999", b"0", b"7", b"-1", b"\xd9\xa1", b"\xc2\x85",
           b"\\", b"'", b'"', b"{", b"[" * 5000, b"}", b"e", b"."]
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3", b"\xc3(", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf8\x88\x80\x80\x80"]


def small_dataset() -> Dataset:
    rng = np.random.default_rng(7)

    def csr(rows: int, cols: int, density: float) -> sp.csr_matrix:
        m = sp.random(rows, cols, density=density, format="csr", random_state=rng, dtype=np.float32)
        m.data = rng.choice(np.float32([1, 0.5, 2.25, 1e-3, 3e7, 1e-40]), m.nnz)  # short, denormal, large
        return m

    N, T, L = 9, 5, 7
    return Dataset(
        train_texts=[f"query {i} é" if i % 4 else "" for i in range(N)], test_texts=[f"t{i}\r" for i in range(T)],
        label_texts=["\ufefflabel 0"] + [f"label {i} ->x" for i in range(1, L)], train_Y=csr(N, L, 0.3),
        test_Y=csr(T, L, 0.3), anchor_sets={
            "graph": AnchorSet([f"{i}->g{i}" for i in range(4)], csr(N, 4, 0.4), csr(L, 4, 0.4), csr(T, 4, 0.4)),
            "cat": AnchorSet(["A > B", "C"], csr(N, 2, 0.5), csr(L, 2, 0.5))},
        test_filter=np.array([[0, 1], [4, 6]]), A=0.6, B=2.5, name="fuzz")


def _lines_swapped(data: bytes, rng: np.random.Generator) -> bytes:
    lines = data.split(b"\n")
    if len(lines) < 2:
        return data + b"\n"
    i, j = rng.choice(len(lines), 2, replace=False)
    lines[i], lines[j] = lines[j], lines[i]
    return b"\n".join(lines)


def _header_edited(data: bytes, rng: np.random.Generator) -> bytes:
    """A number in the first line (or in a .npy header's shape) replaced by a nearby or a huge one."""
    numbers = list(re.finditer(rb"\d+", data[: data.find(b"\n") if b"\n" in data else len(data)]))
    if b"'shape': (" in data:
        numbers = list(re.finditer(rb"(?<='shape': \()\d+", data))
    if not numbers:
        return data
    m = numbers[rng.integers(len(numbers))]
    value = int(m.group())
    new = rng.choice([value + 1, max(value - 1, 0), 0, 2**31, 10**15, value * 7])
    return data[: m.start()] + str(new).encode() + data[m.end():]


def _json_edited(data: bytes, rng: np.random.Generator) -> bytes:
    meta = json.loads(data)
    key = rng.choice(["version", "A", "B", "name", "anchor_sets", "format"])
    values = [2, "1", 1.5, None, True, -3, [["graph"]], ["graph", "graph"], 1e300, "x", {}, ["cat"]]
    meta[key] = values[rng.integers(len(values))]
    return json.dumps(meta).encode()


def _member_mutated(data: bytes, rng: np.random.Generator) -> bytes:
    """The archive rewritten with one member mutated and its CRC made right again, so that the
    damage reaches the .npy headers and the arrays rather than stopping at the zip's checks."""
    with zipfile.ZipFile(io.BytesIO(data)) as src:
        members = {name: src.read(name) for name in src.namelist()}
    victim = sorted(members)[rng.integers(len(members))]
    members[victim] = mutate(members[victim], NPZ_KINDS[rng.integers(len(NPZ_KINDS) - 1)], rng)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as dst:
        for name, blob in members.items():
            dst.writestr(name, blob)
    return out.getvalue()


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    if kind == "member":
        return _member_mutated(data, rng)
    n = len(data)
    pos = int(rng.integers(n + 1))
    if kind == "bitflip":
        if n == 0:
            return b"\x01"
        flips = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            flips[int(rng.integers(n))] ^= 1 << int(rng.integers(8))
        return bytes(flips)
    if kind == "truncate":
        return data[:pos]
    if kind == "insert":
        chunk = PALETTE[rng.integers(len(PALETTE))] if rng.random() < 0.7 else rng.bytes(int(rng.integers(1, 9)))
        return data[:pos] + chunk + data[pos:]
    if kind == "overwrite":
        return data[:pos] + rng.bytes(int(rng.integers(1, 17))) + data[pos + 16:]
    if kind == "swap_lines":
        return _lines_swapped(data, rng)
    if kind == "edit_header":
        return _json_edited(data, rng) if data.startswith(b"{") else _header_edited(data, rng)
    if kind == "invalid_utf8":
        line_starts = [0] + [i + 1 for i, c in enumerate(data) if c == 10]
        at = min(line_starts[rng.integers(len(line_starts))] + int(rng.integers(4)), n)
        return data[:at] + INVALID_UTF8[rng.integers(len(INVALID_UTF8))] + data[at:]
    raise ValueError(kind)


DIR_KINDS = ["bitflip", "truncate", "insert", "swap_lines", "edit_header", "invalid_utf8", "overwrite"]
NPZ_KINDS = ["bitflip", "truncate", "insert", "overwrite", "edit_header", "member"]  # "member" last


def make_cases(root: Path, count: int, seed: int) -> list[dict]:
    """`count` mutated copies of the dataset under root/cases: two thirds directories, one third .npz."""
    save_xc(small_dataset(), root / "base")
    save_xc(small_dataset(), root / "base.npz")
    files = sorted(str(p.relative_to(root / "base")) for p in (root / "base").rglob("*") if p.is_file())
    cases = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        target = root / "cases" / f"c{i}"
        if i % 3 < 2:
            shutil.copytree(root / "base", target)
            name = files[rng.integers(len(files))]
            kind = DIR_KINDS[rng.integers(len(DIR_KINDS))]
            path = target / name
        else:
            target.mkdir(parents=True)
            name, kind = "d.npz", "member" if rng.random() < 0.5 else NPZ_KINDS[rng.integers(len(NPZ_KINDS))]
            path = target / name
            shutil.copyfile(root / "base.npz", path)
            target = path
        for _ in range(1 if rng.random() < 0.8 else 3):  # now and then several mutations of one file
            path.write_bytes(mutate(path.read_bytes(), kind, rng))
        cases.append({"case": i, "load": str(target), "file": str(path), "kind": kind})
    return cases


CHILD = textwrap.dedent("""
    import json, sys, traceback
    from pathlib import Path
    from ramen.datasets import load_xc, save_xc

    original = load_xc(sys.argv[2])
    for case in json.loads(Path(sys.argv[1]).read_text()):
        print(json.dumps({"case": case["case"], "started": True}), flush=True)
        try:
            ds = load_xc(case["load"])
        except ValueError as e:
            out = {"outcome": "ValueError", "message": str(e)}
        except BaseException as e:
            out = {"outcome": "other", "message": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()[-2000:]}
        else:
            out = {"outcome": "same" if ds == original else "changed"}
            texts = [*ds.train_texts, *ds.test_texts, *ds.label_texts,
                     *(t for a in ds.anchor_sets.values() for t in a.texts)]
            # what loaded must save and load back unchanged, in both forms (a text with a line feed,
            # which only an archive holds, in an archive)
            forms = ("again.npz",) if any("\\n" in t for t in texts) else ("again", "again.npz")
            try:
                for form in forms:
                    where = Path(case["load"]).parent / f"{Path(case['load']).name}.{form}"
                    save_xc(ds, where)
                    if load_xc(where) != ds:
                        out = {"outcome": "other", "message": f"{form}: save then load differs"}
            except BaseException as e:
                out = {"outcome": "other", "message": f"round trip: {type(e).__name__}: {e}",
                       "traceback": traceback.format_exc()[-2000:]}
        out["case"] = case["case"]
        print(json.dumps(out), flush=True)
""")

# Errors about a whole file (its size, or how it agrees with others) rather than one of its lines.
WHOLE_FILE = re.compile(r"lines of text but|label columns but|rows but the dataset has|files disagree|"
                        r"lists anchor sets|test_filter pairs must lie|must be (a|a finite) number|'version'|"
                        r"'name' must|'anchor_sets'|not a ramen dataset description|written by a newer ramen|"
                        r"propensity constants|nested too deeply|not valid JSON|anchor set name")


def check(case: dict, result: dict) -> str | None:
    """Why `result` is not an acceptable outcome of `case`, or None when it is."""
    if result["outcome"] in ("same", "changed"):
        return None
    if result["outcome"] != "ValueError":
        return result["message"] + "\n" + result.get("traceback", "")
    message = result["message"]
    if not message.startswith(case["load"]):
        return f"the message does not name the dataset or a file in it: {message!r}"
    if case["file"].endswith(".txt") and message.startswith(case["file"] + ": "):
        if not re.match(re.escape(case["file"]) + r": line \d+: ", message) and not WHOLE_FILE.search(message):
            return f"an error in a text file without its line: {message!r}"
    return None


def run_batches(tmp_path: Path, cases: list[dict]) -> tuple[list[str], dict[str, int]]:
    """Runs `cases` in child processes, BATCH at a time; (failures, outcome counts)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(Path(ramen.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]))  # this process's ramen
    failures, counts = [], {}
    for b in range(0, len(cases), BATCH):
        batch = cases[b:b + BATCH]
        listing = tmp_path / f"batch{b}.json"
        listing.write_text(json.dumps(batch))
        try:
            proc = subprocess.run([sys.executable, "-c", CHILD, str(listing), str(tmp_path / "base")], env=env,
                                  capture_output=True, text=True, timeout=TIMEOUT_S)
            stdout, code, stderr = proc.stdout, proc.returncode, proc.stderr
        except subprocess.TimeoutExpired as e:
            stdout, code, stderr = (e.stdout or b"").decode(errors="replace"), "timeout", ""
        results = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        done = {r["case"]: r for r in results if "outcome" in r}
        for case in batch:
            if case["case"] not in done:
                failures.append(f"case {case}: the child process died or hung ({code}): {stderr[-2000:]}")
                break
            result = done[case["case"]]
            counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
            why = check(case, result)
            if why:
                failures.append(f"case {case}: {why}")
    return failures, counts


def test_fuzzed_datasets_load_or_fail_cleanly(tmp_path: Path) -> None:
    cases = make_cases(tmp_path, CASES, SEED)
    failures, counts = run_batches(tmp_path, cases)
    assert not failures, (f"{len(failures)} of {len(cases)} cases failed (outcomes {counts}):\n"
                          + "\n".join(failures[:20]))
    assert sum(counts.values()) == len(cases)
    assert counts.get("ValueError", 0) > len(cases) // 3  # the mutations do break files: a negative control
    assert counts.get("same", 0) + counts.get("changed", 0) > 0


def test_the_child_catches_a_crash(tmp_path: Path) -> None:
    """A load that kills its process fails the check instead of pytest."""
    cases = make_cases(tmp_path, 2, SEED)
    cases[1]["load"] = "crash"
    child = CHILD
    try:
        globals()["CHILD"] = CHILD.replace("ds = load_xc(case[\"load\"])",
                                           "ds = load_xc(case['load']) if case['load'] != 'crash' else "
                                           "__import__('os').abort()")
        failures, _ = run_batches(tmp_path, cases)
    finally:
        globals()["CHILD"] = child
    assert len(failures) == 1 and "died or hung" in failures[0]
