"""Issue 8's levers that stayed: the reliance bandit, random negatives, the separate regulariser step;
and the retired ones' clear errors."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ramen.batching import BatchSampler, Graphs
from ramen.reliance import Reliance, gradient_agreement


def csr(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    return torch.tensor(indptr, dtype=torch.int64), torch.tensor([c for r in rows for c in r], dtype=torch.int64)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def test_bandit_starts_at_one_and_follows_rewards():
    r = Reliance(["Rx/a", "Rz/a", "Rx/b"], mode="bandit", lr=0.5)
    assert r.multipliers() == pytest.approx({"Rx/a": 1.0, "Rz/a": 1.0, "Rx/b": 1.0})
    for _ in range(20):
        r.update({"Rx/a": 0.8, "Rz/a": 0.0, "Rx/b": -0.8})
    m = r.multipliers()
    assert m["Rx/a"] > 1.0 > m["Rx/b"] and m["Rx/b"] < 0.05
    assert sum(m.values()) < 4  # the "none" arm keeps its share: total reliance is bounded
    state = r.state_dict()
    other = Reliance(["Rx/a", "Rz/a", "Rx/b"], mode="bandit", lr=0.5)
    other.load_state_dict(state)
    assert other.multipliers() == m
    summary = r.summary()
    assert summary["Rx/a"]["mean_reward"] == pytest.approx(0.8)


def test_gradient_agreement_is_the_cosine_of_embedding_gradients():
    q = unit(4, 5, 0).requires_grad_()
    z = unit(3, 5, 1).requires_grad_()
    a = unit(6, 5, 2)
    L = (q @ z.T).pow(2).sum()
    parts = {"L": L, "Rx/s": (q @ a.T).sum(), "Rz/s": -(z @ a.T).sum()}
    rewards = gradient_agreement(parts, {"query": q, "label": z})
    gL = torch.autograd.grad(L, q, retain_graph=True)[0].flatten()
    gR = torch.autograd.grad(parts["Rx/s"], q)[0].flatten()
    assert float(rewards["Rx/s"]) == pytest.approx(float(gL @ gR / gL.norm() / gR.norm()))
    assert -1 <= float(rewards["Rz/s"]) <= 1


def test_random_negatives_join_the_batch_as_negatives_only():
    rng = np.random.default_rng(0)
    Y = sp.random(80, 60, density=0.05, format="csr", random_state=4, dtype=np.float32)
    Y.data[:] = 1
    XA = sp.csr_matrix((np.ones(100, np.float32), (rng.integers(0, 80, 100), rng.integers(0, 30, 100))), shape=(80, 30))
    XA.sum_duplicates()
    graphs = {"s": Graphs(XA, None)}
    base = BatchSampler(Y, graphs, 16, seed=1)
    extra = BatchSampler(Y, graphs, 16, seed=1, num_random_negatives=2)
    grew = 0
    for step in range(base.steps_per_epoch()):
        b0, b1 = base.batch(0, step), extra.batch(0, step)
        np.testing.assert_array_equal(b0.query_ids, b1.query_ids)
        assert set(b0.label_ids) <= set(b1.label_ids)  # the sampled positives are kept
        grew += len(b1.label_ids) - len(b0.label_ids)
        pos, excl = b1.label_pos, b1.label_excl
        for r, q in enumerate(b1.query_ids):
            cols = set(pos[1][pos[0][r]:pos[0][r + 1]].tolist()) | set(excl[1][excl[0][r]:excl[0][r + 1]].tolist())
            true = {j for j, l in enumerate(b1.label_ids) if Y[q, l] > 0}
            assert cols == true  # a row's true labels are positive or excluded, never a negative
    assert grew > 0


def test_extra_negative_counts_are_validated():
    from ramen.config import TrainConfig

    with pytest.raises(ValueError, match="random_negatives"):
        TrainConfig(random_negatives=True).validate()


def numpy_adamw(p, grads, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """Reference AdamW (decoupled decay, bias-corrected moments), one parameter, over a list of gradients."""
    p, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    steps = []
    for t, g in enumerate(grads, 1):
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        steps.append(-lr * wd * p - lr * (m / (1 - betas[0] ** t)) / (np.sqrt(v / (1 - betas[1] ** t)) + eps))
    return steps


def test_separate_reg_step_is_the_task_adamw_step_plus_a_scaled_adam_step_of_the_regulariser():
    from ramen.distributed import Dist
    from ramen.reg_step import make_reg_optimizer, separate_step

    rng = np.random.default_rng(0)
    w0, x, a = rng.normal(size=(3, 4)), rng.normal(size=(5, 4)), rng.normal(size=(5, 3))
    lr, wd, scale = 0.05, 0.01, 0.3
    w = torch.nn.Parameter(torch.tensor(w0))
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=wd)
    reg_opt = make_reg_optimizer(opt)
    task_g, reg_g, p = [], [], w0.copy()
    for step in range(4):
        xs = x * (1 + step)  # other data at each step
        # reference: the gradients at the current weights, each fed to its own AdamW, the steps summed
        task_g.append(2 * (p @ xs.T) @ xs)  # of sum((W x)^2)
        reg_g.append(-a.T @ xs)  # of -sum(a . W x)
        p = p * (1 - lr * wd) + numpy_adamw(p, task_g, lr, 0.0)[-1] + numpy_adamw(p, reg_g, lr * scale, 0.0)[-1]

        wx = w @ torch.tensor(xs).T
        separate_step((wx ** 2).sum(), -(torch.tensor(a).T * wx).sum(), scale, opt, reg_opt, Dist(), grad_clip=None)
        np.testing.assert_allclose(w.detach().numpy(), p, rtol=1e-10, atol=1e-12)


def test_a_retired_lever_stops_with_the_commit_that_still_runs_it(tmp_path):
    """Old run.json files list every field: a retired lever at its default still loads; set to
    anything else (a dict, a config file, a flag), it stops with the commit that can run it."""
    import json
    import subprocess
    import sys

    from ramen.config import RETIRED, RETIRED_AT, TrainConfig

    old = {**TrainConfig().to_dict(), **RETIRED}  # a run.json written before the retirement
    assert TrainConfig.from_dict(old) == TrainConfig()
    for name, value in [("soft_prune", True), ("anchor_bank", True), ("prune_quantile", 0.2), ("reliance", "schedule"),
                        ("regulariser", "pull"), ("graph_negatives", 1)]:
        with pytest.raises(ValueError, match=rf"{name}=.*retired.*{RETIRED_AT}"):
            TrainConfig.from_dict({**old, name: value})
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"epochs": 2, "reg_head": True}))
    with pytest.raises(ValueError, match=rf"old\.json: reg_head=True.*git checkout {RETIRED_AT}"):
        TrainConfig.from_file(path)
    cli = subprocess.run([sys.executable, "-m", "ramen", "train", "--data", "synthetic:tiny", "--out", str(tmp_path / "r"),
                          "--soft-prune"], capture_output=True, text=True, timeout=300)
    assert cli.returncode != 0 and "--soft_prune=True" in cli.stderr and RETIRED_AT in cli.stderr, cli.stderr[-500:]
    import dataclasses

    assert len(dataclasses.fields(TrainConfig)) <= 50  # issue 25's bound
