"""The training driver end to end on the tiny synthetic dataset with a tiny random encoder."""
import dataclasses
import json
import os
from pathlib import Path
import shutil
import signal
import socket

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import ramen.step as step_module
import ramen.train as train_module
from ramen.config import TrainConfig
from ramen.model import Model
from ramen.datasets.synthetic import synthetic
from ramen import checkpoint
from ramen.train import CHECKPOINT, NonFiniteLoss, train


@pytest.fixture(scope="module")
def tiny_data():
    return synthetic("tiny", seed=0)


def tiny_config(**kw) -> TrainConfig:
    # float32: the tiny encoder gains nothing from bf16, and the two-process test compares shards in float32
    base = dict(encoder="tiny", graph=True, epochs=2, batch_size=32, lr=1e-3, warmup_epochs=1, prune_every=1,
                walk_length=20, eval_every=1, encode_batch_size=64, dropout=0.0, cpu_bf16=False)
    cfg = TrainConfig(**{**base, **kw})  # the base's graph settings serve graph runs; a plain one leaves them unread
    return dataclasses.replace(cfg.without_idle(), **{k: v for k, v in kw.items() if k in cfg.idle_fields()})


def records(out, event):
    lines = (out / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


def test_ramen_run_writes_log_checkpoint_model_and_curves(tiny_data, tmp_path):
    model = train(tiny_data, tiny_config(), out_dir=tmp_path, progress=False)
    steps = records(tmp_path, "step")
    assert steps and all(np.isfinite(r["loss"]) for r in steps)
    components = set(steps[0]["losses"])
    for name in tiny_data.anchor_sets:
        assert {f"Rx/{name}", f"Rz/{name}"} <= components
    assert "L" in components
    assert all(-1 <= r["spread"][k] <= 1 for r in steps for k in ("query", "label"))
    prunes = records(tmp_path, "prune")
    assert len(prunes) == 1 and prunes[0]["epoch"] == 1  # warm-up 1 epoch, then pruned
    for kept, total in prunes[0]["kept"].values():
        assert 0 <= kept <= total
    evals = records(tmp_path, "eval")
    assert len(evals) == 2 and 0 <= evals[-1]["metrics"]["P@1"] <= 1
    assert (tmp_path / CHECKPOINT).exists() and (tmp_path / "curves.png").stat().st_size > 1000
    tuned = records(tmp_path, "index")
    assert len(tuned) == 1 and 0 <= tuned[0]["recall@10"] <= 1 and tuned[0]["queries"] == 300
    assert model.index.expansion_search == tuned[0]["expansion_search"] == model.tuning["expansion_search"]
    loaded = Model.load(tmp_path / "model")
    assert loaded.index.expansion_search == tuned[0]["expansion_search"]  # saved with the index
    ids, scores = loaded.predict(tiny_data.test_texts[:3], k=4)
    assert ids.shape == (3, 4) and (ids < len(tiny_data.label_texts)).all()
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert np.allclose(loaded.encode(tiny_data.test_texts[:2], progress=False),
                       model.encode(tiny_data.test_texts[:2], progress=False), atol=1e-5)


def test_plain_dual_encoder_has_only_the_task_loss(tiny_data, tmp_path):
    train(tiny_data, tiny_config(graph=False, epochs=1), out_dir=tmp_path, progress=False)
    assert all(set(r["losses"]) == {"L"} for r in records(tmp_path, "step"))
    assert not records(tmp_path, "prune")


def test_ablation_flags_select_components(tiny_data, tmp_path):
    name = sorted(tiny_data.anchor_sets)[0]
    cfg = tiny_config(epochs=1, query_graph=False, anchor_sets=[name], prune=False)
    train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    assert set(records(tmp_path, "step")[0]["losses"]) == {"L", f"Rz/{name}"}


@pytest.mark.parametrize("reg_step", ["joint", "separate"])
def test_resume_after_interrupt_continues_exactly(tiny_data, tmp_path, monkeypatch, reg_step):
    # the bandit on, so that its state must survive the interruption too
    cfg = tiny_config(epochs=3, reliance="bandit", reg_step=reg_step)
    full = tmp_path / "full"
    train(tiny_data, cfg, out_dir=full, progress=False)
    expected = [(r["global_step"], r["loss"], r["lr"]) for r in records(full, "step")]
    reliance = records(full, "reliance")
    assert len(reliance) == 3 and set(reliance[-1]["components"]) == {
        f"{side}/{name}" for name in tiny_data.anchor_sets for side in ("Rx", "Rz")}

    part = tmp_path / "part"
    raise_in_loss(monkeypatch, len(expected) // 2 + 1)  # mid-epoch
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, cfg, out_dir=part, progress=False)
    monkeypatch.undo()
    train(tiny_data, cfg, out_dir=part, resume=True, progress=False)
    got = [(r["global_step"], r["loss"], r["lr"]) for r in records(part, "step")]
    assert got == expected
    assert records(part, "reliance")[-1] == reliance[-1]


def test_a_new_run_stopped_before_its_first_checkpoint_never_resumes_the_run_it_replaced(tiny_data, tmp_path,
                                                                                       monkeypatch):
    """A new run in a finished (or --overwrite'n) run's directory kept the old checkpoint until its own
    first one, so a stop before it and a resume continued the discarded run under the new log
    (a helper's kill test: steps 6-18 missing from the final log); and the old model, which evaluate
    then scored under the new run's record."""
    cfg = tiny_config(epochs=2)
    out = tmp_path / "run"
    train(tiny_data, cfg, out_dir=out, progress=False)
    raise_in_loss(monkeypatch, 2)  # inside the new run's second step: no checkpoint written
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, cfg, out_dir=out, progress=False)
    monkeypatch.undo()
    assert not (out / "checkpoint.safetensors").exists()
    assert not (out / "model").exists() and not (out / "config.json").exists()  # evaluate would score the old run
    with pytest.raises(ValueError, match="no checkpoint"):
        train(tiny_data, cfg, out_dir=out, resume=True, progress=False)


