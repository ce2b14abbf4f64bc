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


@pytest.mark.parametrize("cpu_bf16", [True, False])
def test_training_runs_in_the_dtype_its_config_asks_and_says_so(tmp_path, cpu_bf16):
    import json

    from ramen.config import TrainConfig
    from ramen.datasets.synthetic import synthetic
    from ramen.train import train

    cfg = TrainConfig(encoder="tiny", epochs=1, batch_size=32, eval_every=0,
                      cpu_bf16=cpu_bf16)
    assert TrainConfig().cpu_bf16  # the default, where the CPU has native bf16
    model = train(synthetic("tiny", seed=0), cfg, out_dir=tmp_path, progress=False)
    first = json.loads((tmp_path / "log.jsonl").read_text().splitlines()[0])
    want = "bf16" if cpu_bf16 and precision.cpu_has_bf16() else "float32"
    assert first["autocast"] == want and f"encoder in {want}" in first["text"]
    assert model.encoder.uses_bf16(torch.device("cpu")) == (want == "bf16")  # its evaluation ran so too
