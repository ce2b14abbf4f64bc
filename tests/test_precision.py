"""bf16 autocast: on which devices it runs, and that CPU encoding and training honour it."""
import numpy as np
import pytest
import torch

from ramen import precision
from ramen.encoder import Encoder

native = pytest.mark.skipif(not precision.cpu_has_bf16(), reason="this CPU has no native bf16 (AMX, AVX512-BF16)")


def test_bf16_enabled_per_device(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)
    assert precision.bf16_enabled("cuda:0") and not precision.bf16_enabled("cuda", gpu=False)
    assert not precision.bf16_enabled("cpu") and precision.bf16_enabled("cpu", cpu=True)
    assert not precision.bf16_enabled("meta", gpu=True, cpu=True)
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    assert not precision.bf16_enabled("cpu", cpu=True)  # emulated bf16 is slower than float32: never


def test_cpu_flags_are_read_from_cpuinfo(monkeypatch, tmp_path):
    precision.cpu_has_bf16.cache_clear()
    try:
        real = precision.Path

        def fake(flags):
            f = tmp_path / "cpuinfo"
            f.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
            monkeypatch.setattr(precision, "Path", lambda p: f if p == "/proc/cpuinfo" else real(p))
            precision.cpu_has_bf16.cache_clear()
            return precision.cpu_has_bf16()

        assert fake("fpu sse avx512f amx_bf16 amx_tile")
        assert fake("fpu avx512_bf16")
        assert not fake("fpu sse avx2 avx512f")
    finally:
        monkeypatch.undo()
        precision.cpu_has_bf16.cache_clear()


def test_autocast_context_lowers_matmuls_only_when_enabled():
    a = torch.randn(4, 8)
    with precision.autocast("cpu", True):
        assert (a @ a.T).dtype == torch.bfloat16
    with precision.autocast("cpu", False):
        assert (a @ a.T).dtype == torch.float32


@native
def test_encoder_encodes_in_bf16_when_asked_and_float32_by_default():
    enc = Encoder("tiny", max_length=16)
    texts = ["graph regularised encoders", "tail labels", "extreme classification"]
    assert not enc.uses_bf16(torch.device("cpu"))  # CPU default: float32
    full = enc.encode(texts, progress=False)
    enc.bf16 = True
    assert enc.uses_bf16(torch.device("cpu"))
    low = enc.encode(texts, progress=False)
    assert low.dtype == np.float32 and np.allclose(np.linalg.norm(low, axis=1), 1, atol=1e-5)
    assert not np.array_equal(full, low)  # really computed in bf16 ...
    assert np.abs(full - low).max() < 0.05  # ... and close to float32
    enc.bf16 = False
    assert np.array_equal(enc.encode(texts, progress=False), full)
