"""A training run's directory: the names a run writes there, the check that a new run overwrites
only what a run wrote, and the lock that keeps two trainings out of one directory."""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import IO, Iterator

from ramen.files import remove_leftovers

LOCK = ".ramen.lock"  # held (flock) by the process training in the directory; holds its pid
# what ramen.train, select_graph_weight and the CLI write in a run directory (and weight-<w>/, a selection's candidates)
RUN_NAMES = frozenset({"log.jsonl", "checkpoint.safetensors", "curves.png", "config.json", "model", "cache",
                       "run.json", "selection.json", "selection-plan.json", LOCK})

_held: dict[Path, IO[str]] = {}  # directories this process has locked, and their lock files


class RunDirError(ValueError):
    """The run directory is in use by another training, or holds a file a run would overwrite that no run wrote."""


def check_fresh(out: str | os.PathLike) -> None:
    """Refuses to start a new run in `out` where it would overwrite what no run wrote: a user's own
    log.jsonl, a sentence-transformers model's config.json, a model/ that is not ramen's. Other
    files are left alone, and an earlier run's are replaced."""
    out = Path(out)
    if not out.exists():
        return
    if not out.is_dir():
        raise RunDirError(f"run directory {out} is a file, not a directory")
    foreign = sorted(p.name for p in out.iterdir() if p.name in RUN_NAMES and not _ours(p))
    if foreign:
        raise RunDirError(f"run directory {out} holds {', '.join(foreign)}, which a training run would overwrite "
                          "and which no run wrote: choose another directory")


_SAFETENSORS_TMP = re.compile(r"\.tmp[A-Za-z0-9]{6}")  # safetensors' save_file writes there first
RUN_TEMPORARIES = ("checkpoint.safetensors.tmp", "log.tmp")  # checkpoint.save's and RunLog's


def _remove_leftovers(out: Path) -> None:
    """Removes the temporaries of a run stopped by a kill in `out`, which this process now holds: a
    checkpoint's is as large as the checkpoint (hundreds of MB for MiniLM with its Adam moments)."""
    for p in out.iterdir():
        if p.is_file() and not p.is_symlink() and (p.name in RUN_TEMPORARIES or _SAFETENSORS_TMP.fullmatch(p.name)):
            p.unlink(missing_ok=True)
    remove_leftovers(out)
    remove_leftovers(out / "cache")


def _ours(path: Path) -> bool:
    """Whether `path`, one of RUN_NAMES in a run directory, is of the kind a run writes there."""
    name = path.name
    if name in ("model", "cache"):
        return path.is_dir() and (name == "cache" or (path / "model.json").is_file() or not any(path.iterdir()))
    if not path.is_file():
        return False
    if name == "log.jsonl":
        return _first_record_is_an_event(path)
    if name == "config.json":  # a sentence-transformers model has one too
        keys = _json_keys(path)
        return keys is not None and _CONFIG_MARK <= keys
    if name == "run.json":  # the CLI's, or a study's record of its run
        return _json_keys(path) is not None
    return True


_CONFIG_MARK = frozenset({"encoder", "epochs", "lr"})  # in every run's config.json, of any version; not in a model's


def _first_record_is_an_event(path: Path) -> bool:
    """Whether the file starts as a run log does: a JSON object with an "event" (or is empty)."""
    try:
        with path.open("rb") as f:
            first = f.readline(1 << 20).strip()
        record = json.loads(first) if first else {"event": None}
    except OSError:
        return False
    except ValueError:  # a first record cut short by a kill
        return first.startswith(b'{"event": ')
    return isinstance(record, dict) and "event" in record


def _json_keys(path: Path) -> frozenset[str] | None:
    """The keys of the JSON object in a small file (None where it holds anything else)."""
    try:
        if path.stat().st_size > 1 << 20:
            return None
        value = json.loads(path.read_bytes() or b"{}")
    except (OSError, ValueError):
        return None
    return frozenset(value) if isinstance(value, dict) else None


OUTPUTS = ("checkpoint.safetensors", "model", "config.json", "curves.png")  # a training's, not its setup's


def discard(out: str | os.PathLike, names: frozenset[str] | tuple[str, ...] = RUN_NAMES) -> None:
    """Removes what a run wrote in `out` (its `names` entries that are a run's), and `out` itself once
    empty: an earlier run's, which a resume, `evaluate` or `search` would otherwise take for the new one's."""
    out = Path(out)
    for p in out.iterdir():
        if p.name in names and _ours(p):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    with contextlib.suppress(OSError):
        out.rmdir()


@contextlib.contextmanager
def claimed(out: str | os.PathLike | None, *, fresh: bool, main: bool = True) -> Iterator[None]:
    """Holds `out` for one training: locks it (another process training there is an error naming its
    pid) and, for a new run (`fresh`), checks it holds nothing but an earlier run. Re-entrant within a
    process (the CLI claims the directory before train does). Only the rank that writes (`main`) claims."""
    if out is None or not main:
        yield
        return
    out = Path(out)
    key = out.resolve()
    if key in _held:  # this process holds it already (claims nest: the outer one releases it)
        yield
        return
    if fresh:
        check_fresh(out)
    elif not out.is_dir():
        yield  # nothing to resume there: the caller says so, and no directory is made for a mistyped path
        return
    out.mkdir(parents=True, exist_ok=True)
    f = (out / LOCK).open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "unknown"
        f.close()
        raise RunDirError(f"run directory {out} is in use by another training (pid {pid}): wait for it to "
                          "finish or choose another directory") from None
    except OSError as exc:  # a file system without flock (Lustre mounted noflock, NFS without lockd)
        f.close()
        print(f"warning: run directory {out} cannot be locked ({exc.strerror}): nothing stops a second "
              "training there", file=sys.stderr)
        yield
        return
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    _held[key] = f
    _remove_leftovers(out)
    try:
        yield
    finally:
        del _held[key]
        f.close()  # closing the file releases the lock
