"""Writing files that other processes may read or write at the same time, and checking them when read back."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def temp_path(path: str | os.PathLike) -> Path:
    """A temporary name beside `path`, unique to this call, with `path`'s suffix (numpy and scipy
    append theirs otherwise): write there, then `os.replace` it onto `path`, so that concurrent
    writers (DDP ranks sharing a cache, several study processes) never write the same file."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")


@contextlib.contextmanager
def replaced_directory(path: str | os.PathLike, marker: str) -> Iterator[Path]:
    """A new temporary directory beside `path`, unique to this call, to write into; when the block
    ends without error it replaces `path` (the old one renamed away, then removed), so a reader
    finds the old directory or the new one, never a half-written one. On error it is removed.

    Only what this kind of writer made is replaced: an existing `path` must be an empty directory or
    hold `marker` (the file every such directory has); anything else is a ValueError, before writing."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ValueError(f"{path} exists and is not a directory: refusing to replace it")
    if path.is_dir() and any(path.iterdir()) and not (path / marker).is_file():
        raise ValueError(f"{path} is a directory this does not write (no {marker}): refusing to replace its "
                         "contents; choose another path or remove it")
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = path.with_name(f".{path.name}.old-{tag}")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a MiB at a time (0.4 s for the paper's 2.46M anchors x 32 tokens)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
