"""The off-host device harness (tests/device_harness.py): training steps, encoding, pruning,
prediction and evaluation run on the meta device, standing in for a GPU, with no tensor left on
the host and no host read inside a step. CPU-only CI sees here what a GPU would."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from device_harness import META, DeviceDiscipline, DeviceViolation, StandInEncoder
from ramen import distributed
from ramen.batching import BatchSampler, Graphs, attach_tokens
from ramen.config import TrainConfig
from ramen.losses import component_names
from ramen.reg_step import make_reg_optimizer
from ramen.reliance import Reliance
from ramen.datasets.synthetic import synthetic
import ramen.step as step_module
from ramen.step import BatchEncoder, lr_lambda, make_optimizer, train_step
from ramen.training_graphs import used_anchor_sets


@pytest.fixture(scope="module")
def tiny():
    return synthetic("tiny", seed=0)


def step_setup(ds, **overrides):
    """Everything `train_step` takes, the model on meta and the batch on the host as the sampler makes it."""
    cfg = TrainConfig(**{**dict(encoder="tiny", graph=True, batch_size=16, densify=False, prune=False), **overrides}).validate()
    encoder = StandInEncoder(label_tower=cfg.label_tower).train()
    names = used_anchor_sets(ds, cfg)
    graphs = {}
    for n in names:
        lx, lz = cfg.lambdas_for(n)
        a = ds.anchor_sets[n]
        graphs[n] = Graphs(a.train_X_A.tocsr() if lx else None, a.label_A.tocsr() if lz else None)
    sampler = BatchSampler(ds.train_Y, graphs, cfg.batch_size, seed=0, num_random_negatives=cfg.random_negatives)
    tq, tl = encoder.tokenize(ds.train_texts, progress=False), encoder.tokenize(ds.label_texts, progress=False)
    ta = {n: encoder.tokenize(ds.anchor_sets[n].texts, progress=False) for n in graphs}
    if cfg.cluster_batching:  # NGAME batches: whole clusters of the queries' embeddings (made on the host)
        from ramen.clustering import cluster_batches

        q_emb = encoder.encode(tq, 64, progress=False)
        sampler.set_batches(cluster_batches(q_emb[sampler.pool], sampler.pool, cfg.cluster_size, cfg.batch_size, seed=0))
    batch = attach_tokens(sampler.batch(0, 0), tq, tl, ta)
    module = BatchEncoder(encoder).to(META)
    optimizer = make_optimizer(module, cfg)  # fused, as on a GPU (`fused_on_meta`)
    reg_optimizer = make_reg_optimizer(optimizer) if cfg.reg_step == "separate" else None
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(10, cfg.warmup))
    weights = {c: w for c, w in cfg.component_weights(list(graphs)).items() if w}
    reliance = Reliance([c for c in component_names(list(graphs)) if c in weights], mode=cfg.reliance)
    return dict(module=module, encoder=encoder, optimizer=optimizer, scheduler=scheduler, batch=batch,
                d=distributed.Dist(device=META), cfg=cfg, weights=weights, reliance=reliance,
                reg_optimizer=reg_optimizer)


@pytest.fixture(autouse=True)
def fused_on_meta(monkeypatch):
    """The trainer's AdamW fused on the meta device, as it is on CUDA (torch checks the device when the
    optimizer is made and at its first step; its fused kernel has a meta implementation)."""
    from torch.optim import optimizer as torch_optimizer

    supported = torch_optimizer._get_fused_kernels_supported_devices()
    monkeypatch.setattr(torch_optimizer, "_get_fused_kernels_supported_devices", lambda: [*supported, "meta"])
    monkeypatch.setattr(step_module, "FUSED_DEVICES", (*step_module.FUSED_DEVICES, "meta"))


STEP_OPTIONS = {
    "plain": dict(graph=False),
    "ramen": dict(),
    "paper-recipe": dict(lambda_x=1.0, lambda_z=1.0, reg_num_negatives=10),
    "cluster-batching": dict(cluster_batching=True, cluster_size=4),
    "separate-reg-step": dict(reg_step="separate"),
    "random-negatives": dict(random_negatives=1),
    "bandit": dict(reliance="bandit"),
    "label-tower": dict(label_tower=True),
    "softmax": dict(softmax_temperature=0.1),
}


@pytest.mark.parametrize("option", list(STEP_OPTIONS))
def test_training_step_runs_on_the_device_with_no_host_tensor_and_no_host_read(tiny, option):
    s = step_setup(tiny, **STEP_OPTIONS[option])
    before = [p for p in s["module"].parameters()]
    with DeviceDiscipline(META) as mode:
        stats = train_step(**s)
    assert mode.transfers > 0  # the batch crossed, through ramen.transfer
    values = [stats.loss, *stats.parts.values(), *stats.spread.values(), *stats.rewards.values()]
    assert all(v.device.type == "meta" and v.dim() == 0 for v in values)
    assert set(stats.parts) >= {"L"} and (option == "plain") == (len(stats.parts) == 1)
    assert (option == "bandit") == bool(stats.rewards)
    assert all(p.device.type == "meta" for p in before)
    state = [v for st in s["optimizer"].state.values() for v in st.values() if isinstance(v, torch.Tensor)]
    assert state and all(v.device.type == "meta" for v in state)  # fused AdamW stepped on the device, its count too
    assert all(g["fused"] for opt in (s["optimizer"], s["reg_optimizer"]) if opt for g in opt.param_groups)


@pytest.mark.parametrize("option", ["ramen", "separate-reg-step"])
def test_multi_rank_gather_path_stays_on_the_device(tiny, option, monkeypatch):
    """Rank 0 of 2 with gathered in-batch candidates: the shard, the padding and the gather stay on
    the device (the collectives stand in: each rank's shard is this rank's)."""
    def gather(out, x, *a, **k):  # (output, input), as NCCL's: the output holds world blocks of x
        assert out.shape == (2 * x.shape[0], *x.shape[1:]) and out.is_contiguous() and x.is_contiguous()
        calls.append("gather")

    def scatter(out, x, *a, **k):  # (output, input): the output is this rank's block of x
        assert x.shape == (2 * out.shape[0], *out.shape[1:]) and out.is_contiguous() and x.is_contiguous()
        calls.append("scatter")

    calls = []
    monkeypatch.setattr(torch.distributed, "get_backend", lambda *a, **k: "nccl")
    monkeypatch.setattr(torch.distributed, "all_gather_into_tensor", gather)
    monkeypatch.setattr(torch.distributed, "reduce_scatter_tensor", scatter)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t, *a, **k: None)
    s = step_setup(tiny, **STEP_OPTIONS[option])
    s["d"] = distributed.Dist(rank=0, world=2, device=META)
    with DeviceDiscipline(META):
        stats = train_step(**s)
    assert stats.loss.device.type == "meta"
    # every gathered group's backward scatters (twice where the regularisers take a step of their own)
    assert calls.count("scatter") >= calls.count("gather") > 0
    assert option != "ramen" or calls.count("scatter") == calls.count("gather")


def test_step_statistics_read_back_in_one_copy():
    from ramen.step import StepStats

    stats = StepStats(torch.tensor(1.5), {"L": torch.tensor(1.0), "Rx/a": torch.tensor(0.5)},
                      {"query": torch.tensor(0.1), "label": torch.tensor(0.2)}, {"Rx/a": torch.tensor(-0.25)})
    assert stats.read() == (1.5, {"L": 1.0, "Rx/a": 0.5}, {"query": pytest.approx(0.1), "label": pytest.approx(0.2)},
                            {"Rx/a": -0.25})


def test_harness_catches_host_tensors_host_reads_and_stray_copies():
    x = torch.empty(4, 3, device=META)
    idx = torch.tensor([0, 2])
    with pytest.raises(DeviceViolation, match="left behind on the host"):
        with DeviceDiscipline(META):
            x[idx]  # a CPU index into a device tensor: torch lets it pass on meta
    with pytest.raises(DeviceViolation, match="host read"):
        with DeviceDiscipline(META):
            bool(x.sum() > 0)
    with pytest.raises(DeviceViolation, match="outside ramen.transfer.to_device"):
        with DeviceDiscipline(META):
            idx.to(META)
    with pytest.raises(DeviceViolation, match="to the host"):
        with DeviceDiscipline(META):
            x.cpu()
    from ramen import transfer

    with DeviceDiscipline(META) as mode:
        x[transfer.to_device(idx, META)]
    assert mode.transfers == 1


def _meta_encoder(**kw) -> StandInEncoder:
    return StandInEncoder(**kw).to(META)


def test_encode_runs_on_the_device_reading_back_once_per_batch(tiny):
    enc = _meta_encoder()
    with DeviceDiscipline(META, host_reads=True) as mode:
        out = enc.encode(tiny.label_texts, batch_size=32, progress=False)
    assert out.shape == (len(tiny.label_texts), enc.dim) and out.dtype == np.float32
    assert mode.host_reads == -(-len(tiny.label_texts) // 32) and mode.transfers == 2 * mode.host_reads


def test_pruning_runs_on_the_device(tiny):
    from ramen.runlog import RunLog
    from ramen.training_graphs import prune_graphs

    cfg = TrainConfig(encoder="tiny", encode_batch_size=64)
    raw = {n: Graphs(a.train_X_A.tocsr(), a.label_A.tocsr()) for n, a in tiny.anchor_sets.items()}
    encoder = _meta_encoder()
    with DeviceDiscipline(META, host_reads=True):
        pruned = prune_graphs(raw, encoder, tiny, cfg, RunLog(None, echo=False), 0, 0, progress=False)
    assert set(pruned) == set(raw)


def test_predict_and_evaluate_run_on_the_device(tiny):
    from ramen.model import Model

    model = Model(_meta_encoder(), tiny.label_texts)
    with DeviceDiscipline(META, host_reads=True):
        ids, scores = model.predict(tiny.test_texts[:5], k=3)
        metrics = model.evaluate(tiny, k=3, progress=False)
    assert ids.shape == (5, 3) and scores.shape == (5, 3)
    assert metrics["P"].shape == (3,)


def test_device_top_k_matches_the_exact_index():
    from ramen.index import LabelIndex
    from ramen.model import device_top_k

    rng = np.random.default_rng(0)
    labels = rng.normal(size=(500, 8)).astype(np.float32)
    labels /= np.linalg.norm(labels, axis=1, keepdims=True)
    queries = rng.normal(size=(37, 8)).astype(np.float32)
    index = LabelIndex(8, exact=True)
    index.add(np.arange(500), labels)
    ref, _ = index.search(queries, 7)
    for block in (1 << 28, 4 * 500 * 5):  # one block, and blocks of 5 queries
        assert np.array_equal(device_top_k(queries, labels, 7, "cpu", block_bytes=block), ref)
    padded = device_top_k(queries, labels[:3], 5, "cpu")
    assert (padded[:, 3:] == -1).all() and np.array_equal(np.sort(padded[:, :3], 1), np.tile([0, 1, 2], (37, 1)))


def test_evaluation_on_the_device_path_matches_the_host_path(tiny, monkeypatch):
    """The accelerator path (blocked top-k where the encoder lives) gives the host path's metrics,
    with the token caches and label vectors a training run hands it."""
    from ramen.model import Model

    enc = StandInEncoder(seed=3)
    host = Model(enc, tiny.label_texts).evaluate(tiny, k=3, progress=False)
    import ramen.model

    monkeypatch.setattr(ramen.model, "_accelerator", lambda device: True)  # the CPU stands in for one
    model = Model(enc, tiny.label_texts)
    q_tokens, l_tokens = enc.tokenize(tiny.test_texts, progress=False), enc.tokenize(tiny.label_texts, progress=False)
    device = model.evaluate(tiny, k=3, progress=False, query_tokens=q_tokens,
                            label_vectors=model.label_vectors(l_tokens, progress=False))
    assert model.index is None  # searched without building an index
    for key in ("P", "nDCG", "PSP", "R"):
        np.testing.assert_allclose(device[key], host[key], atol=1e-12)


def test_process_group_timeout_covers_rank_zeros_evaluation(monkeypatch):
    import datetime

    monkeypatch.delenv(distributed.TIMEOUT_ENV, raising=False)
    assert distributed.timeout() == datetime.timedelta(hours=3)
    monkeypatch.setenv(distributed.TIMEOUT_ENV, "90")
    assert distributed.timeout() == datetime.timedelta(seconds=90)
    for bad in ("0", "-5", "soon", "nan"):
        monkeypatch.setenv(distributed.TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match="RAMEN_DIST_TIMEOUT_S"):
            distributed.timeout()


def test_device_setting_is_checked_with_a_clear_error(monkeypatch):
    assert distributed.pick_device("cpu") == torch.device("cpu")
    for bad, match in (("gpu", "not a device"), ("meta", "cpu or cuda"), ("cuda:0", "no CUDA GPU")):
        if bad == "cuda:0" and torch.cuda.is_available():
            continue
        with pytest.raises(ValueError, match=match):
            distributed.pick_device(bad)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.pick_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert distributed.pick_device("cuda:0") == torch.device("cuda", 0)
    with pytest.raises(ValueError, match="sees 2 CUDA GPU.*no cuda:7"):
        distributed.pick_device("cuda:7")
