"""The off-host device harness: runs training and inference code on the `meta` device, standing in
for a GPU, and fails on anything that a GPU would punish.

torch's meta device has autograd and AdamW and rejects arithmetic between meta and CPU tensors,
but lets CPU index tensors into meta tensors pass, and cannot hand data back to the host. Under
`DeviceDiscipline` (a TorchDispatchMode) every aten op is checked:
- an op mixing tensors on the device with host tensors (other than 0-d scalars) is a tensor left
  behind on the host;
- a host read of a device tensor (`.item()`, `bool(t)`, `float(t)`, a copy to the host) is a
  synchronisation: forbidden inside a step; where allowed (the end of `encode`), a copy returns
  seeded stand-in values of the right shape, since meta tensors hold no data;
- a host-to-device copy made outside `ramen.transfer.to_device` is a stray transfer (unpinned,
  and invisible to the one place that pins).
The HF encoders cannot build their attention masks on meta, so `StandInEncoder` (an Encoder whose
backbone is an embedding and one linear layer) runs the real `Encoder.forward`, pooling and
`encode` around a tiny backbone.
"""
from __future__ import annotations

import types

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ramen import transfer
from ramen.encoder import Encoder, _minilm_path

aten = torch.ops.aten
META = torch.device("meta")
_HOST_READS = {aten._local_scalar_dense.default, aten.equal.default}
_COPIES = {aten._to_copy.default, aten.copy_.default, aten.copy.default}


class DeviceViolation(AssertionError):
    """Code under the harness did something a GPU run must not."""


class DeviceDiscipline(TorchDispatchMode):
    """Checks every op run on `device` (see the module docstring); `host_reads` says whether copies
    to the host are allowed (they then return zeros) and counts them in `self.host_reads`."""

    def __init__(self, device: torch.device = META, *, host_reads: bool = False):
        super().__init__()
        self.device = torch.device(device)
        self.allow_host_reads = host_reads
        self.host_reads = 0
        self.transfers = 0

    def _fail(self, func, what: str) -> None:  # noqa: ANN001
        raise DeviceViolation(f"{what} in {func}")

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN206
        kwargs = kwargs or {}
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_device = [t for t in tensors if t.device.type == self.device.type]
        host = [t for t in tensors if t.device.type == "cpu"]
        if func in _HOST_READS and on_device:
            self._fail(func, "a host read of a device tensor (.item(), bool(), float(): a synchronisation)")
        if func in _COPIES:
            return self._copy(func, args, kwargs, tensors)
        if on_device and any(t.dim() > 0 for t in host):
            shapes = [tuple(t.shape) for t in host if t.dim() > 0]
            self._fail(func, f"host tensors {shapes} beside {self.device} tensors (left behind on the host)")
        return func(*args, **kwargs)

    def _copy(self, func, args, kwargs, tensors):  # noqa: ANN001, ANN202
        if func is aten._to_copy.default:
            src = args[0]
            dst_device = torch.device(kwargs.get("device") or src.device)
        else:  # copy_(dst, src) / copy(dst, src)
            src = args[1]
            dst_device = args[0].device
        to_host = src.device.type == self.device.type and dst_device.type == "cpu"
        to_device = src.device.type == "cpu" and dst_device.type == self.device.type
        if to_host:
            if not self.allow_host_reads:
                self._fail(func, "a copy of a device tensor to the host (a synchronisation)")
            self.host_reads += 1
            if func is aten._to_copy.default:
                return _stand_in_data(src.shape, kwargs.get("dtype") or src.dtype, self.host_reads)
            return args[0].copy_(_stand_in_data(args[0].shape, args[0].dtype, self.host_reads))
        if to_device:
            if not transfer.in_transfer():
                self._fail(func, f"a host-to-device copy of {tuple(src.shape)} outside ramen.transfer.to_device")
            self.transfers += 1
        elif any(t.device.type == self.device.type for t in tensors) and any(
                t.device.type == "cpu" and t.dim() > 0 for t in tensors):
            self._fail(func, "host tensors beside device tensors")
        return func(*args, **kwargs)


def _stand_in_data(shape: torch.Size, dtype: torch.dtype, seed: int) -> torch.Tensor:
    """What a host read of a meta tensor returns: seeded values (floats in [-1, 1), so embeddings
    normalise and indexes build); integers 0, 1, ... along the last axis (distinct ids in each row,
    as a top-k gives); booleans false."""
    if dtype == torch.bool:
        return torch.zeros(shape, dtype=dtype)
    if not dtype.is_floating_point:
        return torch.arange(shape[-1] if len(shape) else 1).expand(shape).to(dtype).clone()
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) * 2 - 1).to(dtype)


class _Backbone(torch.nn.Module):
    """An embedding and a linear layer: a stand-in for a transformer, with its output's attribute name."""

    def __init__(self, vocab: int, dim: int, seed: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.embed = torch.nn.Embedding(vocab, dim)
            self.mix = torch.nn.Linear(dim, dim)
            self.dropout = torch.nn.Dropout(0.1)
        self.config = types.SimpleNamespace(hidden_size=dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> types.SimpleNamespace:
        return types.SimpleNamespace(last_hidden_state=self.dropout(torch.tanh(self.mix(self.embed(input_ids)))))


class StandInEncoder(Encoder):
    """ramen's Encoder (forward, pooling, encode, fingerprint) over `_Backbone`: runs on meta."""

    def __init__(self, dim: int = 16, *, label_tower: bool = False, seed: int = 0, max_length: int = 16):
        torch.nn.Module.__init__(self)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(_minilm_path(), local_files_only=True)
        self.backbone = _Backbone(len(self.tokenizer), dim, seed)
        self.label_backbone = _Backbone(len(self.tokenizer), dim, seed + 1) if label_tower else None
        self.name, self.pooling, self.max_length, self.dim = "stand-in", "mean", max_length, dim
        self.bf16 = None
        self.eval()
