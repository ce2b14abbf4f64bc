"""Checkpoint files (ramen.checkpoint): exact round trips, no unpickling, and every damaged or
hostile file a ValueError naming it, never a crash, never code run."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ramen import checkpoint


def sample_state() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "config": {"lr": 5e-5, "lambdas": {"hyperlink": [0.1, 0.2]}, "anchor_sets": None, "flag": True},
        "progress": {"epoch": 2, "step": 0, "global_step": 18},
        "encoder": {"w": torch.randn(4, 3, generator=g), "b": torch.zeros(3, dtype=torch.bfloat16)},
        "optimizer": {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4, 3, generator=g)}},
                      "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999), "params": [0]}]},
        "torch_rng": torch.get_rng_state(),
        "graphs": {"hyperlink": {"query": (np.arange(4, dtype=np.int64), np.array([0, 2, 1]),
                                           np.ones(3, np.float32), (3, 5)), "label": None}},
        "batches": [np.array([3, 1]), np.array([], dtype=np.int64)],
        "mask": torch.tensor([True, False]),
        "scalar": torch.tensor(7),
        "nan": float("nan"),
    }


def assert_same(a, b) -> None:
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


def test_round_trip_is_exact(tmp_path):
    state = sample_state()
    checkpoint.save(tmp_path / "c.safetensors", state)
    assert_same(state, checkpoint.load(tmp_path / "c.safetensors"))
    assert not list(tmp_path.glob("*.tmp"))


def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save({"evil": Payload()}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="old.pt.*no longer unpickles"):
        checkpoint.load(tmp_path / "old.pt")
    assert not marker.exists()


def test_damage_and_hostile_state_are_value_errors(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, sample_state())
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x10  # a tensor byte
    (tmp_path / "flip").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="flip.*SHA-256"):
        checkpoint.load(tmp_path / "flip")
    with pytest.raises(ValueError, match="no checkpoint file"):
        checkpoint.load(tmp_path / "missing")
    (tmp_path / "dir.safetensors").mkdir()
    with pytest.raises(ValueError, match="dir.safetensors"):
        checkpoint.load(tmp_path / "dir.safetensors")
    from safetensors.torch import save_file

    deep = "[" * 10_000 + "]" * 10_000
    for name, meta in (("other", {"format": "x", "version": "1"}),
                       ("deep", {"format": checkpoint.FORMAT, "version": "1", "state": deep,
                                 "sha256": checkpoint._digest(deep, {})})):
        save_file({}, str(tmp_path / name), metadata=meta)
        with pytest.raises(ValueError, match=name):
            checkpoint.load(tmp_path / name)


FUZZ = r"""
import json, random, sys
from pathlib import Path
from ramen import checkpoint
src, out, seed, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
base = src.read_bytes()
outcomes = []
for i in range(n):
    data = bytearray(base)
    kind = rng.choice(["flip", "truncate", "insert", "header"])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif kind == "truncate":
        data = data[:rng.randrange(len(data))]
    elif kind == "insert":
        at = rng.randrange(len(data))
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    else:
        data[rng.randrange(min(len(data), 200))] = rng.randrange(256)
    path = out / f"m{i}"
    path.write_bytes(bytes(data))
    try:
        state = checkpoint.load(path)
        outcomes.append("same" if bytes(data) == base else "loaded-changed")
    except ValueError as exc:
        outcomes.append("error" if str(path) in str(exc) else "unnamed:" + str(exc)[:200])
