"""Label index robustness (issue 27): hostile index files, the C++ search on a corrupt graph, header
field types, argument bounds, checksums. Code that may crash runs in a subprocess, so that a
segfault fails one test instead of killing pytest."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from _child_env import child_env
from ramen.index import LabelIndex
from ramen.index_file import header_crc



def run_python(code: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Runs `code` in a fresh interpreter on this tree's sources; a crash shows as a negative returncode."""
    env = child_env(OMP_NUM_THREADS="1", **(env or {}))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def assert_ran(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, f"returncode {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-3000:]}"


def low_rank(n: int, d: int, seed: int, rank: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, d)) / np.sqrt(d)
    z = rng.standard_normal((n, rank)) / (1.0 + np.arange(rank))
    return (z @ basis + 0.02 * rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32)


def header_of(blob: bytes) -> dict:
    length = int.from_bytes(blob[-16:-8], "little")
    return json.loads(bytes(blob[-16 - length:-16]))


def with_header(blob: bytes, header: dict, reseal: bool = True) -> bytes:
    """`blob` with its JSON header replaced; `reseal`: with the header's checksum recomputed (as a
    hostile writer would), so that the checks behind the checksum are the ones tested."""
    if reseal and isinstance(header.get("checksums"), dict):
        header = {**header, "checksums": {**header["checksums"], "header": header_crc(header)}}
    length = int.from_bytes(blob[-16:-8], "little")
    text = json.dumps(header).encode()
    return bytes(blob[:-16 - length]) + text + len(text).to_bytes(8, "little") + blob[-8:]


def resealed(blob: bytes) -> bytes:
    """`blob` with every section's checksum and the header's recomputed: only the structural checks
    stand between a hostile file and the search."""
    header = header_of(blob)
    if "checksums" not in header:
        return blob
    crcs = {name: zlib.crc32(blob[offset:offset + size]) for name, (offset, size) in header["sections"].items()}
    return with_header(blob, {**header, "checksums": {**header["checksums"], "sections": crcs}})


@pytest.fixture(scope="module")
def small():
    x = low_rank(400, 16, seed=0)
    q = low_rank(30, 16, seed=1)
    index = LabelIndex(16, connectivity=4, fingerprint="m")
    index.add(np.arange(len(x)) * 3 + 1, x)
    return index, x, q


