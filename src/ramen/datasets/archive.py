"""Reading `.npz` archives that may be corrupt or hostile: nothing is unpickled, and every member's
.npy header is checked against the member's size before its data is read.

`np.load` trusts the header: a flipped bit in a shape allocates terabytes, a bad zip raises
`BadZipFile`, a bad member `EOFError`. `read_npz` reads the same archives (what `np.savez` writes,
stored or deflated) and raises ValueError for all of these.
"""
from __future__ import annotations

import math
import os
import struct
import tokenize
import zipfile
import zlib
from pathlib import Path

import numpy as np

_KINDS = "biufU"  # bool, integers, floats, str: no objects, no structured or void dtypes
_CHUNK = 1 << 26  # bytes read at a time: memory follows the data, not what a header claims
# What the zip and zlib layers raise for a damaged archive (beside ValueError and OSError).
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, struct.error,
               OverflowError)


def _header(f, name: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran order, dtype) of the .npy header at the start of member `f`."""
    try:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f".npy format version {version} is not supported")
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read(f)
    except (ValueError, SyntaxError, TypeError, tokenize.TokenError) as e:  # TokenError: numpy lets it through
        raise ValueError(f"member {name!r}: not a .npy header ({type(e).__name__}: {e})") from None
    if dtype.kind not in _KINDS or dtype.itemsize == 0 or any(d < 0 for d in shape):
        raise ValueError(f"member {name!r}: unsupported array type {dtype.str} {shape}")
    return shape, fortran, dtype


def _member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> np.ndarray:
    """One member's array, its size checked against the header before the data is read."""
    with zf.open(info) as f:
        shape, fortran, dtype = _header(f, info.filename)
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != info.file_size - f.tell():
            raise ValueError(f"member {info.filename!r}: its header promises {nbytes} bytes of data, the member "
                             f"holds {info.file_size - f.tell()}")
        data = bytearray()
        while len(data) < nbytes:
            chunk = f.read(min(_CHUNK, nbytes - len(data)))
            if not chunk:
                raise ValueError(f"member {info.filename!r} ends after {len(data)} of {nbytes} bytes")
            data += chunk
    a = np.frombuffer(data, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return a.astype(dtype.newbyteorder("="), copy=False)


def read_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The arrays of an `.npz` file by name (the member name less `.npy`). ValueError naming the file
    for anything that is not such an archive: a bad zip, a member that is not a plain .npy array
    (objects, pickles), a header that disagrees with its data, or a name used twice."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                name = info.filename.removesuffix(".npy")
                if name == info.filename or name in out:
                    raise ValueError(f"member {info.filename!r} is not a .npy array or appears twice")
                if info.flag_bits & 0x1:  # zipfile would raise RuntimeError: password required
                    raise ValueError(f"member {info.filename!r} is encrypted")
                out[name] = _member(zf, info)
    except (ValueError, OSError, *_ZIP_ERRORS) as e:
        raise ValueError(f"{path}: not a valid .npz archive ({type(e).__name__}: {e})") from None
    return out
