"""Whole datasets on disk: the XC repository's directory layout, and one `.npz` file.

Directory layout (what `save_xc(ds, dir)` writes and `load_xc(dir)` reads):

    trn_X_Y.txt, tst_X_Y.txt          train / test ground truth (sparse text, queries x labels)
    raw_data/train.raw.txt            one text per line (also read: `id->text` lines)
    raw_data/test.raw.txt, raw_data/label.raw.txt
    filter_labels_test.txt            optional: `test_row label` pairs never to predict
    <name>_trn_X_Y.txt                anchor set <name>: train queries x anchors
    <name>_lbl_X_Y.txt                labels x anchors
    <name>_tst_X_Y.txt                optional: test queries x anchors
    raw_data/<name>.raw.txt           anchor texts
    ramen.json                        optional: name, propensity constants A and B, anchor set order

Without ramen.json: A = 0.55, B = 1.5, the name is the directory's, anchor sets sorted by name.
The `.npz` form holds the same in one uncompressed numpy archive (no pickles): `load_xc` reads it
several times faster than the text files, checking each array's header, type and structure before
trusting it (`ramen.archive`), so a corrupt archive is a ValueError naming it.
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ramen.datasets.archive import read_npz
from ramen.datasets.xc_format import (read_pairs, read_sparse, read_texts, read_utf8, require_file, write_pairs,
                                      write_sparse, write_texts)
from ramen.datasets.dataset import AnchorSet, Dataset
from ramen.files import remove_leftovers, swap_in, temp_path
from ramen.progress import bar as progress_bar


META = "ramen.json"
FORMAT = "ramen.xc"
META_KEYS = frozenset({"format", "version", "name", "A", "B", "anchor_sets"})
VERSION = 1
DEFAULT_A, DEFAULT_B = 0.55, 1.5
_TEXTS = {"train_texts": "train", "test_texts": "test", "label_texts": "label"}


def _anchor_files(name: str) -> dict[str, str]:
    return {"train_X_A": f"{name}_trn_X_Y.txt", "label_A": f"{name}_lbl_X_Y.txt", "test_X_A": f"{name}_tst_X_Y.txt"}


def _discover_anchor_sets(root: Path) -> list[str]:
    """Anchor set names from the `<prefix>trn_X_Y.txt` files: the prefix less one trailing '_'."""
    names = []
    for p in sorted(root.glob("*trn_X_Y.txt")):
        prefix = p.name[: -len("trn_X_Y.txt")]
        if prefix:
            names.append(prefix[:-1] if prefix.endswith("_") else prefix)
    return names


def _optional_file(path: Path) -> bool:
    """Whether the optional file `path` is there; ValueError naming it when something else is (a
    directory in its place is a mistake, not an absent file)."""
    if not os.path.lexists(path):
        return False
    require_file(path)
    return True


def _read_meta(root: Path) -> dict:
    path = root / META
    if not _optional_file(path):
        return {}
    return _parse_meta(read_utf8(path), path)


def _parse_meta(text: str, where: Path) -> dict:
    """The dataset description in JSON `text`, checked; ValueError naming `where` otherwise."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: line {e.lineno}: not valid JSON ({e.msg})") from None
    except RecursionError:
        raise ValueError(f"{where}: not valid JSON (nested too deeply)") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise ValueError(f"{where}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format", FORMAT) != FORMAT:  # a hand-written one may leave it out
        raise ValueError(f"{where}: not a ramen dataset description (expected a JSON object with \"format\": "
                         f"\"{FORMAT}\" or none)")
    return _check_meta(meta, where)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _finite(x: int | float) -> bool:
    try:
        return math.isfinite(float(x))
    except OverflowError:  # an int beyond the float range
        return False


