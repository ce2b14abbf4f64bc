"""Writing files that other processes may read or write at the same time."""
from __future__ import annotations

import os
import uuid
from pathlib import Path


def temp_path(path: str | os.PathLike) -> Path:
    """A temporary name beside `path`, unique to this call, with `path`'s suffix (numpy and scipy
    append theirs otherwise): write there, then `os.replace` it onto `path`, so that concurrent
    writers (DDP ranks sharing a cache, several study processes) never write the same file."""
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
