"""Issue 8's levers: weighted and pull-only regularisers, reliance schedule and bandit, anchor identity."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from ramen.batching import BatchSampler, Graphs, identity_graphs
from ramen.losses import positive_cosines, pull_loss, weighted_triplet
from ramen.ops import triplet_loss
from ramen.reliance import Reliance, gradient_agreement


def csr(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    return torch.tensor(indptr, dtype=torch.int64), torch.tensor([c for r in rows for c in r], dtype=torch.int64)


def unit(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)


def reference_weighted(q, c, pos_rows, excl_rows, w, margin, k):
    """Loop reference: sum_i w_i sum_(p, n) hinge / sum_i w_i (#triplets of row i)."""
    num, den = 0.0, 0.0
    S = q @ c.T
    for i in range(q.shape[0]):
        banned = set(pos_rows[i]) | set(excl_rows[i])
        cand = sorted((j for j in range(c.shape[0]) if j not in banned), key=lambda j: (-float(S[i, j].detach()), j))[:k]
        for p in pos_rows[i]:
            for n in cand:
                num = num + w[i] * torch.relu(S[i, n] - S[i, p] + margin)
                den += float(w[i])
    return num / den if den else num * 0


def test_weighted_triplet_matches_a_loop_reference_and_reduces_to_the_mean():
    q, c = unit(5, 8, 0).requires_grad_(), unit(9, 8, 1).requires_grad_()
    pos_rows, excl_rows = [[0], [1, 2], [], [3], [8]], [[4], [], [5], [], [0, 1, 2, 3, 4, 5, 6]]
    pos, excl = csr(pos_rows), csr(excl_rows)
    w = torch.tensor([0.5, 1.0, 0.3, 0.0, 2.0], dtype=torch.float64)
    got = weighted_triplet(q, c, pos, excl, w, margin=0.3, num_negatives=3)
    ref = reference_weighted(q, c, pos_rows, excl_rows, w, 0.3, 3)
    assert torch.allclose(got, ref)
    g1 = torch.autograd.grad(got, [q, c])
    g2 = torch.autograd.grad(ref, [q, c])
    assert all(torch.allclose(a, b) for a, b in zip(g1, g2))
    ones = weighted_triplet(q, c, pos, excl, torch.ones(5, dtype=torch.float64), margin=0.3, num_negatives=3)
    assert torch.allclose(ones, triplet_loss(q, c, pos, exclude=excl, margin=0.3, num_negatives=3))


def test_weighted_triplet_without_weight_is_zero_not_nan():
    q, c = unit(2, 4, 0), unit(3, 4, 1)
    out = weighted_triplet(q, c, csr([[0], [1]]), csr([[], []]), torch.zeros(2, dtype=torch.float64),
                           margin=0.3, num_negatives=2)
    assert float(out) == 0.0


def test_pull_loss_and_positive_cosines():
    q, c = unit(3, 6, 2).requires_grad_(), unit(4, 6, 3)
    pos = csr([[1], [0, 3], []])
    expected = torch.stack([1 - q[0] @ c[1], 1 - q[1] @ c[0], 1 - q[1] @ c[3]]).mean()
    assert torch.allclose(pull_loss(q, c, pos), expected)
    cos = positive_cosines(q, c, pos)
    assert torch.allclose(cos, torch.stack([q[0] @ c[1], (q[1] @ c[0] + q[1] @ c[3]) / 2, q.new_zeros(())]))
    assert not cos.requires_grad


def test_reliance_schedule_ramps_holds_and_decays():
    r = Reliance(["Rx/a"], mode="schedule", total_steps=100, warmup=0.2, decay_from=0.6)
    values = [r.multipliers(s)["Rx/a"] for s in (0, 10, 20, 50, 60, 80, 100)]
    assert values == pytest.approx([0.0, 0.5, 1.0, 1.0, 1.0, 0.5, 0.0])
    assert Reliance(["Rx/a"], mode="fixed").multipliers(5) == {"Rx/a": 1.0}


def test_bandit_starts_at_one_and_follows_rewards():
    r = Reliance(["Rx/a", "Rz/a", "Rx/b"], mode="bandit", lr=0.5)
    assert r.multipliers(0) == pytest.approx({"Rx/a": 1.0, "Rz/a": 1.0, "Rx/b": 1.0})
    for _ in range(20):
        r.update({"Rx/a": 0.8, "Rz/a": 0.0, "Rx/b": -0.8})
    m = r.multipliers(0)
    assert m["Rx/a"] > 1.0 > m["Rx/b"] and m["Rx/b"] < 0.05
    assert sum(m.values()) < 4  # the "none" arm keeps its share: total reliance is bounded
    state = r.state_dict()
    other = Reliance(["Rx/a", "Rz/a", "Rx/b"], mode="bandit", lr=0.5)
    other.load_state_dict(state)
    assert other.multipliers(0) == m
    summary = r.summary(0)
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


@pytest.mark.parametrize("mode", ["exclude", "positive"])
def test_anchor_identity_never_makes_a_true_label_a_negative(mode):
    rng = np.random.default_rng(0)
    labels = [f"label {i}" for i in range(30)]
    anchors = [f"Label  {i}" if i % 2 == 0 else f"anchor {i}" for i in range(40)]  # even anchors = labels
    Y = sp.random(50, 30, density=0.1, format="csr", random_state=1, dtype=np.float32)
    Y.data[:] = 1
    XA = sp.csr_matrix((np.ones(200, np.float32), (rng.integers(0, 50, 200), rng.integers(0, 40, 200))), shape=(50, 40))
    LA = sp.csr_matrix((np.ones(90, np.float32), (rng.integers(0, 30, 90), rng.integers(0, 40, 90))), shape=(30, 40))
    XA.sum_duplicates(), LA.sum_duplicates()
    same = identity_graphs(Y, labels, anchors)
    assert same.label.nnz == 15 and same.label[4, 4] == 1  # anchor "Label  4" is label 4 (case, spacing)
    sampler = BatchSampler(Y, {"s": Graphs(XA, LA)}, 16, seed=2, identity={"s": same}, identity_mode=mode)
    for step in range(sampler.steps_per_epoch()):
        b = sampler.batch(0, step)
        ab = b.anchors["s"]
        for rows, graph_same, pos, excl in ((b.query_ids, same.query, ab.query_pos, ab.query_excl),
                                            (b.label_ids, same.label, ab.label_pos, ab.label_excl)):
            P = np.zeros((len(rows), len(ab.ids)), bool)
            E = np.zeros_like(P)
            for r in range(len(rows)):
                P[r, pos[1][pos[0][r]:pos[0][r + 1]].numpy()] = True
                E[r, excl[1][excl[0][r]:excl[0][r + 1]].numpy()] = True
            assert not (P & E).any()
            S = graph_same[rows][:, ab.ids].toarray() > 0
            assert (S <= (P | E)).all()  # never a negative
            if mode == "positive":
                assert (S <= P).all()


def test_ramen_loss_puts_the_regularisers_in_the_reg_head_space_when_given():
    from types import SimpleNamespace

    from ramen.losses import ramen_loss

    anchors = SimpleNamespace(ids=np.arange(5), query_pos=csr([[0], [1, 2], [], [4]]), query_excl=csr([[], [], [], []]),
                              label_pos=csr([[3], [0], [1]]), label_excl=csr([[], [], []]))
    batch = SimpleNamespace(label_pos=csr([[0], [1], [2], [0, 1]]), label_excl=csr([[], [], [], []]),
                            anchors={"set": anchors})
    plain = {"query": unit(4, 8, 1), "label": unit(3, 8, 2), "anchor:set": unit(5, 8, 3)}
    mapped = {"reg:query": unit(4, 8, 4), "reg:label": unit(3, 8, 5), "reg:anchor:set": unit(5, 8, 6)}
    weights = {"Rx/set": 0.5, "Rz/set": 2.0}
    kw = dict(weights=weights, num_negatives=None, reg_num_negatives=None)
    total, parts = ramen_loss({**plain, **mapped}, batch, **kw)
    base_total, base = ramen_loss(plain, batch, **kw)
    swapped = {"query": mapped["reg:query"], "label": mapped["reg:label"], "anchor:set": mapped["reg:anchor:set"]}
    _, in_head = ramen_loss(swapped, batch, **kw)
    assert torch.equal(parts["L"], base["L"])  # the task loss stays in the retrieval space
    for comp in ("Rx/set", "Rz/set"):
        assert torch.equal(parts[comp], in_head[comp])
        assert not torch.equal(parts[comp], base[comp])
    assert torch.allclose(total, parts["L"] + 0.5 * parts["Rx/set"] + 2.0 * parts["Rz/set"])
    assert torch.allclose(base_total, base["L"] + 0.5 * base["Rx/set"] + 2.0 * base["Rz/set"])


def test_anchor_label_negatives_are_the_labels_a_querys_anchors_stand_for_minus_its_own():
    from ramen.batching import anchor_label_negatives

    rng = np.random.default_rng(3)
    labels = [f"label {i}" for i in range(12)]
    anchors = [f"label {i}" if i < 8 else f"other {i}" for i in range(10)] + ["LABEL 3"]  # two anchors for label 3
    Y = sp.csr_matrix((np.ones(20, np.float32), (rng.integers(0, 9, 20), rng.integers(0, 12, 20))), shape=(9, 12))
    rows = rng.integers(0, 9, 40)
    rows[rows == 4] = 5  # query 4 has no anchor
    XA = sp.csr_matrix((np.ones(40, np.float32), (rows, rng.integers(0, 11, 40))), shape=(9, 11))
    Y.sum_duplicates(), XA.sum_duplicates()
    same = identity_graphs(Y, labels, anchors)
    got = anchor_label_negatives(Y, [XA], [same.label]).toarray()
    ref = np.zeros((9, 12))
    for q in range(9):
        for a in XA[q].indices:
            t = anchors[a].lower()
            if t in labels and Y[q, labels.index(t)] == 0:
                ref[q, labels.index(t)] = 1
    np.testing.assert_array_equal(got, ref)
    assert got[4].sum() == 0 and got.sum() >= 5
    with pytest.raises(ValueError, match="do not fit"):
        anchor_label_negatives(Y, [XA[:, :5]], [same.label])


@pytest.mark.parametrize("kind", ["graph", "random"])
def test_extra_negatives_join_the_batch_as_negatives_only(kind):
    rng = np.random.default_rng(0)
    Y = sp.random(80, 60, density=0.05, format="csr", random_state=4, dtype=np.float32)
    Y.data[:] = 1
    N = sp.random(80, 60, density=0.1, format="csr", random_state=5, dtype=np.float32)
    N.data[:] = 1
    N = (N - N.multiply(Y)).tocsr()
    N.eliminate_zeros()
    XA = sp.csr_matrix((np.ones(100, np.float32), (rng.integers(0, 80, 100), rng.integers(0, 30, 100))), shape=(80, 30))
    XA.sum_duplicates()
    graphs = {"s": Graphs(XA, None)}
    base = BatchSampler(Y, graphs, 16, seed=1)
    extra = (BatchSampler(Y, graphs, 16, seed=1, negatives=N, num_graph_negatives=2) if kind == "graph"
             else BatchSampler(Y, graphs, 16, seed=1, num_random_negatives=2))
    grew = 0
    for step in range(base.steps_per_epoch()):
        b0, b1 = base.batch(0, step), extra.batch(0, step)
        np.testing.assert_array_equal(b0.query_ids, b1.query_ids)
        assert set(b0.label_ids) <= set(b1.label_ids)  # the sampled positives are kept
        grew += len(b1.label_ids) - len(b0.label_ids)
        added = sorted(set(b1.label_ids) - set(b0.label_ids))
        if kind == "graph":  # every added label is some row's graph negative
            assert all(N[b1.query_ids][:, a].nnz > 0 for a in added)
        pos, excl = b1.label_pos, b1.label_excl
        for r, q in enumerate(b1.query_ids):
            cols = set(pos[1][pos[0][r]:pos[0][r + 1]].tolist()) | set(excl[1][excl[0][r]:excl[0][r + 1]].tolist())
            true = {j for j, l in enumerate(b1.label_ids) if Y[q, l] > 0}
            assert cols == true  # a row's true labels are positive or excluded, never a negative
    assert grew > 0
    # without extra negatives the draws are exactly the ones before the lever existed
    again = BatchSampler(Y, graphs, 16, seed=1, negatives=N, num_graph_negatives=0)
    np.testing.assert_array_equal(again.batch(0, 0).label_ids, base.batch(0, 0).label_ids)


def test_extra_negative_counts_are_validated():
    from ramen.config import TrainConfig

    with pytest.raises(ValueError, match="graph_negatives"):
        TrainConfig(graph_negatives=-1).validate()
    with pytest.raises(ValueError, match="random_negatives"):
        TrainConfig(random_negatives=True).validate()


def test_degree_weighted_anchor_draws_follow_inverse_degree():
    from ramen.batching import degree_cumulative, sample_neighbours

    # row 0 links a hub (col 0, degree 4) and a rare anchor (col 3, degree 1); row 2 has no anchor
    G = sp.csr_matrix(np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 0], [1, 0, 0, 0]], np.float32))
    rows = np.repeat(np.arange(5), 20000)
    for power in (0.0, 1.0, 2.0):
        cum = degree_cumulative(G, power) if power else None
        got = sample_neighbours(G, rows, np.random.default_rng(0), cum)
        assert (got[rows == 2] == -1).all()
        degree = np.asarray((G > 0).sum(0)).ravel()
        for r in (0, 1, 3):
            cols = G[r].indices
            p = degree[cols] ** -power / (degree[cols] ** -power).sum()
            freq = np.array([(got[rows == r] == c).mean() for c in cols])
            assert set(got[rows == r]) <= set(cols)
            np.testing.assert_allclose(freq, p, atol=0.01)
    empty = sp.csr_matrix((3, 4), dtype=np.float32)
    assert (sample_neighbours(empty, np.arange(3), np.random.default_rng(0), degree_cumulative(empty, 1.0)) == -1).all()


