"""Host-to-device transfers: the one place every tensor that training and encoding use crosses to
the device, pinned and asynchronous on CUDA.

Batches are built on the host (numpy, on the prefetch thread, which pins them for a CUDA device)
and cross in `batch_to` on the training thread; embedding inputs cross in `to_device`. Keeping
every crossing here gives pinning one place to act, and lets the device tests
(tests/device_harness.py) tell a deliberate transfer from a tensor left behind on the host.
"""
from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Iterator

import torch

from ramen.batching import AnchorBatch, Batch

_STATE = threading.local()  # .active: inside a transfer (read by the device tests)


@contextlib.contextmanager
def _crossing() -> Iterator[None]:
    outer = getattr(_STATE, "active", False)
    _STATE.active = True
    try:
        yield
    finally:
        _STATE.active = outer


def in_transfer() -> bool:
    """Whether this thread is inside `to_device` (the device tests allow host-to-device copies only there)."""
    return getattr(_STATE, "active", False)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` on `device`: a non-blocking copy (from pinned memory where `pin` made it so), or `t` itself."""
    if t.device == device:
        return t
    with _crossing():
        return t.to(device, non_blocking=True)


def pin(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """`t` in page-locked memory when it will cross to a CUDA device (so the copy runs async), else `t`."""
    if device.type != "cuda" or t.device.type != "cpu" or t.is_pinned():
        return t
    return t.pin_memory()


def _map_batch(batch: Batch, fn) -> Batch:  # noqa: ANN001 - fn: Tensor -> Tensor
    """A copy of `batch` with `fn` applied to every tensor it holds (numpy ids stay on the host)."""
    def csr(pair: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return fn(pair[0]), fn(pair[1])

    anchors = {name: AnchorBatch(ab.ids, csr(ab.query_pos), csr(ab.query_excl), csr(ab.label_pos),
                                 csr(ab.label_excl))
               for name, ab in batch.anchors.items()}
    tokens = {key: (fn(ids), fn(mask)) for key, (ids, mask) in batch.tokens.items()}
    return dataclasses.replace(batch, label_pos=csr(batch.label_pos), label_excl=csr(batch.label_excl),
                               anchors=anchors, tokens=tokens)


def pin_batch(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of `batch` pinned for `device` (a no-op unless it is a CUDA device)."""
    return batch if device.type != "cuda" else _map_batch(batch, lambda t: pin(t, device))


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """Every tensor of `batch` (token ids and masks, positive and exclusion CSRs, anchor ids) on `device`."""
    return _map_batch(batch, lambda t: to_device(t, device))
