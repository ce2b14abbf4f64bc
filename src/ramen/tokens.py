"""Token cache: every text tokenised once into numpy arrays that batches gather from."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ramen.files import temp_path


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
        for s in tqdm(starts, desc="tokenise", unit="chunk", disable=not progress or n <= chunk):
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
        """Writes `path`/pad_id.txt, ids.npy and lengths.npy, each atomically via a temporary name, in
        that order: a cache is complete once lengths.npy is there."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        tmp = temp_path(path / "pad_id.txt")
        tmp.write_text(str(self.pad_id))
        os.replace(tmp, path / "pad_id.txt")
        for name, arr in (("ids", self.ids), ("lengths", self.lengths)):
            tmp = temp_path(path / f"{name}.npy")
            np.save(tmp, arr)
            os.replace(tmp, path / f"{name}.npy")

    @classmethod
    def load(cls, path: str | os.PathLike, *, mmap: bool = True) -> "TokenCache":
        path = Path(path)
        mode = "r" if mmap else None
        pad = int((path / "pad_id.txt").read_text()) if (path / "pad_id.txt").exists() else 0
        return cls(np.load(path / "ids.npy", mmap_mode=mode), np.load(path / "lengths.npy", mmap_mode=mode), pad)