def _check_meta(meta: dict, where: Path) -> dict:
    """The description's fields have the right types and a version this code reads; a key it does not
    know (a typo, say "a" for "A") is an error, not a default silently used."""
    unknown = sorted(set(meta) - META_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(META_KEYS))}")
    version = meta.get("version", VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{where}: 'version' must be a positive integer, got {_short(version)}")
    if version > VERSION:
        raise ValueError(f"{where}: written by a newer ramen (format version {version} > {VERSION})")
    for key in ("A", "B"):
        if key in meta and (isinstance(meta[key], bool) or not isinstance(meta[key], (int, float))):
            raise ValueError(f"{where}: {key!r} must be a number, got {_short(meta[key])}")
        if key in meta and not (_finite(meta[key]) and (meta[key] >= 0 if key == "A" else meta[key] > -1)):
            raise ValueError(f"{where}: {key!r} must be a finite number {'>= 0' if key == 'A' else '> -1'} (a "
                             f"propensity constant), got {_short(meta[key])}")
    if "name" in meta and not isinstance(meta["name"], str):
        raise ValueError(f"{where}: 'name' must be a string, got {_short(meta['name'])}")
    if "anchor_sets" in meta and not (isinstance(meta["anchor_sets"], list)
                                      and all(isinstance(n, str) for n in meta["anchor_sets"])):
        raise ValueError(f"{where}: 'anchor_sets' must be a list of names, got {_short(meta['anchor_sets'])}")
    if "anchor_sets" in meta and len(set(meta["anchor_sets"])) != len(meta["anchor_sets"]):
        raise ValueError(f"{where}: 'anchor_sets' names a set twice: {_short(meta['anchor_sets'])}")
    return meta


def _load_dir(root: Path, num_threads: int) -> Dataset:

    meta = _read_meta(root)
    train_Y = read_sparse(root / "trn_X_Y.txt", num_threads=num_threads)
    test_Y = read_sparse(root / "tst_X_Y.txt", num_threads=num_threads)
    if test_Y.shape[1] != train_Y.shape[1]:
        raise ValueError(f"{root / 'tst_X_Y.txt'}: {test_Y.shape[1]} label columns but trn_X_Y.txt has {train_Y.shape[1]}")
    raw = root / "raw_data"
    texts = {
        "train_texts": read_texts(raw / "train.raw.txt", train_Y.shape[0], "trn_X_Y.txt (rows)"),
        "test_texts": read_texts(raw / "test.raw.txt", test_Y.shape[0], "tst_X_Y.txt (rows)"),
        "label_texts": read_texts(raw / "label.raw.txt", train_Y.shape[1], "trn_X_Y.txt (columns)"),
    }
    filter_file = root / "filter_labels_test.txt"
    test_filter = read_pairs(filter_file) if _optional_file(filter_file) else None

    names = _discover_anchor_sets(root)
    if "anchor_sets" in meta:
        if sorted(meta["anchor_sets"]) != sorted(names):
            raise ValueError(f"{root / META}: lists anchor sets {meta['anchor_sets']} but the directory holds {names}")
        names = list(meta["anchor_sets"])
    rows = {"train_X_A": train_Y.shape[0], "label_A": train_Y.shape[1], "test_X_A": test_Y.shape[0]}
    anchor_sets = {}
    for name in names:
        parts = {}
        for part, fname in _anchor_files(name).items():
            path = root / fname
            if part == "test_X_A" and not _optional_file(path):
                parts[part] = None
                continue
            m = read_sparse(path, num_threads=num_threads)
            if m.shape[0] != rows[part]:
                raise ValueError(f"{path}: {m.shape[0]} rows but the dataset has {rows[part]} "
                                 f"{'labels' if part == 'label_A' else 'queries'}")
            parts[part] = m
        cols = {m.shape[1] for m in parts.values() if m is not None}
        if len(cols) != 1:
            raise ValueError(f"{root}: anchor set {name!r} files disagree on the number of anchors (columns): {sorted(cols)}")
        texts_path = raw / f"{name}.raw.txt"
        anchor_sets[name] = AnchorSet(read_texts(texts_path, cols.pop(), f"{name}_trn_X_Y.txt (columns)"), **parts)

    ds = Dataset(train_Y=train_Y, test_Y=test_Y, anchor_sets=anchor_sets, test_filter=test_filter,
                 A=meta.get("A", DEFAULT_A), B=meta.get("B", DEFAULT_B), name=meta.get("name", root.name), **texts)
    try:
        return ds.validate()
    except ValueError as e:
        raise ValueError(f"{root}: {e}") from None


def _save_dir(ds: Dataset, root: Path, num_threads: int, progress: bool) -> None:
    (root / "raw_data").mkdir(parents=True)
    jobs = [(root / "trn_X_Y.txt", ds.train_Y), (root / "tst_X_Y.txt", ds.test_Y)]
    jobs += [(root / "raw_data" / f"{stem}.raw.txt", getattr(ds, attr)) for attr, stem in _TEXTS.items()]
    for name, a in ds.anchor_sets.items():
        jobs += [(root / fname, getattr(a, part)) for part, fname in _anchor_files(name).items()
                 if getattr(a, part) is not None]
        jobs.append((root / "raw_data" / f"{name}.raw.txt", a.texts))
    if ds.test_filter is not None:
        write_pairs(root / "filter_labels_test.txt", ds.test_filter)
    for path, obj in progress_bar(iterable=jobs, desc=f"writing {root.name}", unit="file", disable=not progress):
        if isinstance(obj, list):
            write_texts(path, obj)
        else:
            write_sparse(path, obj, num_threads=num_threads)
    meta = {"format": FORMAT, "version": VERSION, "name": ds.name, "A": ds.A, "B": ds.B,
            "anchor_sets": list(ds.anchor_sets)}
    (root / META).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")


def _pack_texts(arrays: dict[str, np.ndarray], key: str, texts: list[str]) -> None:
    arrays[f"{key}.utf8"] = np.frombuffer("".join(texts).encode("utf-8"), dtype=np.uint8)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    arrays[f"{key}.offsets"] = np.concatenate([[0], np.cumsum(lengths)])  # in characters


def _array(z: dict[str, np.ndarray], key: str, kinds: str, ndim: int) -> np.ndarray:
    """z[key], which must have `ndim` dimensions and a dtype kind in `kinds` (ValueError otherwise)."""
    if key not in z:
        raise ValueError(f"no {key!r} array")
    a = z[key]
    if a.dtype.kind not in kinds or a.ndim != ndim:
        raise ValueError(f"{key!r} is a {a.dtype} array of shape {a.shape}, expected {ndim}-d of kind {kinds!r}")
    return a


def _unpack_texts(z: dict[str, np.ndarray], key: str) -> list[str]:
    s = _array(z, f"{key}.utf8", "u", 1).view(np.uint8).tobytes().decode("utf-8")
    off = _array(z, f"{key}.offsets", "i", 1)
    if len(off) == 0 or off[0] != 0 or off[-1] != len(s) or (np.diff(off) < 0).any():
        raise ValueError(f"{key}.offsets must ascend from 0 to the text's {len(s)} characters")
    off = off.tolist()
    return [s[a:b] for a, b in zip(off[:-1], off[1:])]


def pack_csr(arrays: dict[str, np.ndarray], key: str, m: sp.csr_matrix) -> None:
    """Puts m's arrays into `arrays` under `key` (for np.savez), as unpack_csr reads them back."""
    nnz = int(m.indptr[-1])  # the arrays may be longer than the entries: unpack_csr wants them exact
    arrays.update({f"{key}.indptr": m.indptr, f"{key}.indices": m.indices[:nnz], f"{key}.data": m.data[:nnz],
                   f"{key}.shape": np.array(m.shape, dtype=np.int64)})


def unpack_csr(z: dict[str, np.ndarray], key: str) -> sp.csr_matrix | None:
    """The CSR matrix stored under `key`, None when there is none; its structure is checked in full
    (ids in range, indptr ascending) before anything sorts or indexes with it."""
    if f"{key}.shape" not in z:
        return None
    shape = _array(z, f"{key}.shape", "i", 1)
    if len(shape) != 2 or shape.min() < 0:
        raise ValueError(f"{key}.shape must be two non-negative integers, got {shape.tolist()}")
    indptr, indices = _array(z, f"{key}.indptr", "i", 1), _array(z, f"{key}.indices", "i", 1)
    data = _array(z, f"{key}.data", "f", 1)
    rows, cols = shape.tolist()
    # scipy's own full check skips indptr when its last value is negative: a crash in sort_indices
    if len(indptr) != rows + 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any() or indptr[-1] != len(indices):
        raise ValueError(f"{key}.indptr must ascend from 0 to the {len(indices)} entries, one per row and one more")
    if len(data) != len(indices) or (len(indices) and (indices.min() < 0 or indices.max() >= cols)):
        raise ValueError(f"{key}: {len(indices)} column ids in [0, {cols}) and as many values expected")
    return sp.csr_matrix((data, indices, indptr), shape=(rows, cols))


def _required_csr(z: dict[str, np.ndarray], key: str) -> sp.csr_matrix:
    m = unpack_csr(z, key)
    if m is None:
        raise ValueError(f"no {key!r} matrix")
    return m


def _save_npz(ds: Dataset, path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for attr in _TEXTS:
        _pack_texts(arrays, attr, getattr(ds, attr))
    pack_csr(arrays, "train_Y", ds.train_Y)
    pack_csr(arrays, "test_Y", ds.test_Y)
    if ds.test_filter is not None:
        arrays["test_filter"] = ds.test_filter
    for i, a in enumerate(ds.anchor_sets.values()):
        _pack_texts(arrays, f"anchor{i}.texts", a.texts)
        for part in ("train_X_A", "label_A", "test_X_A"):
            if getattr(a, part) is not None:
                pack_csr(arrays, f"anchor{i}.{part}", getattr(a, part))
    meta = {"format": FORMAT, "version": VERSION, "name": ds.name, "A": ds.A, "B": ds.B,
            "anchor_sets": list(ds.anchor_sets)}
    arrays["meta"] = np.array(json.dumps(meta))
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load_npz(path: Path) -> Dataset:

    z = read_npz(path)
    try:
        meta = _parse_meta(_array(z, "meta", "U", 0).item(), path)
        missing = [key for key in ("A", "B", "name", "anchor_sets") if key not in meta]
        if missing:
            raise ValueError(f"the description lacks {missing}")
        anchor_sets = {
            name: AnchorSet(_unpack_texts(z, f"anchor{i}.texts"), _required_csr(z, f"anchor{i}.train_X_A"),
                            _required_csr(z, f"anchor{i}.label_A"), unpack_csr(z, f"anchor{i}.test_X_A"))
            for i, name in enumerate(meta["anchor_sets"])}
        ds = Dataset(**{attr: _unpack_texts(z, attr) for attr in _TEXTS},
                     train_Y=_required_csr(z, "train_Y"), test_Y=_required_csr(z, "test_Y"), anchor_sets=anchor_sets,
                     test_filter=_array(z, "test_filter", "i", 2) if "test_filter" in z else None,
                     A=meta["A"], B=meta["B"], name=meta["name"])
        return ds.validate()
    except ValueError as e:
        if str(e).startswith(f"{path}: "):  # the description's own check names the file
            raise
        raise ValueError(f"{path}: not a valid ramen dataset archive ({e})") from None


def load_xc(path: str | os.PathLike, *, num_threads: int = 0) -> Dataset:
    """Loads a dataset: a directory in the XC repository layout (G-LF anchor sets included), or a
    `.npz` archive written by `save_xc`. ValueError naming the file (and line) for bad input."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npz":
        return _load_npz(path)
    if not path.is_dir():
        raise FileNotFoundError(f"no dataset at {path} (expected a directory with trn_X_Y.txt, or a .npz file)")
    return _load_dir(path, num_threads)


def _looks_like_dataset(root: Path) -> bool:
    return (root / META).is_file() or (root / "trn_X_Y.txt").is_file()


# The files of a dataset directory, all that save_xc writes: overwriting one removes these and nothing else
_DATASET_FILE = re.compile(r"(?:.+_)?(?:trn|tst|lbl)_X_Y\.txt|filter_labels_.+\.txt|" + re.escape(META))


def _foreign_entries(root: Path) -> list[str]:
    """What `root` holds besides a dataset's files: a run directory, notes, another tool's features."""
    foreign = []
    for entry in sorted(root.iterdir()):
        if entry.name == "raw_data" and entry.is_dir() and not entry.is_symlink():
            foreign += [f"raw_data/{e.name}" for e in sorted(entry.iterdir())
                        if not (e.name.endswith(".raw.txt") and e.is_file() and not e.is_symlink())]
        elif not (_DATASET_FILE.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink()):
            foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    return foreign


def save_xc(ds: Dataset, path: str | os.PathLike, *, overwrite: bool = False, num_threads: int = 0,
            progress: bool | None = None) -> None:
    """Saves `ds` atomically: as a directory in the XC layout, or, when `path` ends in `.npz`, as one
    archive. An existing target is replaced only with overwrite=True (and, for a directory, only
    one that holds a dataset and nothing else). progress: a tqdm bar over files (default: for > 10M entries)."""
    ds.validate()
    path = Path(path)
    if path.suffix == ".npz" and path.is_dir():
        raise ValueError(f"{path} is a directory; an .npz target must be a file")
    if path.suffix != ".npz" and path.exists() and (
            not path.is_dir() or (any(path.iterdir()) and not _looks_like_dataset(path))):
        raise ValueError(f"refusing to replace {path}: it is not a dataset directory (choose another path)")
    if path.exists() and not overwrite and (path.is_file() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists: replace it with overwrite=True (--overwrite on the command line)")
    foreign = _foreign_entries(path) if path.is_dir() else []
    if foreign:  # a run trained into DATASET/run1 was deleted with the dataset it replaced
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"refusing to replace {path}: it holds {shown}, which {'is' if len(foreign) == 1 else 'are'} "
                         "not part of a dataset and would be deleted with it; move "
                         f"{'it' if len(foreign) == 1 else 'them'} out, or choose another path")
    remove_leftovers(path.parent, path.name)  # of an earlier save stopped by a kill
    if path.suffix == ".npz":
        path.parent.mkdir(parents=True, exist_ok=True)  # as a directory's are: a missing one named the temporary
        _save_npz(ds, path)
        return
    if progress is None:
        progress = ds.train_Y.nnz + sum(a.train_X_A.nnz + a.label_A.nnz for a in ds.anchor_sets.values()) > 10_000_000
    target = path.resolve()
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = target.with_name(f".{target.name}.tmp-{tag}")
    try:
        _save_dir(ds, tmp, num_threads, progress)
    except ValueError as e:  # a text or matrix the format cannot hold: name the target, not the temporary
        shutil.rmtree(tmp, ignore_errors=True)
        raise ValueError(str(e).replace(str(tmp), str(target))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, target, tag)  # the old dataset or the new one is at target, never neither where Linux can