@pytest.mark.parametrize("damage", ["truncated", "same-size"])
def test_a_resume_rebuilds_a_damaged_token_cache_and_continues_exactly(tiny_data, tmp_path, monkeypatch, damage):
    """A token cache cut short or altered in place while a run was stopped is tokenised again, said in
    the log, and the resumed run trains as the uninterrupted one did (before, a cut file stopped the
    resume with an mmap error naming no file, and an altered one was trained on silently)."""
    cfg = tiny_config(epochs=2)
    full = tmp_path / "full"
    train(tiny_data, cfg, out_dir=full, progress=False)
    expected = [(r["global_step"], r["loss"]) for r in records(full, "step")]
    part = tmp_path / "part"
    raise_in_loss(monkeypatch, len(expected) // 2 + 1)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, cfg, out_dir=part, progress=False)
    monkeypatch.undo()
    ids = next((part / "cache").glob("tokens-train-*")) / "ids.npy"
    data = bytearray(ids.read_bytes())
    if damage == "truncated":
        ids.write_bytes(data[:len(data) // 2])
    else:
        data[-4000:] = bytes(4000)  # the last queries' tokens zeroed, the size unchanged
        ids.write_bytes(data)
    train(tiny_data, cfg, out_dir=part, resume=True, progress=False)
    assert [(r["global_step"], r["loss"]) for r in records(part, "step")] == expected
    notes = [r["text"] for r in records(part, "info") if "tokenising again" in r["text"]]
    assert len(notes) == 1 and str(ids.parent) in notes[0]


def test_an_exception_inside_a_step_keeps_the_last_checkpoint_and_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    """A KeyboardInterrupt raised by code in the middle of a step (not a signal, which is held) finds
    dropout's RNG halfway through the step: no checkpoint is written then, and resuming from the last
    one gives the uninterrupted run (before, the checkpoint held that RNG and the losses drifted)."""
    cfg = tiny_config(epochs=2, dropout=0.1)
    full = tmp_path / "full"
    train(tiny_data, cfg, out_dir=full, progress=False)
    expected = [(r["global_step"], r["loss"]) for r in records(full, "step")]
    part = tmp_path / "part"
    raise_in_loss(monkeypatch, len(expected) - 2)  # in the second epoch, after dropout's draws of the forward pass
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, cfg, out_dir=part, progress=False)
    monkeypatch.undo()
    assert any("no checkpoint written" in r.get("text", "") for r in records(part, "info"))
    train(tiny_data, cfg, out_dir=part, resume=True, progress=False)
    assert [(r["global_step"], r["loss"]) for r in records(part, "step")] == expected


def wrap_loss(monkeypatch, hook):
    """Makes the trainer call hook(call_number, real_loss, *args, **kwargs) in place of ramen_loss."""
    real = step_module.ramen_loss
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        return hook(calls["n"], real, *args, **kwargs)

    monkeypatch.setattr(step_module, "ramen_loss", wrapped)


def raise_in_loss(monkeypatch, at: int) -> None:
    """Raises KeyboardInterrupt from inside the step, in place of ramen_loss's call number `at` (code
    raising it, not a signal: nothing holds it to the step's end)."""
    def hook(n, real, *args, **kwargs):
        if n == at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    wrap_loss(monkeypatch, hook)


def test_sigterm_saves_a_checkpoint_mid_epoch_and_restores_the_handler(tiny_data, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=2)

    def terminated(n, real, *args, **kwargs):
        if n == 4:  # a scheduler's stop, mid-epoch 1
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    before = signal.getsignal(signal.SIGTERM)
    wrap_loss(monkeypatch, terminated)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    assert signal.getsignal(signal.SIGTERM) == before
    progress = checkpoint.load(tmp_path / CHECKPOINT)["progress"]
    assert progress["epoch"] == 0 and progress["step"] in (3, 4)  # the signal lands before or after step 4's loss
    assert "interrupted: checkpoint saved" in (tmp_path / "log.jsonl").read_text()


def test_nan_loss_stops_naming_the_step_and_keeps_the_checkpoint(tiny_data, tmp_path, monkeypatch):
    cfg = tiny_config(epochs=2)

    def poisoned(n, real, *args, **kwargs):
        total, parts = real(*args, **kwargs)
        return (total * float("nan"), parts) if n > 11 else (total, parts)

    wrap_loss(monkeypatch, poisoned)  # 9 steps per epoch: NaN in epoch 2
    with pytest.raises(NonFiniteLoss, match=r"epoch 2, step 2 \(global step 11\)"):
        train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    ckpt = checkpoint.load(tmp_path / CHECKPOINT)
    assert ckpt["progress"]["epoch"] == 1  # the last good (end of epoch 1) checkpoint


def test_degenerate_data_trains_and_says_so(tiny_data, tmp_path):
    ds = synthetic("tiny", seed=0)
    Y = ds.train_Y.tolil()
    Y[0] = 0  # a query with no label
    ds.train_Y = Y.tocsr()
    name = sorted(ds.anchor_sets)[0]
    a = ds.anchor_sets[name]
    la = a.label_A.tolil()
    la[0] = 0  # a label with no anchor
    a.label_A = la.tocsr()
    other = sorted(ds.anchor_sets)[-1]
    ds.anchor_sets[other].train_X_A = sp.csr_matrix(ds.anchor_sets[other].train_X_A.shape, dtype=np.float32)
    ds.anchor_sets[other].label_A = sp.csr_matrix(ds.anchor_sets[other].label_A.shape, dtype=np.float32)
    train(ds, tiny_config(epochs=1, densify=False), out_dir=tmp_path, progress=False)
    text = " ".join(r["text"] for r in records(tmp_path, "info"))
    assert "no label" in text and "no anchor" in text and "no edges" in text


def test_aug_gt_and_cluster_batching_run(tiny_data, tmp_path):
    train(tiny_data, tiny_config(epochs=1, aug_gt=True), out_dir=tmp_path / "aug", progress=False)
    info = " ".join(r["text"] for r in records(tmp_path / "aug", "info"))
    assert "AugGT" in info
    assert all(set(r["losses"]) == {"L"} for r in records(tmp_path / "aug", "step"))
    train(tiny_data, tiny_config(epochs=1, cluster_batching=True, cluster_size=8), out_dir=tmp_path / "cl",
          progress=False)
    assert records(tmp_path / "cl", "step")


def test_cluster_batching_trains_every_epoch_asked_for(tiny_data, tmp_path):
    """Clusters of 5 fill batches of 32 with 6 of them (30 queries): an epoch takes as many steps as
    there are such batches, more than the shuffle's, and the run trains every epoch asked for (it used
    to stop at the shuffle's step budget, epochs early, saying only that max_steps was reached)."""
    cfg = tiny_config(epochs=2, cluster_batching=True, cluster_size=5, cluster_refresh=1)
    train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    steps = records(tmp_path, "step")
    pool = len(np.flatnonzero(np.diff(tiny_data.train_Y.indptr)))
    full_batches = (pool // 5) // 6
    assert full_batches > pool // cfg.batch_size
    assert [r["epoch"] for r in records(tmp_path, "eval") if r.get("split", "test") == "test"] == [1, 2]
    assert [sum(r["epoch"] == e for r in steps) for e in (1, 2)] == [full_batches] * 2
    assert not any("max_steps" in r["text"] for r in records(tmp_path, "info"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_rank_left_waiting_for_one_that_never_joined_says_so(tmp_path):
    """Across hosts a rank that stops before joining (its run directory or data missing there) leaves
    the others waiting: measured, rank 0 of two simulated hosts waited until the timeout and died of a
    bare DistStoreError about a store key. Now the timeout names what most likely happened."""
    import subprocess
    import sys

    from _child_env import child_env

    env = child_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()),
                    RAMEN_DIST_TIMEOUT_S="2")
    done = subprocess.run([sys.executable, "-c", "from ramen import distributed; distributed.setup('cpu')"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    assert "rank 0 of 2: not every rank joined the process group within 2 s" in done.stderr
    assert "run directory and the data at the same path" in done.stderr


def _ddp_worker(rank: int, world: int, port: int, out: str, overrides: dict) -> None:
    from ramen.encoder import Encoder

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    real, calls = Encoder.tokenize, []

    def counted(self, texts, *args, **kwargs):  # which rank tokenises: rank 0 alone, the others read its cache
        calls.append(len(texts))
        return real(self, texts, *args, **kwargs)

    Encoder.tokenize = counted
    import ramen.graph as graph_module

    graph_calls = {"densify": 0, "prune_edges": 0}

    def counting(name):  # which rank densifies and prunes: rank 0 alone, the others read or receive its graphs
        real_fn = getattr(graph_module, name)

        def fn(*args, **kwargs):
            graph_calls[name] += 1
            return real_fn(*args, **kwargs)
        return fn

    for name in graph_calls:
        setattr(graph_module, name, counting(name))
    import ramen.clustering as clustering_module

    real_cluster, cluster_calls = clustering_module.cluster_batches, []

    def clustering(emb, *args, **kwargs):  # which rank clusters: rank 0 alone, the others receive its batches
        cluster_calls.append(len(emb))
        return real_cluster(emb, *args, **kwargs)

    clustering_module.cluster_batches = clustering
    real_encode, encoded = Encoder.encode, []

    def encode(self, texts, *args, **kwargs):  # each rank encodes its share of the queries to cluster
        if kwargs.get("desc") == "cluster queries":
            encoded.append(len(texts))
        return real_encode(self, texts, *args, **kwargs)

    Encoder.encode = encode
    train(synthetic("tiny", seed=0), tiny_config(**{"epochs": 1, "device": "cpu", **overrides}), out_dir=out,
          progress=False)
    Path(out, f"tokenize-calls-{rank}.json").write_text(json.dumps(calls))
    Path(out, f"graph-calls-{rank}.json").write_text(json.dumps({**graph_calls, "cluster": cluster_calls,
                                                                  "encode": encoded}))
    torch.distributed.destroy_process_group()


def _broadcast_matrices() -> list[sp.csr_matrix]:
    rng = np.random.default_rng(0)
    wide = sp.random(50, 70_000, density=0.01, format="csr", random_state=1, dtype=np.float64)
    wide.indptr, wide.indices = wide.indptr.astype(np.int64), wide.indices.astype(np.int64)
    a = sp.random(300, 40, density=0.2, format="csr", random_state=2, dtype=np.float32)
    a.data = rng.standard_normal(a.nnz).astype(np.float32)
    return [a, wide, sp.csr_matrix((7, 9), dtype=np.float32), sp.csr_matrix((0, 0), dtype=np.float32),
            sp.csr_matrix(np.eye(4, dtype=np.int8))]


def _broadcast_worker(rank: int, world: int, port: int, out: str) -> None:
    from ramen import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    d = distributed.setup("cpu")
    got = [distributed.broadcast_csr(m if d.main else None, d) for m in _broadcast_matrices()]
    batches = [distributed.broadcast_batches(b if d.main else None, d) for b in _broadcast_batches()]
    rows = _gathered_rows()
    gathered = [distributed.gather_to_main(x[distributed.shard(len(x), d)], len(x), d) for x in rows]
    assert all((g is None) != d.main for g in gathered)
    np.savez(Path(out, f"rank{rank}.npz"), **{f"{i}_{f}": getattr(m, f) for i, m in enumerate(got)
                                              for f in ("indptr", "indices", "data")},
             **{f"{i}_shape": np.array(m.shape) for i, m in enumerate(got)},
             **{f"batches{i}_{j}": b for i, bs in enumerate(batches) for j, b in enumerate(bs)},
             **{f"batches{i}_count": np.array(len(bs)) for i, bs in enumerate(batches)},
             **({f"gathered{i}": x for i, x in enumerate(gathered)} if d.main else {}))
    torch.distributed.destroy_process_group()


def _broadcast_batches() -> list[list[np.ndarray]]:
    rng = np.random.default_rng(3)
    return [[rng.permutation(40)[:8] for _ in range(5)] + [np.arange(3)], [np.arange(7)], [], [np.zeros(0, np.int64)]]


def _gathered_rows() -> list[np.ndarray]:  # rows a world of 3 splits 3, 2, 2 and 1, 0, 0
    rng = np.random.default_rng(4)
    return [rng.standard_normal((7, 5)).astype(np.float32), np.ones((1, 3), np.float32)]


def test_broadcast_gives_every_rank_rank_0s_matrix_and_batches_and_gather_stacks_the_shards(tmp_path):
    """Index and value dtypes, empty and 0 x 0 matrices, empty batches: ranks 1 and 2 receive rank 0's
    arrays exactly; rank 0 receives every rank's rows, uneven and empty shards too."""
    torch.multiprocessing.spawn(_broadcast_worker, args=(3, _free_port(), str(tmp_path)), nprocs=3)
    for rank in (1, 2):
        with np.load(tmp_path / f"rank{rank}.npz") as got:
            for i, m in enumerate(_broadcast_matrices()):
                assert tuple(got[f"{i}_shape"]) == m.shape
                for f in ("indptr", "indices", "data"):
                    assert got[f"{i}_{f}"].dtype == getattr(m, f).dtype and np.array_equal(got[f"{i}_{f}"],
                                                                                            getattr(m, f))
            for i, sent in enumerate(_broadcast_batches()):
                assert int(got[f"batches{i}_count"]) == len(sent)
                for j, b in enumerate(sent):
                    assert got[f"batches{i}_{j}"].dtype == np.int64 and np.array_equal(got[f"batches{i}_{j}"], b)
    with np.load(tmp_path / "rank0.npz") as got:
        for i, x in enumerate(_gathered_rows()):
            assert np.array_equal(got[f"gathered{i}"], x)


def _gather_worker(rank: int, world: int, port: int, out: str) -> None:
    import warnings

    from ramen import distributed

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RAMEN_DIST_TIMEOUT_S="60")
    warnings.simplefilter("error")  # torch's deprecated differentiable all_gather warned at every step
    d = distributed.setup("cpu")
    got = {}
    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        for n in (0, 1, 2, 5):
            x = _gather_input(n, dtype)[distributed.shard(n, d)].clone().requires_grad_()
            gathered = distributed.gather_rows(x, n, d)
            (gathered * _gather_weights(n, dtype, rank)).sum().backward()
            got[f"{dtype}-{n}-rows"], got[f"{dtype}-{n}-grad"] = gathered.detach().float().numpy(), x.grad.float().numpy()
    np.savez(Path(out, f"gather{rank}.npz"), **got)
    torch.distributed.destroy_process_group()


def _gather_input(n: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(n * 3, dtype=dtype).reshape(n, 3) - 4


def _gather_weights(n: int, dtype: torch.dtype, rank: int) -> torch.Tensor:
    """A loss weight per row that differs by rank, so each shard's gradient is a sum over ranks."""
    return (rank + 1) * torch.arange(1, n + 1, dtype=dtype)[:, None]


def test_gather_rows_stacks_every_shard_and_sums_each_rank_s_gradient_into_its_owner(tmp_path):
    """Uneven and empty shards (3 ranks, 0 to 5 rows), three dtypes, and no deprecation warning."""
    world = 3
    torch.multiprocessing.spawn(_gather_worker, args=(world, _free_port(), str(tmp_path)), nprocs=world)
    for rank in range(world):
        with np.load(tmp_path / f"gather{rank}.npz") as got:
            for dtype in (torch.float32, torch.bfloat16, torch.float64):
                for n in (0, 1, 2, 5):
                    assert np.array_equal(got[f"{dtype}-{n}-rows"], _gather_input(n, dtype).float().numpy())
                    total = sum(_gather_weights(n, dtype, r) for r in range(world)).expand(n, 3)
                    own = total[_shard_of(n, rank, world)].float().numpy()
                    assert np.array_equal(got[f"{dtype}-{n}-grad"], own), (rank, dtype, n)


def _shard_of(n: int, rank: int, world: int) -> slice:
    from ramen.distributed import Dist, shard

    return shard(n, Dist(rank=rank, world=world))


def _sparse_tokens() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A batch whose label and anchor groups hold fewer texts than 2 ranks: rank 1 embeds none of them."""
    g = torch.Generator().manual_seed(0)
    tokens = {}
    for key, rows in (("query", 3), ("label", 1), ("anchor:x", 1)):
        ids = torch.randint(5, 90, (rows, 6), generator=g)
        tokens[key] = (ids, torch.ones_like(ids))
    return tokens


def _sparse_grads(world: int, label_tower: bool) -> dict[str, np.ndarray]:
    """The encoder's gradients of a loss over every group of `_sparse_tokens` (DDP under a process group)."""
    import types

    from ramen import distributed
    from ramen.encoder import Encoder
    from ramen.step import BatchEncoder, embed_batch

    d = distributed.setup("cpu")
    encoder = Encoder("tiny", label_tower=label_tower, seed=0).eval()
    module = BatchEncoder(encoder, every_tower=d.enabled)
    if d.enabled:
        module = torch.nn.parallel.DistributedDataParallel(module)
    emb = embed_batch(module, types.SimpleNamespace(tokens=_sparse_tokens()), d, TrainConfig(encoder="tiny", cpu_bf16=False))
    loss = (emb["query"] @ emb["label"].T).sum() + 0.5 * (emb["query"] @ emb["anchor:x"].T).sum()
    loss.backward()
    return {name: p.grad.numpy().copy() for name, p in encoder.named_parameters() if p.grad is not None}


def _sparse_worker(rank: int, world: int, port: int, out: str, label_tower: bool) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RAMEN_DIST_TIMEOUT_S="60")
    torch.set_num_threads(1)
    np.savez(Path(out, f"grads{rank}.npz"), **_sparse_grads(world, label_tower))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("label_tower", [False, True], ids=["shared", "label-tower"])
def test_two_gloo_processes_step_when_a_rank_holds_no_text_of_a_group(tmp_path, label_tower):
    """A group with fewer texts than ranks leaves a rank's shard empty: that rank used to skip the
    gather's backward collective (and, with a label tower, DDP's reduction of that tower), so the
    others waited on it for ever. Every rank now gets the one-process gradients."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.multiprocessing.spawn(_sparse_worker, args=(2, _free_port(), str(tmp_path), label_tower), nprocs=2)
        want = _sparse_grads(1, label_tower)
    finally:
        torch.set_num_threads(threads)
    for rank in (0, 1):
        with np.load(tmp_path / f"grads{rank}.npz") as got:
            assert sorted(got.files) == sorted(want)
            for name, g in want.items():
                assert np.allclose(got[name], g, rtol=1e-4, atol=1e-6), (rank, name)


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"reg_step": "separate"}, {"warmup_epochs": 0},
                                       {"graph": False, "cluster_batching": True, "cluster_size": 4, "cluster_refresh": 1, "epochs": 2}],
                         ids=["joint", "separate", "pruning", "clusters"])
def test_two_gloo_processes_match_one_process(tiny_data, tmp_path, overrides):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each worker: the one-process losses then match theirs
    try:
        _compare_two_gloo_processes_with_one(tiny_data, tmp_path, overrides)
    finally:
        torch.set_num_threads(threads)  # later tests run with the threads they started with


def _compare_two_gloo_processes_with_one(tiny_data, tmp_path, overrides) -> None:
    one = train(tiny_data, tiny_config(**{"epochs": 1, "device": "cpu", **overrides}), out_dir=tmp_path / "one",
                progress=False)
    torch.multiprocessing.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path / "two"), overrides), nprocs=2)
    a = [r["loss"] for r in records(tmp_path / "one", "step")]
    b = [r["loss"] for r in records(tmp_path / "two", "step")]
    assert len(a) == len(b) and np.allclose(a, b, rtol=1e-4, atol=1e-6)
    calls = [json.loads((tmp_path / "two" / f"tokenize-calls-{r}.json").read_text()) for r in range(2)]
    graph = overrides.get("graph", True)
    assert len(calls[0]) >= 2 + graph and calls[1] == []  # queries, labels, anchor sets: tokenised once, by rank 0
    graph_calls = [json.loads((tmp_path / "two" / f"graph-calls-{r}.json").read_text()) for r in range(2)]
    assert (graph_calls[0]["densify"] >= 2) == graph and graph_calls[1]["densify"] == 0  # rank 1 reads rank 0's cache
    pruned = overrides.get("warmup_epochs") == 0
    assert (graph_calls[0]["prune_edges"] >= 2) == pruned and graph_calls[1]["prune_edges"] == 0  # and gets its graphs
    if pruned:
        assert records(tmp_path / "two", "prune") == records(tmp_path / "one", "prune")
    if overrides.get("cluster_batching"):  # each rank encodes half the queries, rank 0 clusters them all
        n = len(tiny_data.train_texts)
        assert [c["encode"] for c in graph_calls] == [[(n + 1) // 2] * 2, [n // 2] * 2]  # at each epoch's refresh
        assert [len(c["cluster"]) for c in graph_calls] == [2, 0]
    two = Model.load(tmp_path / "two" / "model")
    for (name, p), q in zip(one.encoder.state_dict().items(), two.encoder.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-5), name


def _stop_worker(rank: int, world: int, port: int, out: str, mode: str, dropout: float) -> None:
    """A 2-epoch run of 2 gloo processes: "crash" (every rank fails at the start of epoch 2, after
    epoch 1's evaluation and checkpoint), "signal" (SIGINT reaches rank 1 alone, inside step 3),
    "resume", or "whole" (uninterrupted)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RAMEN_DIST_TIMEOUT_S="120")
    torch.set_num_threads(1)
    if mode == "crash":
        real_epoch = train_module._train_epoch

        def crash(run, epoch, interrupts):
            if epoch == 1:
                raise RuntimeError("crashed in epoch 2")
            return real_epoch(run, epoch, interrupts)

        train_module._train_epoch = crash
    if mode == "signal-between" and rank == 1:  # while the epoch's graphs are pruned, before its first step
        real_start = train_module._start_epoch

        def start(run, epoch):
            if epoch == 1:
                os.kill(os.getpid(), signal.SIGINT)
            return real_start(run, epoch)

        train_module._start_epoch = start
    if mode == "signal" and rank == 1:
        real_step, calls = train_module.train_step, []

        def step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                os.kill(os.getpid(), signal.SIGINT)
            return real_step(*args, **kwargs)

        train_module.train_step = step
    try:
        train(synthetic("tiny", seed=0), tiny_config(epochs=2, device="cpu", dropout=dropout), out_dir=out,
              resume=mode == "resume", progress=False)
    except RuntimeError as exc:
        if mode != "crash" or "crashed in epoch 2" not in str(exc):
            raise
    except KeyboardInterrupt:
        if not mode.startswith("signal"):
            raise
        Path(out, f"stopped-{rank}.txt").write_text("interrupted")
    torch.distributed.destroy_process_group()


def _two_processes(out: Path, mode: str, dropout: float) -> None:
    torch.multiprocessing.spawn(_stop_worker, args=(2, _free_port(), str(out), mode, dropout), nprocs=2)


def _decide_worker(rank: int, world: int, port: int, out: str, case: str) -> None:
    """A decision one rank could take alone: the memory check (rank 1 has 1 MB), a setting the ranks
    cannot keep consistent without gathering, and the graph weight a selection chooses."""
    from ramen import memory, selection
    from ramen.model import Model as ModelType

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RAMEN_DIST_TIMEOUT_S="60")
    torch.set_num_threads(1)
    data, result = synthetic("tiny", seed=0), {}
    if case == "memory" and rank == 1:
        os.environ[memory.AVAILABLE_ENV] = "1MB"
    if case == "non-finite" and rank == 1:  # rank 1's own batch scores NaN at its 3rd step
        real_loss, calls = step_module.ramen_loss, []

        def poisoned(emb, *args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                emb = {**emb, "label": emb["label"] * float("nan")}
            return real_loss(emb, *args, **kwargs)

        step_module.ramen_loss = poisoned
    try:
        if case == "select":
            real, calls = ModelType.evaluate, []

            def evaluate(self, *args, **kwargs):
                calls.append(1)
                return real(self, *args, **kwargs)

            ModelType.evaluate = evaluate
            _, sel = selection.select_graph_weight(data, tiny_config(epochs=1, device="cpu"), weights=[0, 0.1],
                                                   out_dir=Path(out) / "sel", progress=False)
            result = {"chosen": sel.chosen, "held_out": sel.held_out, "evaluations": len(calls)}
        else:
            settings = {"no-gather": {"gather_across_ranks": False, "reliance": "bandit"},
                        "non-finite": {"gather_across_ranks": False}}.get(case, {})
            train(data, tiny_config(epochs=1, device="cpu", **settings), out_dir=Path(out) / f"run{rank}",
                  progress=False)
    except (memory.NotEnoughMemory, ValueError, NonFiniteLoss) as exc:
        result = {"error": type(exc).__name__, "message": str(exc)}
    Path(out, f"{case}-{rank}.json").write_text(json.dumps(result))
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("case", ["memory", "no-gather", "select", "non-finite"])
def test_two_gloo_processes_take_every_decision_together(tmp_path, case):
    """Each rank used to decide alone whether the run fits in memory (one stopped, the others waited
    in a barrier), which graph weight a selection chose (each from its own evaluation) and, scoring its
    own batch (no gather), whether its scores were finite (it stopped, the others waited in the
    backward pass); a setting that cannot keep the ranks consistent is refused on every rank."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.multiprocessing.spawn(_decide_worker, args=(2, _free_port(), str(tmp_path), case), nprocs=2)
    finally:
        torch.set_num_threads(threads)
    got = [json.loads((tmp_path / f"{case}-{r}.json").read_text()) for r in (0, 1)]
    if case == "memory":
        assert [g["error"] for g in got] == ["NotEnoughMemory"] * 2
        assert "another rank" in got[0]["message"] and "stage needs about" in got[1]["message"]
    elif case == "no-gather":
        assert [g["error"] for g in got] == ["ValueError"] * 2 and "gather_across_ranks=False" in got[1]["message"]
    elif case == "non-finite":
        assert [g["error"] for g in got] == ["NonFiniteLoss"] * 2
        assert "another rank's in-batch scores" in got[0]["message"] and "NaN or Inf" in got[1]["message"]
        assert all("epoch 1, step 2 (global step 2)" in g["message"] for g in got)
    else:
        assert got[1]["evaluations"] == 0  # rank 0 evaluates, rank 1 receives its scores
        assert got[0]["chosen"] == got[1]["chosen"] and got[0]["held_out"] == got[1]["held_out"]


def _resume_worker(rank: int, world: int, port: int, dirs: list[str], out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), RAMEN_DIST_TIMEOUT_S="60")
    torch.set_num_threads(1)
    try:
        train(synthetic("tiny", seed=0), tiny_config(epochs=2, device="cpu"), out_dir=dirs[rank], resume=True,
              progress=False)
        message = "resumed"
    except ValueError as exc:
        message = str(exc)
    Path(out, f"resume-{rank}.txt").write_text(message)
    torch.distributed.destroy_process_group()


@pytest.mark.parametrize("other", ["none", "another"])
def test_two_gloo_processes_refuse_to_resume_from_different_checkpoints(tiny_data, tmp_path, other):
    """Ranks whose run directories are not shared read no checkpoint or another one: every rank
    stops, naming them (a rank without one used to stop alone, and one with a stale one would have
    trained other weights than rank 0's, which DDP does not align after the start)."""
    train(tiny_data, tiny_config(epochs=2, device="cpu", max_steps=2), out_dir=tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    if other == "another":
        train(tiny_data, tiny_config(epochs=2, device="cpu", max_steps=3), out_dir=tmp_path / "b", progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        dirs = [str(tmp_path / "a"), str(tmp_path / "b")]
        torch.multiprocessing.spawn(_resume_worker, args=(2, _free_port(), dirs, str(tmp_path)), nprocs=2)
    finally:
        torch.set_num_threads(threads)
    for rank in (0, 1):
        assert "rank(s) [1] find no checkpoint there or another one" in (tmp_path / f"resume-{rank}.txt").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("stop, dropout", [("crash", 0.0), ("crash", 0.1), ("signal", 0.1), ("signal-between", 0.1)])
def test_two_gloo_processes_resume_exactly_after_a_failure_or_a_signal_to_one_rank(tiny_data, tmp_path, stop,
                                                                                   dropout):
    """A run that failed after an epoch's evaluation resumes under torchrun: only rank 0 holds the
    log that says the evaluation was done, and the other ranks used to redo it and wait in its barrier
    while rank 0 went on (a hang). A signal that reaches one rank stops every rank after the same
    step, with rank 0's checkpoint there (the rank used to stop alone, and rank 0 wrote none). With
    dropout, every rank continues its own random draws (rank 0's used to be given to all). The
    resumed run trains what an uninterrupted one does: one process without dropout, two with."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = tmp_path / "two"
        _two_processes(out, stop, dropout)
        if stop == "crash":
            assert [r["epoch"] for r in records(out, "eval")] == [1] and (out / CHECKPOINT).exists()
        else:  # after step 3 on every rank, or after the first step of epoch 2 (a signal held from before it)
            assert all((out / f"stopped-{r}.txt").exists() for r in (0, 1))
            steps = records(out, "step")
            assert checkpoint.load(out / CHECKPOINT)["progress"]["global_step"] == len(steps)
            assert stop == "signal-between" or len(steps) == 3
            between = stop == "signal-between"
            assert (steps[-1]["epoch"], steps[-1]["step"]) == ((2, 0) if between else (1, 2))
        _two_processes(out, "resume", dropout)
        if dropout:
            _two_processes(tmp_path / "whole", "whole", dropout)
            whole = Model.load(tmp_path / "whole" / "model")
        else:
            whole = train(tiny_data, tiny_config(epochs=2, device="cpu"), out_dir=tmp_path / "whole", progress=False)
    finally:
        torch.set_num_threads(threads)
    assert [r["epoch"] for r in records(out, "eval")] == [1, 2]
    a = [r["loss"] for r in records(tmp_path / "whole", "step")]
    b = [r["loss"] for r in records(out, "step")]
    assert len(a) == len(b) and np.allclose(a, b, rtol=1e-5 if dropout else 1e-4, atol=1e-6)
    two = Model.load(out / "model")
    for (name, p), q in zip(whole.encoder.state_dict().items(), two.encoder.state_dict().values()):
        assert torch.allclose(p, q, atol=1e-6 if dropout else 1e-5), name


def test_training_steps_run_with_dropout_and_the_result_is_in_eval_mode(tiny_data, monkeypatch):
    # A Hugging Face backbone loads in eval mode; the first Wikispeedia plain run trained without
    # dropout because nothing switched it (benchmarks/results/reproduction.md).
    seen = []

    class Recording(train_module.Encoder):
        def __init__(self, *args, **kw):
            super().__init__(*args, **kw)
            for m in self.modules():
                if isinstance(m, torch.nn.Dropout):
                    m.register_forward_hook(lambda mod, i, o: seen.append((torch.is_grad_enabled(), mod.training)))

    monkeypatch.setattr(train_module, "Encoder", Recording)
    model = train(tiny_data, tiny_config(dropout=0.1, epochs=1, eval_every=0), progress=False)
    with_grad = [training for grad, training in seen if grad]
    assert with_grad and all(with_grad)  # every optimised forward pass had dropout on
    assert not any(training for grad, training in seen if not grad)  # encodes (pruning) had it off
    assert not model.encoder.training and not any(m.training for m in model.encoder.modules())


def test_separate_reg_step_trains_from_the_same_first_loss_to_other_weights(tiny_data, tmp_path):
    joint = train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path / "joint", progress=False)
    separate = train(tiny_data, tiny_config(epochs=1, reg_step="separate"), out_dir=tmp_path / "sep", progress=False)
    a, b = records(tmp_path / "joint", "step"), records(tmp_path / "sep", "step")
    assert len(a) == len(b) > 1 and a[0]["losses"] == b[0]["losses"]  # same weights and batch at step 1
    assert a[1]["losses"] != b[1]["losses"]  # then another update
    p, q = joint.encoder.state_dict(), separate.encoder.state_dict()
    assert any(not torch.allclose(p[k], q[k]) for k in p)


# ---- interruptions land at step boundaries: exact resumes with dropout on (issue 27) ----

DROPOUT_RUN = dict(epochs=3, dropout=0.1, eval_every=1)  # pruned before epochs 2 and 3


def run_records(out):
    """What a run reports: each step's losses (the last write of a global step wins: a resumed run
    rewrites those after its checkpoint), each evaluation's metrics and the saved weights."""
    steps = {r["global_step"]: (r["loss"], r["losses"]) for r in records(out, "step")}
    evals = {r["epoch"]: r["metrics"] for r in records(out, "eval")}
    weights = Model.load(out / "model").encoder.state_dict()
    return steps, evals, weights


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    train(tiny_data, tiny_config(**DROPOUT_RUN), out_dir=out, progress=False)
    return run_records(out)


def _interrupt_once(monkeypatch, owner, name: str, at: int) -> None:
    """Sends this process SIGINT (Ctrl-C) on call number `at` of owner.name."""
    real = getattr(owner, name)
    calls = {"n": 0}

    def wrapped(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapped)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["mid-step", "between-steps", "evaluation", "pruning", "kill-9"])
def test_interrupted_run_with_dropout_resumes_exactly(tiny_data, tmp_path, monkeypatch, uninterrupted, where):
    from ramen.reliance import Reliance

    cfg = tiny_config(**DROPOUT_RUN)
    with monkeypatch.context() as m:
        if where == "mid-step":  # inside step 13's loss: the step finishes, then the run stops
            _interrupt_once(m, step_module, "ramen_loss", 13)
        elif where == "between-steps":  # at the top of the loop, before step 5
            _interrupt_once(m, Reliance, "multipliers", 5)
        elif where == "evaluation":  # evaluating after epoch 1
            _interrupt_once(m, Model, "evaluate", 1)
        elif where == "pruning":  # the pruning before epoch 3
            _interrupt_once(m, train_module, "prune_graphs", 2)
        else:  # kill -9 in epoch 2: nothing runs, the last checkpoint is epoch 1's
            def killed(*args, **kwargs):
                raise SystemExit("killed")

            real = train_module.train_step
            calls = {"n": 0}

            def step(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == 12:
                    checkpoint.save = lambda *a, **k: None  # a killed process writes nothing more
                    raise SystemExit("killed")
                return real(*args, **kwargs)

            m.setattr(train_module, "train_step", step)
            m.setattr(checkpoint, "save", checkpoint.save)  # restored after the block
        with pytest.raises((KeyboardInterrupt, SystemExit)):
            train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    train(tiny_data, cfg, out_dir=tmp_path, resume=True, progress=False)
    steps, evals, weights = run_records(tmp_path)
    want_steps, want_evals, want_weights = uninterrupted
    assert steps == want_steps
    assert evals == want_evals
    assert all(torch.equal(weights[k], want_weights[k]) for k in want_weights)


def test_cli_resume_command_continues_the_run_with_its_own_settings(tmp_path, monkeypatch):
    from ramen.__main__ import main

    out = tmp_path / "run"
    args = ["train", "--data", "synthetic:tiny", "--out", str(out), "--encoder", "tiny", "--epochs", "2",
            "--batch-size", "32", "--lr", "1e-3"]
    _interrupt_once(monkeypatch, step_module, "ramen_loss", 5)
    assert main(args) == 130  # interrupted; it prints the resume command
    monkeypatch.undo()
    saved = json.loads((out / "run.json").read_text())
    with pytest.raises(SystemExit, match="holds an unfinished run: continue it with .*--resume"):
        main(args)  # the same command again, --resume forgotten: the unfinished run is kept
    assert json.loads((out / "run.json").read_text()) == saved and (out / CHECKPOINT).exists()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "run.json").read_text()) == saved  # not rewritten with defaults
    assert records(out, "step")[-1]["global_step"] == 18
    with pytest.raises(SystemExit, match="lr .*run: 0.001, given: 0.5"):
        main(["train", "--out", str(out), "--resume", "--lr", "0.5"])
    with pytest.raises(SystemExit, match="holds no run"):
        main(["train", "--out", str(tmp_path / "none"), "--resume"])
    assert main(args) == 0  # over a finished run: a new one may replace it
    shutil.rmtree(out / "model")  # as if stopped before it finished
    with pytest.raises(SystemExit, match="start it over with --overwrite"):
        main(args)
    assert main(args + ["--overwrite"]) == 0 and (out / "model").is_dir()


def test_a_torchrun_rank_other_than_0_leaves_run_json_to_rank_0(tmp_path, monkeypatch):
    """Rank 0 alone checks the run directory (and refuses a forgotten --resume); the other ranks used
    to write run.json meanwhile, so the unfinished run's settings were replaced by the new ones."""
    from ramen.__main__ import main

    out = tmp_path / "run"
    out.mkdir()
    (out / CHECKPOINT).write_bytes(b"unfinished")
    (out / "run.json").write_text('{"data": "synthetic:tiny"}')
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(SystemExit, match="no-such-data"):  # a rank that trains on (here it stops at the data)
        main(["train", "--data", str(tmp_path / "no-such-data"), "--out", str(out), "--encoder", "tiny"])
    assert (out / "run.json").read_text() == '{"data": "synthetic:tiny"}'


def test_resume_with_other_settings_is_a_clear_error(tiny_data, tmp_path):
    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"other settings.*lr \(saved 0.001, now 0.01\)"):
        train(tiny_data, tiny_config(epochs=1, lr=1e-2), out_dir=tmp_path, resume=True, progress=False)


def test_graph_weights_a_plain_run_never_reads_do_not_block_its_resume(tiny_data, tmp_path):
    """A plain run (graph off) resumes whatever its lambdas say (a graph-weight selection's weight-0
    candidate saved before weight_config set them to 0); turning the graph on is another run."""
    train(tiny_data, tiny_config(epochs=1, graph=False, lambda_x=0.1, lambda_z=0.1), out_dir=tmp_path, progress=False)
    train(tiny_data, tiny_config(epochs=1, graph=False, lambda_x=0.0, lambda_z=0.0), out_dir=tmp_path, resume=True,
          progress=False)
    # nor do the other graph settings (a candidate saved before weight_config set them to the defaults)
    train(tiny_data, tiny_config(epochs=1, graph=False, walk_length=5, reg_step="separate"), out_dir=tmp_path,
          resume=True, progress=False)
    with pytest.raises(ValueError, match="graph"):
        train(tiny_data, tiny_config(epochs=1, graph=True, lambda_x=0.1, lambda_z=0.1), out_dir=tmp_path,
              resume=True, progress=False)


def test_settings_a_run_would_leave_unread_are_refused_before_anything_is_written(tiny_data, tmp_path):
    """TrainConfig(lambda_x=0.5) trained the plain encoder without a word (the graph is off by default),
    and so did a cluster schedule without cluster batching."""
    for cfg, named in ((TrainConfig(encoder="tiny", lambda_x=0.5), r"lambda_x=0.5 only applies with graph=True"),
                       (TrainConfig(encoder="tiny", reg_step="separate", prune=False),
                        r"prune=False, reg_step='separate' only apply with graph=True"),
                       (TrainConfig(encoder="tiny", graph=True, cluster_size=16, aug_gt_top_k=3),
                        r"cluster_size=16, aug_gt_top_k=3 only apply with aug_gt=True / cluster_batching=True, so this config "
                        r"would ignore them")):
        with pytest.raises(ValueError, match=named):
            train(tiny_data, cfg, out_dir=tmp_path / "r", progress=False)
        assert not (tmp_path / "r").exists()
        assert cfg.without_idle().idle_settings() == []
    # a graph weight of 0 is the graph off: not refused; nor is the same setting with its switch on
    plain = TrainConfig(encoder="tiny", epochs=1, batch_size=32, eval_every=0, cpu_bf16=False, lambda_x=0.0,
                        lambdas={"hyperlink": [0.0, 0.0]})
    assert plain.idle_settings() == []
    assert TrainConfig(graph=True, lambda_x=0.5, reg_step="separate").idle_settings() == []
    train(tiny_data, plain, out_dir=tmp_path / "plain", progress=False)


def test_graph_settings_under_aug_gt_are_refused_and_aug_gt_trains_as_before(tiny_data, tmp_path):
    """AugGT trains no regulariser: graph=True and the graph's settings beside it were read by nothing."""
    for cfg, named in ((TrainConfig(encoder="tiny", aug_gt=True, graph=True), "graph=True only applies with aug_gt=False"),
                       (TrainConfig(encoder="tiny", aug_gt=True, lambda_x=0.5),
                        "lambda_x=0.5 only applies with graph=True and aug_gt=False"),
                       (TrainConfig(encoder="tiny", anchor_sets=["hyperlink"]),
                        r"anchor_sets=\['hyperlink'\] only applies with graph=True or aug_gt=True")):
        with pytest.raises(ValueError, match=named):
            train(tiny_data, cfg, out_dir=tmp_path / "r", progress=False)
        assert not (tmp_path / "r").exists()
    aug = TrainConfig(encoder="tiny", aug_gt=True, anchor_sets=["hyperlink"], aug_gt_top_k=3)
    assert aug.idle_settings() == [] and "anchor_sets" not in aug.idle_fields()
    # a graph run saved with aug_gt (before this check) still resumes: both configs leave graph unread
    assert TrainConfig(aug_gt=True, graph=True).without_idle() == TrainConfig(aug_gt=True)


def test_a_selection_with_the_separate_step_trains_its_plain_candidate(tiny_data, tmp_path):
    """reg_step='separate' serves a selection's graph candidates; its weight-0 candidate used to stop
    on "reg_step='separate' needs the graph", so no selection could take the separate step."""
    from ramen.selection import select_graph_weight, weight_config

    cfg = tiny_config(epochs=1, graph=False, reg_step="separate", walk_length=5)
    zero = weight_config(cfg, 0.0)
    assert not zero.graph and zero.reg_step == "joint" and zero.walk_length == TrainConfig().walk_length
    assert weight_config(cfg, 0.1).reg_step == "separate" and weight_config(cfg, 0.1).walk_length == 5
    _, sel = select_graph_weight(tiny_data, cfg, weights=[0, 0.1], out_dir=tmp_path / "sel", progress=False)
    assert sorted(sel.held_out) == ["0", "0.1"]


def test_resume_on_other_data_is_a_clear_error_naming_the_part(tiny_data, tmp_path):

    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, progress=False)
    relabelled = dataclasses.replace(tiny_data, train_Y=tiny_data.train_Y[::-1].tocsr())  # same texts and sizes
    with pytest.raises(ValueError, match=r"other data than it was trained on: training queries differ"):
        train(relabelled, tiny_config(epochs=1), out_dir=tmp_path, resume=True, progress=False)
    name = next(iter(tiny_data.anchor_sets))
    a = tiny_data.anchor_sets[name]
    edited = dataclasses.replace(tiny_data, anchor_sets={**tiny_data.anchor_sets, name: dataclasses.replace(
        a, texts=[t + "." if i == len(a.texts) // 2 else t for i, t in enumerate(a.texts)])})
    with pytest.raises(ValueError, match=f"anchor set '{name}' differ"):
        train(edited, tiny_config(epochs=1), out_dir=tmp_path, resume=True, progress=False)
    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, resume=True, progress=False)  # the same data resumes


def test_a_checkpoint_whose_batches_or_graphs_do_not_fit_the_run_is_refused(tiny_data, tmp_path):
    cfg = tiny_config(epochs=1, cluster_batching=True, cluster_size=4)
    train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    state = checkpoint.load(tmp_path / CHECKPOINT)
    assert state["batches"]
    bad = {**state, "batches": [np.array([0, 10**6])] + list(state["batches"][1:])}
    checkpoint.save(tmp_path / CHECKPOINT, bad)  # a consistent file (its SHA-256 recomputed) with a foreign id
    with pytest.raises(ValueError, match=r"saved batch 0 is not a list of training query ids in \[0, 300\)"):
        train(tiny_data, cfg, out_dir=tmp_path, resume=True, progress=False)
    name = next(iter(state["graphs"]))
    indptr, indices, data, shape = state["graphs"][name]["query"]
    graphs = {**state["graphs"], name: {**state["graphs"][name], "query": (indptr, indices, data, (shape[0], shape[1] + 1))}}
    checkpoint.save(tmp_path / CHECKPOINT, {**state, "graphs": graphs})
    with pytest.raises(ValueError, match=f"saved query graph of anchor set '{name}' has shape"):
        train(tiny_data, cfg, out_dir=tmp_path, resume=True, progress=False)


def test_a_new_run_in_a_used_directory_starts_a_new_log(tiny_data, tmp_path):
    train(tiny_data, tiny_config(epochs=2), out_dir=tmp_path, progress=False)
    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, progress=False)
    assert [r["epoch"] for r in records(tmp_path, "eval")] == [1]  # not the first run's two as well
    assert len(records(tmp_path, "step")) == len({r["global_step"] for r in records(tmp_path, "step")})


def test_a_log_line_cut_short_is_dropped_on_resume_and_a_bad_one_named(tiny_data, tmp_path):
    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, progress=False)
    log = tmp_path / "log.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"event": "step", "epo')  # stopped while appending
    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, resume=True, progress=False)
    assert all(json.loads(line) for line in log.read_text().splitlines())
    lines = whole.splitlines()
    log.write_text("\n".join(lines[:2] + ["not json"] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=r"log.jsonl:3: not a JSON record"):
        train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path, resume=True, progress=False)


def test_a_diverging_run_stops_naming_the_step_component_and_checkpoint(tiny_data, tmp_path, monkeypatch):
    """With a huge learning rate the embeddings go non-finite; the CPU kernel's check of the scores
    must stop the run with where it happened, not a bare kernel message."""
    def poisoned(n, real, emb, *args, **kwargs):
        if n == 12:
            emb = {**emb, "label": emb["label"] * float("nan")}
        return real(emb, *args, **kwargs)

    wrap_loss(monkeypatch, poisoned)
    with pytest.raises(NonFiniteLoss, match=r"component L: scores S = q @ c.T.*NaN or Inf.* at epoch 2, step 2 "
                                            r"\(global step 11\)\. The last good checkpoint is .*checkpoint"):
        train(tiny_data, tiny_config(epochs=2), out_dir=tmp_path, progress=False)


def test_a_resume_evaluates_the_split_a_stop_left_unevaluated(tiny_data, tmp_path, monkeypatch):
    """A stop between the test split's evaluation and the held-out one's never evaluated the held-out
    split of that epoch: the resume counted the epoch as evaluated once any split had a record (a
    helper's kill test; the study's held-out curves lost a point)."""
    held = dataclasses.replace(tiny_data, test_texts=tiny_data.train_texts[:20], test_Y=tiny_data.train_Y[:20],
                               test_filter=None, anchor_sets={})
    real, calls = Model.evaluate, []

    def stop_at_the_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epoch 1's held-out split, after its test split was logged
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Model, "evaluate", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, tiny_config(epochs=2), out_dir=tmp_path, progress=False, eval_sets={"heldout": held})
    monkeypatch.undo()
    assert [(r["split"], r["epoch"]) for r in records(tmp_path, "eval")] == [("test", 1)]
    train(tiny_data, tiny_config(epochs=2), out_dir=tmp_path, resume=True, progress=False, eval_sets={"heldout": held})
    evals = [(r["split"], r["epoch"]) for r in records(tmp_path, "eval")]
    assert evals == [("test", 1), ("heldout", 1), ("test", 2), ("heldout", 2)]


def test_eval_sets_are_evaluated_beside_the_test_split(tiny_data, tmp_path):

    held = dataclasses.replace(tiny_data, test_texts=tiny_data.train_texts[:20], test_Y=tiny_data.train_Y[:20],
                               test_filter=None, anchor_sets={})
    train(tiny_data, tiny_config(epochs=2), out_dir=tmp_path, progress=False, eval_sets={"heldout": held})
    evals = [(r["split"], r["epoch"]) for r in records(tmp_path, "eval")]
    assert evals == [("test", 1), ("heldout", 1), ("test", 2), ("heldout", 2)]
    on_train = [r["metrics"]["P@1"] for r in records(tmp_path, "eval") if r["split"] == "heldout"]
    ref = Model.load(tmp_path / "model").evaluate(held, k=5, progress=False)
    assert on_train[-1] == pytest.approx(float(ref["P"][0]), abs=1e-12)  # the same evaluation as a loaded model's
    other = dataclasses.replace(held, label_texts=list(reversed(held.label_texts)))
    with pytest.raises(ValueError, match="eval_sets\\['other'\\].*labels"):
        train(tiny_data, tiny_config(epochs=1), eval_sets={"other": other}, progress=False)


def test_max_steps_cuts_the_run_short_then_evaluates_and_saves(tiny_data, tmp_path):
    model = train(tiny_data, tiny_config(epochs=3, max_steps=11), out_dir=tmp_path, progress=False)
    steps = records(tmp_path, "step")
    assert [r["global_step"] for r in steps] == list(range(1, 12))  # 9 steps an epoch: epoch 2 cut at step 2
    assert steps[-1]["lr"] == pytest.approx(1e-4)  # the schedule spans the 11 steps: 1/10 of the peak at the last
    assert any("max_steps 11 reached at epoch 2, step 2" in r["text"] for r in records(tmp_path, "info"))
    assert [r["epoch"] for r in records(tmp_path, "eval")] == [1, 2]  # after epoch 1, and in the cut epoch 2
    assert checkpoint.load(tmp_path / CHECKPOINT)["progress"] == {"epoch": 1, "step": 2, "global_step": 11}
    assert Model.load(tmp_path / "model").label_texts == model.label_texts
    train(tiny_data, tiny_config(epochs=3, max_steps=11), out_dir=tmp_path, resume=True, progress=False)
    assert len(records(tmp_path, "step")) == 11  # resumed at the limit: nothing more to train
    with pytest.raises(ValueError, match="max_steps"):
        tiny_config(max_steps=0).validate()


@pytest.mark.parametrize("max_steps", [1, 11])
def test_each_step_logs_the_learning_rate_it_trained_with(tiny_data, tmp_path, monkeypatch, max_steps):
    """A step's `lr` is the optimizer's rate during that step (it was read after the scheduler had
    moved on: the next step's, so the first step logged the second's and the last 0.0)."""
    used = []
    real = train_module.train_step

    def step(module, encoder, optimizer, *args, **kwargs):
        used.append(optimizer.param_groups[0]["lr"])
        return real(module, encoder, optimizer, *args, **kwargs)

    monkeypatch.setattr(train_module, "train_step", step)
    cfg = tiny_config(epochs=2, max_steps=max_steps)
    train(tiny_data, cfg, out_dir=tmp_path, progress=False)
    logged = [r["lr"] for r in records(tmp_path, "step")]
    schedule = step_module.lr_lambda(max_steps, cfg.warmup)
    assert logged == used == [cfg.lr * schedule(i) for i in range(max_steps)]
    assert logged[0] == cfg.lr and logged[-1] > 0  # one warm-up step: the peak first, then a decay short of 0


def test_pruning_anchor_sets_in_blocks_gives_the_same_graphs(tiny_data, monkeypatch):
    """An anchor set is embedded and pruned a block at a time where that holds less memory: the
    pruned graphs are those of the whole set embedded at once, bit for bit."""
    import ramen.training_graphs as tg
    from ramen import memory
    from ramen.encoder import Encoder
    from ramen.runlog import RunLog

    cfg = tiny_config(prune_threshold=0.2)
    log = RunLog(None, echo=False)
    raw = tg.build_graphs(tiny_data, cfg, None, log)
    encoder = Encoder("tiny", max_length=16)
    whole = tg.prune_graphs(raw, encoder, tiny_data, cfg, log, 0, 0, progress=False)
    assert not memory.prune_in_blocks(len(tiny_data.label_texts), encoder.dim, 0)  # the tiny sets: whole
    monkeypatch.setattr(memory, "PRUNE_BLOCK_BYTES", 4 * encoder.dim * cfg.encode_batch_size)  # one batch a block
    monkeypatch.setattr(memory, "prune_in_blocks", lambda *args: True)
    blocked = tg.prune_graphs(raw, encoder, tiny_data, cfg, log, 0, 0, progress=False)
    assert max(len(tiny_data.anchor_sets[n].texts) for n in raw) > 2 * cfg.encode_batch_size
    for name, g in whole.items():
        for side in ("query", "label"):
            a, b = getattr(g, side), getattr(blocked[name], side)
            assert (a is None) == (b is None)
            if a is not None:
                assert 0 < a.nnz < getattr(raw[name], side).nnz
                assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("indptr", "indices", "data"))


