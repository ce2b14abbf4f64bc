"""Token cache: every text tokenised once into numpy arrays that batches gather from."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ramen.files import file_sha256, temp_path
from ramen.progress import bar as progress_bar

CHECKSUMS = "sha256.json"  # the SHA-256 of each file of a saved cache, written last
FILES = ("pad_id.txt", "ids.npy", "lengths.npy")


class TokenCache:
    """Token ids (N x max_length, int32, right-padded) and lengths (N,) of a list of texts.

    A batch gathers rows and trims the padding to its own longest text. Saved as two .npy files
    so that a large cache can be memory-mapped instead of read.
    """

    def __init__(self, ids: np.ndarray, lengths: np.ndarray, pad_id: int = 0):
        if ids.ndim != 2 or lengths.shape != (ids.shape[0],):
            raise ValueError(f"token ids {ids.shape} and lengths {lengths.shape} disagree")
        self.ids = ids
        self.lengths = lengths
        self.pad_id = int(pad_id)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @classmethod
    def build(cls, tokenizer: Any, texts: list[str], max_length: int, *, chunk: int = 8192,
              progress: bool = True) -> "TokenCache":
        """Tokenises `texts` with a Hugging Face tokenizer, truncating to `max_length` tokens.

        `chunk` texts at a time: the tokenizer's per-text objects of a chunk of 65,536 took 640 MB
        (issue 26), those of 8,192 take 40 MB, at the same speed."""
        n = len(texts)
        ids = np.full((n, max_length), tokenizer.pad_token_id or 0, dtype=np.int32)
        lengths = np.zeros(n, dtype=np.int32)
        starts = range(0, n, chunk)
        for s in progress_bar(iterable=starts, desc="tokenise", unit="chunk", disable=not progress or n <= chunk):
            part = [t if isinstance(t, str) else str(t) for t in texts[s:s + chunk]]
            enc = tokenizer(part, max_length=max_length, truncation=True, padding="max_length",
                            return_attention_mask=True, return_token_type_ids=False, return_tensors="np")
            ids[s:s + len(part)] = enc["input_ids"]
            lengths[s:s + len(part)] = enc["attention_mask"].sum(axis=1)
        return cls(ids, lengths, tokenizer.pad_token_id or 0)

    def subset(self, rows: np.ndarray | list[int]) -> "TokenCache":
        """The cache of rows `rows` only (in that order), as a copy."""
        rows = np.asarray(rows, dtype=np.int64)
        return TokenCache(np.asarray(self.ids[rows]), np.asarray(self.lengths[rows]), self.pad_id)

    def batch(self, index: np.ndarray | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) as int64 tensors (n x longest) for rows `index`."""
        index = np.asarray(index, dtype=np.int64)
        longest = max(int(self.lengths[index].max()) if len(index) else 1, 1)
        ids = np.ascontiguousarray(self.ids[index, :longest], dtype=np.int64)
        mask = (np.arange(longest)[None, :] < self.lengths[index][:, None]).astype(np.int64)
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def save(self, path: str | os.PathLike) -> None:
        """Writes `path`/pad_id.txt, ids.npy and lengths.npy, each atomically via a temporary name, then
        sha256.json, their checksums: a cache is complete once sha256.json is there, and `load` checks it."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / CHECKSUMS).unlink(missing_ok=True)  # incomplete until the new files' checksums are written
        sums = {}
        for name, write in (("pad_id.txt", lambda tmp: tmp.write_text(str(self.pad_id))),
                            ("ids.npy", lambda tmp: np.save(tmp, self.ids)),
                            ("lengths.npy", lambda tmp: np.save(tmp, self.lengths))):
            tmp = temp_path(path / name)
            write(tmp)
            sums[name] = file_sha256(tmp)
            os.replace(tmp, path / name)
        tmp = temp_path(path / CHECKSUMS)
        tmp.write_text(json.dumps(sums, indent=1))
        os.replace(tmp, path / CHECKSUMS)

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> "TokenCache":
        """The cache `save` wrote to `path`, after checking every file against sha256.json; a ValueError
        naming the file where one is missing, cut short, altered or not a cache's."""
        path = Path(path)
        sums = _read_checksums(path)
        for name in FILES:
            if not (path / name).is_file():
                raise ValueError(f"{path / name} is missing")
            if file_sha256(path / name) != sums.get(name):
                raise ValueError(f"{path / name} does not match its checksum in {CHECKSUMS} (damaged or altered)")
        mode = "r" if mmap else None
        try:
            pad = int((path / "pad_id.txt").read_text())
            ids, lengths = (np.load(path / f"{n}.npy", mmap_mode=mode, allow_pickle=False) for n in ("ids", "lengths"))
            if ids.dtype != np.int32 or lengths.dtype != np.int32:
                raise ValueError(f"token ids and lengths must be int32, got {ids.dtype} and {lengths.dtype}")
            return cls(ids, lengths, pad)
        except ValueError as exc:
            raise ValueError(f"{path} is not a readable token cache: {exc}") from None


def _read_checksums(path: Path) -> dict[str, str]:
    """The checksums a saved cache lists in sha256.json; a ValueError where there are none."""
    try:
        sums = json.loads((path / CHECKSUMS).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path} has no {CHECKSUMS} (its writing was cut short, or an earlier ramen wrote it "
                         "without checksums)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path / CHECKSUMS} is not a checksum list: {exc}") from None
    if not isinstance(sums, dict):
        raise ValueError(f"{path / CHECKSUMS} is not a checksum list")
    return sums