def section(blob: bytes, name: str, dtype, shape) -> np.ndarray:
    offset, size = header_of(blob)["sections"][name]
    return np.frombuffer(blob, dtype, count=size // np.dtype(dtype).itemsize, offset=offset).reshape(shape).copy()


def patch_section(blob: bytes, name: str, array: np.ndarray) -> bytes:
    offset, size = header_of(blob)["sections"][name]
    data = np.ascontiguousarray(array).tobytes()
    assert len(data) == size
    return blob[:offset] + data + blob[offset + size:]


# ---- bug 1: an upper-level link to a node below that level ---------------------------------------
def low_upper_link(blob: bytes) -> bytes:
    """Every level-1 link of every tall node rewritten to point at one level-0 node, whose upper row
    is set far outside the upper array: a search that trusts the level reads far out of bounds."""
    h = header_of(blob)
    rows, m = h["rows"], h["connectivity"]
    level = section(blob, "hnsw_level", np.int8, (rows,))
    first = section(blob, "hnsw_upper_row", np.int64, (rows,))
    upper = section(blob, "hnsw_upper", np.int32, (h["hnsw_upper_rows"], m + 1))
    low = int(np.flatnonzero(level == 0)[0])
    for u in np.flatnonzero(level > 0):
        row = upper[first[u]]
        row[1:1 + row[0]] = low
    first[low] = 1 << 40
    blob = patch_section(blob, "hnsw_upper", upper)
    return patch_section(blob, "hnsw_upper_row", first)


@pytest.mark.parametrize("view", [False, True])
def test_upper_link_to_a_lower_node_is_rejected_on_load(tmp_path, small, view):
    index, _, q = small
    good = tmp_path / "good.idx"
    index.save(good)
    bad = tmp_path / "low-link.idx"
    bad.write_bytes(resealed(low_upper_link(good.read_bytes())))
    proc = run_python(f"""
        import numpy as np
        from ramen.index import LabelIndex
        try:
            index = LabelIndex.load({str(bad)!r}, view={view})
        except ValueError as e:
            assert "low-link.idx" in str(e), e
            print("rejected:", e)
        else:
            index.search(np.ones((4, 16), np.float32), 5)
            raise SystemExit("loaded a graph whose upper-level link points at a level-0 node")
    """)
    assert_ran(proc)
    assert "a link at level l to a node below level l" in proc.stdout


def test_cpp_search_skips_links_it_cannot_follow():
    """The kernel itself, given such a graph without the load checks, neither crashes nor returns
    a node outside the graph."""
    proc = run_python("""
        import numpy as np
        from ramen import _C
        from ramen.index import LabelIndex
        from ramen.hnsw import HnswGraph
        rng = np.random.default_rng(0)
        x = rng.standard_normal((400, 16)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        g = HnswGraph(16, m=4)
        g.add(x)
        a = g.arrays()
        level, first, upper, level0 = a["level"].copy(), a["upper_row"].copy(), a["upper"].copy(), a["level0"].copy()
        low = int(np.flatnonzero(level == 0)[0])
        for u in np.flatnonzero(level > 0):
            for l in range(1, int(level[u]) + 1):
                row = upper[first[u] + l - 1]
                row[1:1 + row[0]] = low
        first[low] = 1 << 40
        level0[5, 0] = 1000          # a count past the row
        level0[6, 1] = 400           # a link past the node count
        level0[7, 1] = -3            # a negative link
        upper[0, 0] = -7             # a negative count
        args = dict(m=g.m, m0=g.m0, entry_node=g.entry[0], entry_level=g.entry[1], nodes=400, alive=None,
                    queries=x[:50].copy(), k=10, ef=32, num_threads=1)
        rows, scores = _C.hnsw_search(a["vectors"].view(np.uint16), level0, upper, level, first, **args)
        assert ((rows >= -1) & (rows < 400)).all(), rows
        assert np.isfinite(scores[rows >= 0]).all()
        # the entry's own upper row outside the array
        first2 = a["upper_row"].copy()
        first2[g.entry[0]] = 1 << 40
        rows, scores = _C.hnsw_search(a["vectors"].view(np.uint16), a["level0"], a["upper"], a["level"], first2, **args)
        assert ((rows >= -1) & (rows < 400)).all(), rows
        print("ok")
    """)
    assert_ran(proc)


# ---- bug 3: header field types, argument bounds ------------------------------------------------
BAD_FIELDS = [
    ("rows", "5000"), ("rows", None), ("rows", 5000.0), ("rows", -1), ("rows", True), ("rows", 2**70),
    ("count", "400"), ("count", 401.0), ("dim", "16"), ("dim", 0), ("dim", 16.0), ("dtype", 16), ("dtype", "f64"),
    ("exact", "false"), ("exact", 0), ("rescore", None), ("rescore", 1.5), ("connectivity", "4"),
    ("connectivity", 1), ("expansion_add", [128]), ("expansion_search", 2**31), ("expansion_search", "64"),
    ("fingerprint", 7), ("engine", "faiss"), ("engine", 3), ("sections", []), ("sections", None),
    ("hnsw_upper_rows", "12"), ("hnsw_upper_rows", 12.0), ("hnsw_entry", [5.0, 1]), ("hnsw_entry", "5,1"),
    ("hnsw_entry", [5]),
]


@pytest.mark.parametrize("view", [False, True])
def test_every_header_field_type_is_checked(tmp_path, small, view):
    index, _, _ = small
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    header = header_of(blob)
    for i, (field, value) in enumerate(BAD_FIELDS):
        bad = tmp_path / f"field-{i}.idx"
        bad.write_bytes(with_header(blob, {**header, field: value}))
        with pytest.raises(ValueError, match=rf"field-{i}\.idx.*{field}") as e:
            LabelIndex.load(bad, view=view)
        assert not isinstance(e.value, TypeError)
    sections = dict(header["sections"])
    for i, value in enumerate((["4096", 3200], [4096.0, 3200], [4096], None, [4096, 2**70])):
        bad = tmp_path / f"offset-{i}.idx"
        bad.write_bytes(with_header(blob, {**header, "sections": {**sections, "ids": value}}))
        with pytest.raises(ValueError, match=rf"offset-{i}\.idx.*ids"):
            LabelIndex.load(bad, view=view)


def test_k_and_widths_past_int32_raise_value_errors(small):
    index, x, q = small
    for k in (2**31, 2**40, np.int64(2**31)):
        with pytest.raises(ValueError, match="k must"):
            index.search(q, k)
    with pytest.raises(ValueError, match="expansion_search"):
        index.expansion_search = 2**31
    for name in ("expansion_search", "expansion_add", "connectivity", "rescore"):
        with pytest.raises(ValueError, match=name):
            LabelIndex(16, **{name: 2**31})
    with pytest.raises(ValueError, match="threads"):
        index.search(q, 5, threads=2**31)
    with pytest.raises(ValueError, match="candidates"):
        index.tune(q, candidates=[16, 2**31])
    assert index.expansion_search == 64 and index.search(q, 5)[0].shape == (len(q), 5)


def test_huge_k_in_exact_mode_raises_before_allocating():
    """Run under a 3 GiB address-space limit: without the check the padded result allocates far more."""
    proc = run_python("""
        import resource
        import numpy as np
        from ramen.index import LabelIndex
        from ramen.sharded_index import ShardedLabelIndex
        index = LabelIndex(8, exact=True)
        index.add(np.arange(50), np.random.default_rng(0).standard_normal((50, 8)))
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        for k in (2**31, 2**31 + 5, 2**40):
            for searcher in (index, ShardedLabelIndex([index])):
                try:
                    searcher.search(np.ones((3, 8), np.float32), k)
                except ValueError as e:
                    assert "k must" in str(e), e
                else:
                    raise SystemExit(f"k={k} was accepted")
        # k inside int32 but results past the memory (RAMEN_MEMORY_AVAILABLE: 2 GB): a clear error, no allocation
        for engine in ({"exact": True}, {"engine": "ramen"}, {"engine": "usearch"}):
            small = LabelIndex(8, **engine)
            small.add(np.arange(50), np.random.default_rng(0).standard_normal((50, 8)))
            for searcher in (small, ShardedLabelIndex([small])):
                try:
                    searcher.search(np.ones((3, 8), np.float32), 2**31 - 1)
                except ValueError as e:
                    assert "k=2147483647" in str(e) and "GB available (RAMEN_MEMORY_AVAILABLE)" in str(e), e
                else:
                    raise SystemExit(f"{engine}: k=2**31-1 was accepted")
            ids, _ = small.search(np.ones((3, 8), np.float32), 100)  # past the labels, within memory: padding
            assert ids.shape == (3, 100) and (ids[:, 50:] == -1).all()
        print("ok")
    """, env={"RAMEN_MEMORY_AVAILABLE": "2GB"})
    assert_ran(proc)


# ---- bug 2: searches while another thread adds or removes --------------------------------------
CONCURRENT = """
    import sys, threading
    import numpy as np
    from ramen.index import LabelIndex

    engine, rounds = sys.argv[1], int(sys.argv[2])
    rng = np.random.default_rng(7)
    dim, base, batch, steps = 16, 200, 40, 24
    x = rng.standard_normal((base + batch * steps, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((6, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)

    def operations():
        # (kind, ids, vectors): adds of fresh labels, every third step a removal of earlier ones
        for s in range(steps):
            ids = np.arange(base + s * batch, base + (s + 1) * batch)
            yield "add", ids, x[ids]
            if engine == "ramen" and s % 3 == 2:
                yield "remove", ids[::2] - batch, None

    def fresh():
        index = LabelIndex(dim, engine=engine, connectivity=4, expansion_add=16, expansion_search=16)
        index.add(np.arange(base), x[:base], threads=1)
        return index

    def apply(index, op):
        kind, ids, vectors = op
        index.add(ids, vectors, threads=1) if kind == "add" else index.remove(ids)

    if engine == "ramen":  # the graph does not depend on the thread count: replay every state
        index, states = fresh(), set()
        states.add(index.search(q, 10, threads=1)[0].tobytes())
        for op in operations():
            apply(index, op)
            states.add(index.search(q, 10, threads=1)[0].tobytes())

    for _ in range(rounds):
        index, done, errors, seen = fresh(), threading.Event(), [], []

        def reader():
            try:
                while not done.is_set():
                    ids, scores = index.search(q, 10, threads=1)
                    finite = np.isfinite(scores)
                    assert (ids[finite] >= 0).all(), ("id -1 with a score", ids, scores)
                    assert (ids[~finite] == -1).all(), ("an id without a score", ids, scores)
                    assert (ids < len(x)).all(), ("an id never added", ids)
                    true = np.einsum("qkd,qd->qk", x[np.where(finite, ids, 0)], q)
                    assert np.allclose(np.where(finite, scores, 0), np.where(finite, true, 0), atol=2e-2), \\
                        ("a score that is not its id's", ids, scores, true)
                    if engine == "ramen":
                        seen.append(ids.tobytes())
            except BaseException as e:  # noqa: BLE001
                errors.append(e)
                done.set()

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        for op in operations():
            apply(index, op)
        done.set()
        for t in threads:
            t.join()
        assert not errors, errors[0]
        if engine == "ramen":
            bad = [s for s in seen if s not in states]
            assert not bad, f"{len(bad)} of {len(seen)} results match no state of the index"
    print("ok", len(seen))
"""


@pytest.mark.parametrize("engine", ["ramen", "usearch"])
def test_search_while_another_thread_adds_and_removes(engine):
    rounds = int(os.environ.get("RAMEN_CONCURRENCY_ROUNDS", "3"))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(CONCURRENT), engine, str(rounds)],
                          capture_output=True, text=True, timeout=300,
                          env=child_env(OMP_NUM_THREADS="1"))
    assert_ran(proc)


