"""A run's state on disk: the checkpoint it writes every epoch (and on Ctrl-C or SIGTERM), and the
exact resume from it: weights, optimizer moments, scheduler, RNG, pruned graphs, batches, reliance."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ramen import checkpoint
from ramen.batching import BatchSampler, Graphs
from ramen.config import TrainConfig
from ramen.digest import differing
from ramen.encoder import Encoder
from ramen.reliance import Reliance


CHECKPOINT = "checkpoint.safetensors"  # in the run directory (ramen.checkpoint: no pickle, a SHA-256)


RESUME_MAY_CHANGE = ("device",)  # settings a resumed run may change (the rest must be the checkpoint's)


@dataclasses.dataclass
class Progress:
    """Where a run is: the epoch and step it trains next, and the steps taken in all."""

    epoch: int = 0  # the epoch being trained (0-based)
    step: int = 0  # the next step within it
    global_step: int = 0


def rng_state(device: torch.device) -> np.ndarray:
    """This process's RNG states, torch's CPU generator's and (on a GPU) its device's, as one byte array:
    what a torchrun rank's dropout continues from."""
    cpu = torch.get_rng_state().numpy()
    gpu = torch.cuda.get_rng_state(device).numpy() if device.type == "cuda" else np.zeros(0, np.uint8)
    return np.concatenate([np.array([cpu.size], np.int64).view(np.uint8), cpu, gpu])


def _set_rng_state(packed: np.ndarray, device: torch.device, path: Path) -> None:
    """Restores `rng_state`'s bytes (a damaged entry is a ValueError naming the file)."""
    packed = np.asarray(packed)
    size = int(packed[:8].view(np.int64)[0]) if packed.dtype == np.uint8 and packed.ndim == 1 and packed.size >= 8 else -1
    if not 0 <= size <= packed.size - 8:
        raise ValueError(f"{path}: a rank's saved RNG state is malformed")
    try:
        torch.set_rng_state(torch.from_numpy(packed[8:8 + size].copy()))
        if device.type == "cuda" and packed.size > 8 + size:
            torch.cuda.set_rng_state(torch.from_numpy(packed[8 + size:].copy()), device)
    except RuntimeError as exc:
        raise ValueError(f"{path}: a rank's saved RNG state is malformed ({exc})") from None


def save_checkpoint(path: Path, encoder: Encoder, optimizer, scheduler, progress: Progress, cfg: TrainConfig,
                    graphs: dict[str, Graphs], batches: list[np.ndarray] | None, reliance: Reliance,
                    reg_optimizer: torch.optim.Optimizer | None = None, data: dict[str, str] | None = None,
                    rank_rng: list[np.ndarray] | None = None) -> None:
    """Everything needed to continue exactly: weights, optimizer, scheduler, RNG (under torchrun every
    rank's, `rank_rng` from `rng_state`), graphs, batches, and the fingerprint of the data trained on
    (`ramen.digest.data_fingerprint`)."""
    state = {
        "config": cfg.to_dict(),
        "data": data,
        "progress": dataclasses.asdict(progress),
        "encoder": encoder.state_dict(),
        "optimizer": optimizer.state_dict(),
        "reg_optimizer": None if reg_optimizer is None else reg_optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "rank_rng": rank_rng,
        "graphs": {name: {side: None if m is None else (m.indptr, m.indices, m.data, m.shape)
                          for side, m in (("query", g.query), ("label", g.label))}
                   for name, g in graphs.items()},
        "batches": batches,
        "reliance": reliance.state_dict(),
    }
    checkpoint.save(path, state)


def _csr_from(t, path: Path) -> sp.csr_matrix | None:
    """A saved graph (indptr, indices, data, shape), checked: a damaged one is a ValueError."""
    if t is None:
        return None
    try:
        m = sp.csr_matrix((t[2], t[1], t[0]), shape=tuple(int(v) for v in t[3]))
        m.check_format(full_check=True)
    except (ValueError, TypeError, IndexError) as exc:
        raise ValueError(f"{path}: a saved graph is malformed ({exc})") from None
    return m