def test_degree_power_changes_only_the_anchor_draws():
    rng = np.random.default_rng(1)
    Y = sp.random(60, 30, density=0.1, format="csr", random_state=2, dtype=np.float32)
    Y.data[:] = 1
    XA = sp.csr_matrix((np.ones(300, np.float32), (rng.integers(0, 60, 300), rng.zipf(1.5, 300) % 25)), shape=(60, 25))
    LA = sp.csr_matrix((np.ones(150, np.float32), (rng.integers(0, 30, 150), rng.zipf(1.5, 150) % 25)), shape=(30, 25))
    XA.sum_duplicates(), LA.sum_duplicates()
    base = BatchSampler(Y, {"s": Graphs(XA, LA)}, 16, seed=3)
    hub = BatchSampler(Y, {"s": Graphs(XA, LA)}, 16, seed=3, anchor_degree_power=1.0)
    hubs0 = hubs1 = 0
    top = np.argsort(-np.bincount(XA.indices, minlength=25))[:3]
    for epoch in range(20):
        for step in range(base.steps_per_epoch()):
            b0, b1 = base.batch(epoch, step), hub.batch(epoch, step)
            np.testing.assert_array_equal(b0.label_ids, b1.label_ids)
            for b, a in ((b0, "h0"), (b1, "h1")):
                pos = b.anchors["s"].query_pos
                ids = b.anchors["s"].ids[pos[1].numpy()]
                n = int(np.isin(ids, top).sum())
                hubs0, hubs1 = (hubs0 + n, hubs1) if a == "h0" else (hubs0, hubs1 + n)
    assert hubs1 < 0.7 * hubs0  # hubs are drawn less often as a row's positive anchor


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