def test_rwlock_readers_share_and_a_writer_is_alone():
    import threading
    import time

    from ramen._rwlock import RWLock

    lock, inside, log = RWLock(), [], []
    guard = threading.Lock()

    def reader():
        with lock.read():
            with guard:
                inside.append("r")
                log.append(len(inside))
            time.sleep(0.05)
            with guard:
                inside.remove("r")

    def writer():
        with lock.write():
            with guard:
                log.append(("w", len(inside)))
            time.sleep(0.02)

    threads = [threading.Thread(target=reader) for _ in range(4)] + [threading.Thread(target=writer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(v for v in log if isinstance(v, int)) >= 2  # readers overlapped
    assert [v for v in log if isinstance(v, tuple)] == [("w", 0)]  # the writer saw no reader inside


# ---- bug 4: checksums ----------------------------------------------------------------------------
CHECKSUM_KINDS = [pytest.param(dict(connectivity=4), id="ramen"), pytest.param(dict(rescore=8), id="ramen-rescore"),
                  pytest.param(dict(engine="usearch"), id="usearch"), pytest.param(dict(exact=True), id="exact")]


@pytest.mark.parametrize("kw", CHECKSUM_KINDS)
def test_a_flipped_bit_in_any_section_is_caught(tmp_path, small, kw):
    _, x, q = small
    index = LabelIndex(16, fingerprint="m", **kw)
    index.add(np.arange(len(x)), x)
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    header = header_of(blob)
    assert header["checksums"]["algorithm"] == "crc32"
    for name, (offset, size) in header["sections"].items():
        bad = tmp_path / f"flip-{name}.idx"
        out = bytearray(blob)
        out[offset + size // 2] ^= 0x10
        bad.write_bytes(bytes(out))
        with pytest.raises(ValueError, match=rf"flip-{name}\.idx.*{name}.*checksum"):
            LabelIndex.load(bad)
        if name in ("vectors", "hnsw_vectors"):  # a view leaves the vectors to verify()
            view = LabelIndex.load(bad, view=True)
            with pytest.raises(ValueError, match=rf"flip-{name}\.idx.*{name}.*checksum"):
                view.verify()
        else:
            with pytest.raises(ValueError, match=rf"flip-{name}\.idx.*{name}.*checksum"):
                LabelIndex.load(bad, view=True)
    view = LabelIndex.load(good, view=True)
    assert view.checksummed and view.verify() and view.verify()
    np.testing.assert_array_equal(view.search(q, 5)[0], index.search(q, 5)[0])


@pytest.mark.parametrize("kw", CHECKSUM_KINDS)
def test_verify_names_a_viewed_file_rewritten_in_place(tmp_path, small, kw):
    """A view maps its file: an atomic replace is safe, a rewrite in place is not (wrong results, or
    SIGBUS once truncated). verify() used to miss a rewrite after its first success; it names it now."""
    import shutil

    _, x, q = small
    a, b = LabelIndex(16, **kw), LabelIndex(16, **kw)
    a.add(np.arange(200), x[:200], threads=1)
    b.add(np.arange(1000, 1300), x[100:400], threads=1)
    a.save(tmp_path / "a.idx")
    b.save(tmp_path / "b.idx")
    blob = bytearray((tmp_path / "a.idx").read_bytes())
    blob[len(blob) // 2] ^= 1
    (tmp_path / "same.idx").write_bytes(bytes(blob))  # a's size, other bytes
    live = tmp_path / "live.idx"
    a.save(live)
    view = LabelIndex.load(live, view=True)
    want = view.search(q, 5)[0]
    b.save(live)  # atomic: the view keeps reading the old file
    assert view.verify() is True
    np.testing.assert_array_equal(view.search(q, 5)[0], want)
    assert view.verify() is True  # verified once: the vectors' checksums are done, the file check is not
    for name in ("a", "same"):  # a over b (a new size), then same over a (the same size, a new time)
        view = LabelIndex.load(live, view=True)
        view.verify()
        at_load = os.stat(live).st_mtime_ns
        shutil.copyfile(tmp_path / f"{name}.idx", live)  # in place, as cp does
        if os.stat(live).st_mtime_ns == at_load:  # a coarse clock: the later time a later cp would give
            os.utime(live, ns=(at_load + 10**9, at_load + 10**9))
        with pytest.raises(ValueError, match=r"live\.idx was rewritten in place while memory-mapped"):
            view.verify()
    shutil.copyfile(tmp_path / "a.idx", live)
    proc = run_python(f"""
        from ramen.index import LabelIndex
        view = LabelIndex.load({str(live)!r}, view=True)
        open({str(live)!r}, "r+b").truncate(4096)
        try:
            view.verify()
        except ValueError as e:
            print("refused:", e)
    """)
    assert_ran(proc)
    assert "refused:" in proc.stdout and "at load, 4096 now" in proc.stdout


def test_header_edits_are_caught(tmp_path, small):
    index, _, _ = small
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    header = header_of(blob)
    edits = {"expansion_search": 65, "fingerprint": "other", "hnsw_entry": [header["hnsw_entry"][0], 0],
             "sections": {**header["sections"], "ids": [header["sections"]["ids"][0] + 8, header["sections"]["ids"][1]]}}
    for i, (field, value) in enumerate(edits.items()):
        bad = tmp_path / f"edit-{i}.idx"
        bad.write_bytes(with_header(blob, {**header, field: value}, reseal=False))
        with pytest.raises(ValueError, match=rf"edit-{i}\.idx.*header does not match its checksum"):
            LabelIndex.load(bad, view=bool(i % 2))
    spaced = tmp_path / "spaced.idx"  # the same values spelled differently: still the same header
    text = json.dumps(header, indent=2).encode()
    length = int.from_bytes(blob[-16:-8], "little")
    spaced.write_bytes(blob[:-16 - length] + text + len(text).to_bytes(8, "little") + blob[-8:])
    assert len(LabelIndex.load(spaced)) == len(index)


@pytest.mark.parametrize("view", [False, True])
def test_files_saved_before_checksums_still_load(tmp_path, small, view):
    index, _, q = small
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    old = tmp_path / "old.idx"
    old.write_bytes(with_header(blob, {k: v for k, v in header_of(blob).items() if k != "checksums"}))
    loaded = LabelIndex.load(old, view=view)
    assert loaded.checksummed is False and loaded.verify() is False
    np.testing.assert_array_equal(loaded.search(q, 5)[0], index.search(q, 5)[0])
    assert index.checksummed is False and index.verify() is False  # built here: nothing to check against
    loaded.save(tmp_path / "resaved.idx") if not view else index.save(tmp_path / "resaved.idx")
    assert LabelIndex.load(tmp_path / "resaved.idx").checksummed


def test_bad_checksum_fields(tmp_path, small):
    index, _, _ = small
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    header = header_of(blob)
    sums = header["checksums"]
    for i, value in enumerate((None, "crc", {**sums, "algorithm": "md5"}, {**sums, "header": "1"},
                               {**sums, "sections": []}, {k: v for k, v in sums.items() if k != "header"})):
        bad = tmp_path / f"sums-{i}.idx"
        bad.write_bytes(with_header(blob, {**header, "checksums": value}, reseal=False))
        with pytest.raises(ValueError, match=rf"sums-{i}\.idx.*checksums"):
            LabelIndex.load(bad)
    no_crc = {k: v for k, v in sums["sections"].items() if k != "hnsw_level0"}
    bad = tmp_path / "no-crc.idx"
    bad.write_bytes(with_header(blob, {**header, "checksums": {**sums, "sections": no_crc}}))
    with pytest.raises(ValueError, match=r"no-crc\.idx.*hnsw_level0"):
        LabelIndex.load(bad)


# ---- found by the fuzz test ------------------------------------------------------------------------
def test_misaligned_section_offset_is_rejected(tmp_path, small):
    index, _, _ = small
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    header = {k: v for k, v in header_of(blob).items() if k != "checksums"}  # no checksum to catch it first
    offset, size = header["sections"]["ids"]
    bad = tmp_path / "shifted.idx"
    bad.write_bytes(with_header(blob, {**header, "sections": {**header["sections"], "ids": [offset + 8, size]}}))
    with pytest.raises(ValueError, match=r"shifted\.idx.*'ids'.*multiple of 4096"):
        LabelIndex.load(bad)


def test_usearch_rows_must_match_the_live_ids(tmp_path, small):
    _, x, q = small
    index = LabelIndex(16, engine="usearch")
    index.add(np.arange(len(x)), x)
    index.remove([7])
    good = tmp_path / "good.idx"
    index.save(good)
    blob = good.read_bytes()
    ids = section(blob, "ids", np.int64, (len(x),))
    ids[7], ids[8] = 10**6, -1  # the graph still holds row 8 and not row 7: same counts
    bad = tmp_path / "swapped.idx"
    bad.write_bytes(resealed(patch_section(blob, "ids", ids)))
    with pytest.raises(ValueError, match=r"swapped\.idx.*usearch graph's rows"):
        LabelIndex.load(bad)


@pytest.mark.parametrize("rescore", [0, 20])
def test_nan_vectors_in_a_resealed_file_neither_crash_nor_score_nan(tmp_path, rescore):
    """NaN distances broke the strict weak order of the insertion's std::sort (undefined behaviour)
    and came back as NaN scores; insertion now ranks them farthest and the search drops them. With
    rescore, the stored float16 copies are re-scored: NaN or Inf there is dropped too."""
    proc = run_python(f"""
        import sys
        import numpy as np
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_index_robustness import patch_section, resealed, section
        from ramen.index import LabelIndex
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1000, 16)).astype(np.float32)
        index = LabelIndex(16, connectivity=4, rescore={rescore})
        index.add(np.arange(1000), x)
        good = {str(tmp_path / "good.idx")!r}
        index.save(good)
        blob = open(good, "rb").read()
        for name, at in [("hnsw_vectors", 0), ("vectors", 1)][:1 + bool({rescore})]:  # the copies: other rows
            v = section(blob, name, np.float16, (1000, 16))
            v[at::3] = np.nan
            v[at + 1::7] = np.inf
            blob = patch_section(blob, name, v)
        bad = {str(tmp_path / "nan.idx")!r}
        open(bad, "wb").write(resealed(blob))
        loaded = LabelIndex.load(bad)
        for i in range(6):
            loaded.add(np.arange(10**6 + 300 * i, 10**6 + 300 * (i + 1)), rng.standard_normal((300, 16)), threads=1)
            ids, scores = loaded.search(x[:20], 10, threads=1)
            assert np.isfinite(scores[ids >= 0]).all(), scores
            assert (ids[~np.isfinite(scores)] == -1).all()
            assert (scores[ids >= 0] <= 1.01).all(), scores
        print("ok")
    """)
    assert_ran(proc)


def test_an_index_still_pickles_and_copies_with_its_own_lock(small):
    import copy
    import pickle

    index, x, q = small
    for twin in (pickle.loads(pickle.dumps(index)), copy.deepcopy(index)):
        assert twin._lock is not index._lock
        np.testing.assert_array_equal(twin.search(q, 5)[0], index.search(q, 5)[0])
        twin.add([10**7], x[:1])
        assert len(twin) == len(index) + 1


KINDS = [pytest.param(dict(), id="ramen"), pytest.param(dict(exact=True), id="exact"),
         pytest.param(dict(engine="usearch"), id="usearch"), pytest.param(dict(rescore=8), id="rescore")]


@pytest.mark.parametrize("kw", KINDS)
def test_a_shallow_copy_is_independent_of_the_original(tmp_path, small, kw):
    """copy.copy used to share the graph, id and vector arrays: the copy's add made the original
    return an id it did not hold (and save a file load rejects), the copy's remove hid labels."""
    import copy

    _, x, q = small
    index = LabelIndex(16, connectivity=4, **kw)
    index.add(np.arange(200), x[:200], threads=1)
    want = index.search(q, 5)
    twin = copy.copy(index)
    twin.add([10**6], x[300:301], threads=1)
    twin.remove([int(want[0][0, 0])])
    assert len(index) == 200 and not index.contains([10**6])[0] and index.contains([want[0][0, 0]])[0]
    for got, expected in zip(index.search(q, 5), want):
        np.testing.assert_array_equal(got, expected)
    assert twin.search(x[300], 1)[0][0] == 10**6 and len(twin) == 200
    index.save(tmp_path / "a.idx")
    np.testing.assert_array_equal(LabelIndex.load(tmp_path / "a.idx").search(q, 5)[0], want[0])
    for other in (copy.deepcopy(index), pickle_round_trip(index)):
        other.add([10**6 + 1], x[301:302], threads=1)
        assert not index.contains([10**6 + 1])[0]
        np.testing.assert_array_equal(index.search(q, 5)[0], want[0])


def test_a_copy_of_a_sharded_index_has_shards_of_its_own(small):
    import copy

    from ramen import ShardedLabelIndex

    _, x, q = small
    a, b = LabelIndex(16, connectivity=4), LabelIndex(16, exact=True)
    a.add(np.arange(100), x[:100], threads=1)
    b.add(np.arange(100, 200), x[100:200])
    sharded = ShardedLabelIndex([a, b])
    want = sharded.search(q, 5)
    for twin in (copy.copy(sharded), copy.deepcopy(sharded)):
        assert all(t is not s for t, s in zip(twin.shards, sharded.shards))
        twin.add([10**6], x[300:301], shard=1)
        twin.remove([int(want[0][0, 0])])
        assert len(sharded) == 200 and not sharded.contains([10**6])[0]
        for got, expected in zip(sharded.search(q, 5), want):
            np.testing.assert_array_equal(got, expected)


def pickle_round_trip(index: LabelIndex) -> LabelIndex:
    import pickle

    return pickle.loads(pickle.dumps(index))


@pytest.mark.parametrize("kw", KINDS)
def test_a_copy_of_a_view_is_a_view_of_its_own(tmp_path, small, kw):
    """A view's copy shares only the read-only file map: its own search width, its own checks."""
    import copy

    _, x, q = small
    index = LabelIndex(16, connectivity=4, **kw)
    index.add(np.arange(200), x[:200], threads=1)
    index.save(tmp_path / "a.idx")
    view = LabelIndex.load(tmp_path / "a.idx", view=True)
    want, pending = view.search(q, 5), list(view._unverified)
    for twin in (copy.copy(view), copy.deepcopy(view)):
        assert twin.read_only and twin._keepalive is view._keepalive
        np.testing.assert_array_equal(twin.search(q, 5)[0], want[0])
        twin.expansion_search = 1
        assert view.expansion_search == 64 and (view.engine != "usearch" or view._graph.expansion_search == 64)
        assert twin.verify() and view._unverified == pending  # the view's checks are still to do
        with pytest.raises(ValueError, match="read-only"):
            twin.add([10**6], x[300:301])
    np.testing.assert_array_equal(view.search(q, 5)[0], want[0])
    with pytest.raises(TypeError, match="memory-mapped view"):
        pickle_round_trip(view)


def test_save_refuses_a_graph_that_disagrees_with_the_rows(tmp_path, small):
    """An index whose graph was changed behind it (here by a second object sharing its arrays, as
    a shallow copy once did) raises on save instead of writing a file that load rejects."""
    _, x, _ = small
    index = LabelIndex(16, connectivity=4)
    index.add([1, 2], x[:2])
    sharer = LabelIndex.__new__(LabelIndex)
    sharer.__setstate__({k: v for k, v in index.__dict__.items() if k not in ("_lock", "_writer")})
    sharer.add([3], x[2:3])
    with pytest.raises(ValueError, match="graph holds 3 nodes but the index records 2 rows"):
        index.save(tmp_path / "a.idx")
    assert not list(tmp_path.iterdir())  # no file, no temporary left behind


def test_searches_run_while_an_add_links_its_labels(monkeypatch):
    """The ramen engine links an add's labels without the lock searches share: a search from
    another thread in the middle of the linking finishes at once and sees the index before the add."""
    import threading

    from ramen.hnsw import HnswGraph

    x, q = low_rank(400, 16, seed=0), low_rank(30, 16, seed=1)
    index = LabelIndex(16, connectivity=4)
    index.add(np.arange(len(x)), x)
    before = index.search(q, 10)
    seen: list = []
    real = HnswGraph.prepare_add

    def prepare_then_search(graph, vectors, **kw):
        pending = real(graph, vectors, **kw)
        t = threading.Thread(target=lambda: seen.append(index.search(q, 10)))
        t.start()
        t.join(timeout=60)
        assert not t.is_alive(), "a search waited for the add's linking"
        return pending

    monkeypatch.setattr(HnswGraph, "prepare_add", prepare_then_search)
    n = len(index)
    index.add(np.arange(10**6, 10**6 + len(q)), q)  # each query's own vector: its best match once added
    assert len(seen) == 1 and len(index) == n + len(q)
    np.testing.assert_array_equal(seen[0][0], before[0])
    np.testing.assert_array_equal(seen[0][1], before[1])
    np.testing.assert_array_equal(index.search(q, 1)[0][:, 0], 10**6 + np.arange(len(q)))  # after it, they show


def test_the_usearch_file_check_names_each_hostile_layout():
    """ramen.usearch_file against targeted edits of a file usearch wrote: each one that could make
    usearch read past its buffers raises a ValueError saying what is wrong; the file itself passes."""
    import struct

    from usearch.index import Index

    from ramen.usearch_file import check_usearch_file

    x = low_rank(400, 16, seed=3)
    made = Index(ndim=16, metric="ip", dtype="f16", connectivity=4)
    made.add(np.arange(400, dtype=np.uint64), x)
    good, empty = bytes(made.save()), bytes(Index(ndim=16, metric="ip", dtype="f16", connectivity=4).save())
    check_usearch_file(good, empty, keys_below=400)
    head = 8 + 400 * 32
    size, conn, conn0, top, entry = struct.unpack_from("<5Q", good, head + 64)
    levels = np.frombuffer(good, np.int16, size, head + 104).astype(np.int64)
    sizes = 10 + 4 + 4 * conn0 + levels * (4 + 4 * conn)
    starts = head + 104 + 2 * size + np.concatenate([[0], np.cumsum(sizes)[:-1]])
    tall = int(np.flatnonzero(levels >= 1)[0])
    low = int(np.flatnonzero(levels == 0)[0])
    level1 = int(starts[tall]) + 10 + 4 + 4 * conn0  # the tall node's level-1 row: count, then slots

    def edited(*edits: tuple[int, str, int]) -> bytes:
        out = bytearray(good)
        for at, fmt, value in edits:
            struct.pack_into(fmt, out, at, value)
        return bytes(out)

    cases = {
        "link to a node below level 1": edited((level1, "<I", 1), (level1 + 4, "<I", low)),
        "link past": edited((level1, "<I", 1), (level1 + 4, "<I", 10**6)),
        "link count above": edited((int(starts[low]) + 10, "<I", conn0 + 1)),
        "two nodes with one key": edited((int(starts[1]), "<Q", struct.unpack_from("<Q", good, int(starts[0]))[0])),
        "no row of the index": edited((int(starts[0]), "<Q", 10**9)),
        "entry slot": edited((head + 64 + 32, "<Q", size + 5)),
        "connectivity": edited((head + 64 + 8, "<Q", conn + 1)),
        "own level disagrees": edited((int(starts[low]) + 8, "<h", 1)),
        "nodes do not end": good[:-1],
        "head differs": edited((0, "<I", 399)),  # one row fewer: the head is read a row early
        "rows of 30 bytes": edited((4, "<I", 30)),
    }
    for what, data in cases.items():
        with pytest.raises(ValueError, match=what):
            check_usearch_file(data, empty, keys_below=400)