def test_a_stop_in_the_final_phase_resumes_to_the_log_of_an_uninterrupted_run(tiny_data, tmp_path, monkeypatch):
    """A stop after the final evaluation (while the index or the model is written), then a resume,
    logged the final evaluation and the index twice (a helper's kill test, 35 of 35 trials)."""
    cfg = tiny_config(epochs=2)
    full, part = tmp_path / "full", tmp_path / "part"
    train(tiny_data, cfg, out_dir=full, progress=False)
    real = Model.save

    def stop_saving(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Model, "save", stop_saving)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_data, cfg, out_dir=part, progress=False)
    monkeypatch.setattr(Model, "save", real)
    assert len(records(part, "index")) == 1 and not (part / "model").exists()
    train(tiny_data, cfg, out_dir=part, resume=True, progress=False)
    for event in ("step", "eval", "index"):
        want = [{k: v for k, v in r.items() if k != "qps"} for r in records(full, event)]
        assert [{k: v for k, v in r.items() if k != "qps"} for r in records(part, event)] == want, event
    assert (part / "model").is_dir() and (part / "config.json").is_file()


def test_a_run_cut_by_max_steps_at_an_epoch_end_is_evaluated_once_there(tiny_data, tmp_path):
    train(tiny_data, tiny_config(epochs=1), out_dir=tmp_path / "one", progress=False)
    steps = len(records(tmp_path / "one", "step"))
    train(tiny_data, tiny_config(epochs=3, max_steps=steps, eval_every=1), out_dir=tmp_path / "cut", progress=False)
    assert [(r["epoch"], r["global_step"]) for r in records(tmp_path / "cut", "eval")] == [(1, steps)]