print(json.dumps(outcomes))
"""


def test_fuzzed_checkpoints_load_unchanged_or_fail_naming_the_file(tmp_path):
    """Seeded mutations of a checkpoint, loaded in a subprocess (a crash fails the test):
    RAMEN_FUZZ_CASES sets how many (default 300)."""
    src = tmp_path / "c.safetensors"
    checkpoint.save(src, sample_state())
    n = int(os.environ.get("RAMEN_FUZZ_CASES", "300"))
    proc = subprocess.run([sys.executable, "-c", FUZZ, str(src), str(tmp_path), "0", str(n)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    outcomes = json.loads(proc.stdout)
    assert len(outcomes) == n and set(outcomes) <= {"same", "error"}, [o for o in outcomes if o not in ("same", "error")][:5]


def test_a_ranks_rng_state_round_trips_and_a_damaged_one_is_a_value_error(tmp_path):
    """Under torchrun each rank's RNG state is saved as bytes (ramen.train_state.rng_state) and each
    rank restores its own: the same draws follow; a damaged entry names the file."""
    from pathlib import Path

    from ramen.train_state import _set_rng_state, rng_state

    cpu, path = torch.device("cpu"), Path(tmp_path / "checkpoint.safetensors")
    torch.manual_seed(3)
    saved = rng_state(cpu)
    want = torch.rand(5)
    torch.manual_seed(4)
    _set_rng_state(saved, cpu, path)
    assert torch.equal(torch.rand(5), want)
    size = np.array([5056], np.int64).view(np.uint8)
    for bad in (saved[:7], saved[:100], np.concatenate([np.array([1 << 40], np.int64).view(np.uint8), saved[8:]]),
                saved.astype(np.int16), np.concatenate([size, np.zeros(5056, np.uint8)])):
        with pytest.raises(ValueError, match="checkpoint.safetensors: a rank's saved RNG state is malformed"):
            _set_rng_state(bad, cpu, path)


def test_stated_digest_reads_the_header_only(tmp_path):
    path = tmp_path / "c.safetensors"
    checkpoint.save(path, {"w": torch.arange(4.0)})
    assert len(checkpoint.stated_digest(path)) == 64
    (tmp_path / "junk").write_bytes(b"\x00" * 40)
    assert checkpoint.stated_digest(tmp_path / "junk") == "" == checkpoint.stated_digest(tmp_path / "missing")


def test_the_trainer_s_adamw_is_fused_and_an_unfused_checkpoint_steps_as_the_loop_would(tmp_path, monkeypatch):
    """The trainer's AdamW (and the separate regulariser step's) is fused on the CPU; a checkpoint an
    unfused optimizer wrote (before it was) loads into it and takes exactly the loop's next step."""
    import ramen.step as step_module
    from ramen.config import TrainConfig
    from ramen.encoder import Encoder
    from ramen.reg_step import make_reg_optimizer

    cfg = TrainConfig(encoder="tiny")
    fused = step_module.make_optimizer(step_module.BatchEncoder(Encoder("tiny", seed=0)), cfg)
    assert all(g["fused"] for g in [*fused.param_groups, *make_reg_optimizer(fused).param_groups])

    def steps(opt, params, grads):
        for g in grads:
            for p, gp in zip(params, g):
                p.grad = gp.clone()
            opt.step()

    gen = torch.Generator().manual_seed(0)
    encoders = [Encoder("tiny", seed=0) for _ in range(2)]
    params = [list(e.parameters()) for e in encoders]
    grads = [[torch.randn(p.shape, generator=gen) * 1e-2 for p in params[0]] for _ in range(3)]
    with monkeypatch.context() as m:  # as before: torch's loop over the tensors
        m.setattr(step_module, "fusable", lambda params: False)
        old = step_module.make_optimizer(step_module.BatchEncoder(encoders[0]), cfg)
    steps(old, params[0], grads[:2])
    checkpoint.save(tmp_path / "old.safetensors", {"optimizer": old.state_dict()})
    for p, q in zip(params[1], params[0]):
        p.data.copy_(q.data)
    resumed = step_module.make_optimizer(step_module.BatchEncoder(encoders[1]), cfg)
    resumed.load_state_dict(checkpoint.load(tmp_path / "old.safetensors")["optimizer"])
    steps(old, params[0], grads[2:])
    steps(resumed, params[1], grads[2:])
    assert all(torch.equal(p, q) for p, q in zip(params[0], params[1]))