def _check_against_run(path: Path, graphs: dict[str, Graphs], batches: list | None, sampler: BatchSampler) -> None:
    """The saved graphs have the anchor sets and shapes of the run's own, and the saved batches name
    its training queries: a ValueError naming what does not fit (a damaged or foreign checkpoint)."""
    if set(graphs) != set(sampler.graphs):
        raise ValueError(f"{path}: the checkpoint holds graphs of anchor sets {sorted(graphs)}, the run uses "
                         f"{sorted(sampler.graphs)}")
    for name, g in graphs.items():
        for side in ("query", "label"):
            saved, own = getattr(g, side), getattr(sampler.graphs[name], side)
            if (saved is None) != (own is None) or (own is not None and saved.shape != own.shape):
                raise ValueError(f"{path}: the saved {side} graph of anchor set {name!r} has shape "
                                 f"{None if saved is None else saved.shape}, the run's "
                                 f"{None if own is None else own.shape}")
    n = sampler.Y.shape[0]
    for i, b in enumerate(batches or []):
        ids = np.asarray(b)
        if ids.ndim != 1 or ids.dtype.kind not in "iu" or (ids.size and (ids.min() < 0 or ids.max() >= n)):
            raise ValueError(f"{path}: saved batch {i} is not a list of training query ids in [0, {n})")


def restore(path: Path | None, cfg: TrainConfig, encoder: Encoder, optimizer: torch.optim.Optimizer, scheduler,
            reg_optimizer: torch.optim.Optimizer | None, sampler: BatchSampler,
            reliance: Reliance, data: dict[str, str] | None = None, rank: int = 0,
            device: torch.device | None = None) -> tuple[Progress, dict[str, Graphs]]:
    """Loads the checkpoint at `path` into the run's objects (the sampler gets its graphs and
    batches, torchrun rank `rank` its own RNG states on `device`); returns where the run stopped and
    its graphs. A checkpoint made with other settings than `cfg` (but RESUME_MAY_CHANGE), or on other
    data than `data` fingerprints, is a ValueError naming what differs."""
    if path is None or not path.exists():
        raise ValueError(f"cannot resume: no checkpoint at {path}")
    ckpt = checkpoint.load(path)
    saved_cfg = TrainConfig.from_dict(ckpt["config"])
    saved = saved_cfg.to_dict()
    ignored = set(RESUME_MAY_CHANGE) | (set(saved_cfg.idle_fields()) & set(cfg.idle_fields()))  # unread by both
    changed = sorted(k for k, v in cfg.to_dict().items() if k not in ignored and saved[k] != v)
    if changed:
        raise ValueError(f"cannot resume {path} with other settings than it was trained with: "
                         + ", ".join(f"{k} (saved {saved[k]!r}, now {getattr(cfg, k)!r})" for k in changed))
    if data is not None and isinstance(ckpt.get("data"), dict):  # checkpoints before 2026-12 hold none
        parts = differing(ckpt["data"], data)
        if parts:
            raise ValueError(f"cannot resume {path} on other data than it was trained on: {', '.join(parts)} "
                             "differ (start a new run without resume, or in another directory)")
    encoder.load_state_dict(ckpt["encoder"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if reg_optimizer is not None:
        reg_optimizer.load_state_dict(ckpt["reg_optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["torch_rng"])
    if ckpt["cuda_rng"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
    ranks = ckpt.get("rank_rng")  # saved under torchrun (a run resumed on more ranks: the others keep rank 0's)
    if isinstance(ranks, list) and rank < len(ranks):
        _set_rng_state(ranks[rank], device or torch.device("cpu"), path)
    graphs = {n: Graphs(_csr_from(g["query"], path), _csr_from(g["label"], path)) for n, g in ckpt["graphs"].items()}
    _check_against_run(path, graphs, ckpt["batches"], sampler)
    sampler.graphs = graphs
    sampler.set_batches(ckpt["batches"])
    reliance.load_state_dict(ckpt["reliance"])
    return Progress(**ckpt["progress"]), graphs
