"""ramen.ops.triplet_loss against a plain torch reference: values, gradients, edge cases, bad input."""
from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

import ramen.ops as ops
from ramen import _C
from ramen.ops import mine_hard_negatives, triplet_loss

CUDA = torch.cuda.is_available() and _C.has_cuda()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU and a ramen build with CUDA kernels")


# ---- the plain reference: loops over rows and positives, a full sort for the negatives ----

def reference_triplet(q, c, pos_lists, exc_lists=None, *, margin=0.3, num_negatives=None, reduction="mean",
                      softmax_temperature=None):
    scores = q @ c.T  # (B, M)
    b, m = scores.shape
    rows, triplets = [], 0
    for i in range(b):
        positives = sorted(set(pos_lists[i]))
        excluded = set(exc_lists[i]) - set(positives) if exc_lists is not None else set()
        candidates = [j for j in range(m) if j not in positives and j not in excluded]
        candidates.sort(key=lambda j: (-scores[i, j].item(), j))  # hardest first, lower column on ties
        negatives = candidates if num_negatives is None else candidates[:num_negatives]
        row = scores.new_zeros(())
        for p in positives if negatives else []:
            hinge = scores[i, negatives] - scores[i, p] + margin  # (|N|,)
            if softmax_temperature is None:
                row = row + torch.relu(hinge).sum()
            else:
                violating = hinge > 0
                if violating.any():
                    w = torch.softmax(scores[i, negatives][violating] / softmax_temperature, 0).detach()
                    row = row + (w * hinge[violating]).sum()
        triplets += len(positives) * len(negatives)
        rows.append(row)
    rows = torch.stack(rows) if rows else scores.new_zeros(0)
    if reduction == "none":
        return rows
    if reduction == "sum":
        return rows.sum()
    return rows.sum() / max(triplets, 1)


# ---- inputs ----

def csr(lists, device="cpu"):
    indptr = torch.tensor([0] + list(itertools.accumulate(len(x) for x in lists)), dtype=torch.int64, device=device)
    indices = torch.tensor([j for x in lists for j in x], dtype=torch.int64, device=device)
    return indptr, indices


def mask(lists, m, device="cpu"):
    out = torch.zeros(len(lists), m, dtype=torch.bool, device=device)
    for i, x in enumerate(lists):
        out[i, list(x)] = True
    return out


def random_problem(b=7, m=11, d=5, *, seed=0, dtype=torch.float64, max_pos=3, max_exc=2):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, d, generator=g, dtype=dtype)
    c = torch.randn(m, d, generator=g, dtype=dtype)
    # sizes 0..max_pos with repeats (duplicates) allowed; excluded ids may overlap positives
    pos = [torch.randint(0, m, (int(torch.randint(0, max_pos + 1, (1,), generator=g)),), generator=g).tolist()
           for _ in range(b)]
    exc = [torch.randint(0, m, (int(torch.randint(0, max_exc + 1, (1,), generator=g)),), generator=g).tolist()
           for _ in range(b)]
    return q, c, pos, exc


def run_both(q, c, pos, exc, fmt, **kw):
    """Loss and (dq, dc) of ours and of the reference, with a random grad_out."""
    m = c.shape[0]
    sets = (lambda x: csr(x)) if fmt == "csr" else (lambda x: mask(x, m))
    results = []
    for fn, p, e in ((triplet_loss, sets(pos), None if exc is None else sets(exc)),
                     (reference_triplet, pos, exc)):
        qq, cc = q.clone().requires_grad_(), c.clone().requires_grad_()
        if fn is triplet_loss:
            loss = fn(qq, cc, p, exclude=e, **kw)
        else:
            loss = fn(qq, cc, p, e, **kw)
        g = torch.randn(loss.shape, generator=torch.Generator().manual_seed(1), dtype=loss.dtype)
        (loss * g).sum().backward()
        results.append((loss.detach(), qq.grad, cc.grad))
    return results


def assert_close(ours, ref, dtype):
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, **tol)


@pytest.fixture(params=["dense", "sparse", "torch"])
def grad_form(request, monkeypatch):
    """Forces the CPU op to keep G = dloss/dS dense (BLAS backward) or sparse (the CSR kernels), or
    to mine with plain torch ops (`mine_reference`: what a CUDA device runs on a build without CUDA)."""
    monkeypatch.setattr(ops, "_FORCE_SPARSE_GRAD", request.param == "sparse")
    monkeypatch.setattr(ops, "_FORCE_TORCH", request.param == "torch")
    return request.param


# ---- values and gradients against the reference ----

@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("num_negatives", [None, 1, 3, 30])
@pytest.mark.parametrize("with_exclude", [False, True])
@pytest.mark.parametrize("temperature", [None, 0.1])
def test_matches_reference(reduction, num_negatives, with_exclude, temperature, grad_form):
    for seed, dtype, fmt in ((0, torch.float64, "csr"), (1, torch.float32, "mask")):
        q, c, pos, exc = random_problem(seed=seed, dtype=dtype)
        ours, ref = run_both(q, c, pos, exc if with_exclude else None, fmt, reduction=reduction,
                             num_negatives=num_negatives, softmax_temperature=temperature)
        assert_close(ours, ref, dtype)


@pytest.mark.parametrize("num_negatives", [5, 16, 17, 40])  # insertion buffer (<= 16) and nth_element
def test_selection_paths_match_reference(num_negatives, grad_form):
    q, c, pos, exc = random_problem(b=12, m=64, d=8, seed=3, max_pos=4, max_exc=6)
    ours, ref = run_both(q, c, pos, exc, "csr", num_negatives=num_negatives, reduction="sum")
    assert_close(ours, ref, torch.float64)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("num_negatives", [None, 2])
def test_gradcheck(reduction, num_negatives, grad_form):
    q, c, pos, exc = random_problem(b=5, m=8, d=3, seed=4)
    q.requires_grad_()
    c.requires_grad_()
    f = lambda q_, c_: triplet_loss(q_, c_, csr(pos), exclude=csr(exc), num_negatives=num_negatives,  # noqa: E731
                                    reduction=reduction, margin=0.5)
    assert f(q, c).abs().sum() > 0  # not a trivially zero loss
    assert torch.autograd.gradcheck(f, (q, c), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(torch.float32, 4e-7), (torch.float64, 1e-15)])
def test_softmax_weights_accurate_to_a_few_ulp(dtype, rtol):
    # the kernel's vectorised exp against exp in float64 of the same (rounded) arguments, down to
    # arguments where exp underflows (temperature 0.001: exp(-300))
    g = torch.Generator().manual_seed(27)
    s = torch.cat([torch.zeros(1), torch.linspace(-9, 0.29, 2001)[1:] + torch.rand(2000, generator=g) * 1e-3]).to(dtype)
    for temperature in (0.05, 0.01, 0.001):
        _, grad, _ = mine_hard_negatives(s[None], csr([[0]]), margin=0.3, softmax_temperature=temperature)
        neg = s[1:]
        arg = ((neg - neg.max()) / torch.tensor(temperature, dtype=dtype)).double()
        w = torch.where(neg + 0.3 > 0, arg.exp(), 0.0)
        ref = w / w.sum()
        big = ref > 1e-30
        torch.testing.assert_close(grad[0, 1:].double()[big], ref[big], rtol=rtol, atol=0)
        assert grad[0, 1:][~big].abs().max() <= 1e-30


def test_mine_hard_negatives_grad_is_dloss_dscores():
    q, c, pos, exc = random_problem(b=6, m=9, seed=5)
    scores = (q @ c.T).requires_grad_()
    ref_rows = []
    for i in range(6):  # reference per-row loss as a function of the scores (q = S row, c = I)
        ref_rows.append(reference_triplet(scores[i:i + 1], torch.eye(9, dtype=scores.dtype), [pos[i]], [exc[i]],
                                          num_negatives=3, reduction="sum"))
    torch.stack(ref_rows).sum().backward()
    loss, grad, count = mine_hard_negatives(scores.detach(), csr(pos), exclude=csr(exc), num_negatives=3)
    torch.testing.assert_close(loss, torch.stack(ref_rows).detach())
    torch.testing.assert_close(grad, scores.grad)
    n_pos = [len(set(p)) for p in pos]
    assert count.tolist() == [n * min(3, 9 - len(set(p) | set(e))) if n else 0
                              for n, p, e in zip(n_pos, pos, exc)]


# ---- edge cases ----

def test_rows_without_positives_add_nothing(grad_form):
    q, c, _, _ = random_problem(seed=6)
    pos = [[], [2], [], [0, 5], [], [], [1]]
    ours, ref = run_both(q, c, pos, None, "csr", reduction="none")
    assert_close(ours, ref, torch.float64)
    assert ours[0][[0, 2, 4, 5]].eq(0).all()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_no_triplets_gives_zero_loss_and_grads(reduction, grad_form):
    q, c, _, _ = random_problem(seed=7)
    qq, cc = q.clone().requires_grad_(), c.clone().requires_grad_()
    loss = triplet_loss(qq, cc, csr([[]] * 7), reduction=reduction)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and loss.eq(0).all()
    assert qq.grad.eq(0).all() and cc.grad.eq(0).all()


def test_every_column_excluded(grad_form):
    q, c, _, _ = random_problem(seed=8)
    pos = [[0]] * 7
    everything = [list(range(11))] * 7
    loss = triplet_loss(q, c, csr(pos), exclude=csr(everything))  # positive wins, no candidates left
    assert loss.item() == 0.0
    some_rows = [list(range(11)) if i % 2 else [3] for i in range(7)]
    ours, ref = run_both(q, c, pos, some_rows, "mask", reduction="none", num_negatives=4)
    assert_close(ours, ref, torch.float64)
    assert ours[0][1::2].eq(0).all() and ours[0][0::2].gt(0).any()


def test_fewer_candidates_than_num_negatives(grad_form):
    q, c, pos, exc = random_problem(b=6, m=8, seed=9)
    for reduction in ("mean", "none"):
        a = triplet_loss(q, c, csr(pos), exclude=csr(exc), num_negatives=100, reduction=reduction)
        b = triplet_loss(q, c, csr(pos), exclude=csr(exc), num_negatives=None, reduction=reduction)
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_many_positives_and_huge_degree(grad_form):
    q, c, _, _ = random_problem(b=4, m=200, d=6, seed=10)
    pos = [list(range(0, 200, 2)), list(range(150)), [7], list(range(200))]  # the last: no candidates
    for k in (None, 10):
        ours, ref = run_both(q, c, pos, None, "csr", num_negatives=k, reduction="mean")
        assert_close(ours, ref, torch.float64)


def test_duplicate_positive_ids_count_once(grad_form):
    q, c, _, _ = random_problem(seed=11)
    once = [[1], [2, 3], [], [4], [0], [5], [6]]
    repeated = [[1, 1, 1], [3, 2, 3, 2], [], [4, 4], [0], [5, 5], [6]]
    for reduction in ("mean", "none"):
        a = triplet_loss(q, c, csr(once), reduction=reduction, num_negatives=3)
        b = triplet_loss(q, c, csr(repeated), reduction=reduction, num_negatives=3)
        m = triplet_loss(q, c, mask(repeated, 11), reduction=reduction, num_negatives=3)
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, m, rtol=0, atol=0)


def test_positive_also_excluded_stays_positive(grad_form):
    q, c, _, _ = random_problem(seed=12)
    pos = [[1]] * 7
    a = triplet_loss(q, c, csr(pos), exclude=csr([[1, 4]] * 7), reduction="none")
    b = triplet_loss(q, c, csr(pos), exclude=csr([[4]] * 7), reduction="none")
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ties_prefer_lower_columns():
    # row 0: the positive (col 5) scores 1.0; cols 1, 2, 3 tie at 0.9; k = 2 takes cols 1 and 2.
    scores = torch.tensor([[0.5, 0.9, 0.9, 0.9, 0.1, 1.0]], dtype=torch.float64)
    _, grad, count = mine_hard_negatives(scores, csr([[5]]), num_negatives=2)
    assert grad[0].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0, -2.0] and count.tolist() == [2]
    # both selection paths, ties straddling the k-th place; +0.0 and -0.0 tie too
    row = torch.zeros(1, 101, dtype=torch.float32)
    row[0, 40:] = -0.0
    row[0, 100] = 0.2  # the positive
    for k in (7, 16, 17, 30):
        _, grad, _ = mine_hard_negatives(row, csr([[100]]), num_negatives=k)
        assert grad[0, :k].eq(1).all() and grad[0, k:100].eq(0).all(), k


def test_hinge_exactly_at_zero_has_zero_gradient():
    scores = torch.tensor([[0.25, 0.25, 0.0]], dtype=torch.float64)  # col 1 ties the positive col 0
    loss, grad, _ = mine_hard_negatives(scores, csr([[0]]), margin=0.0)
    assert loss.item() == 0.0 and grad.eq(0).all()


def test_result_independent_of_thread_count():
    q, c, pos, exc = random_problem(b=100, m=300, d=16, seed=13, max_pos=5, max_exc=5)
    scores = (q @ c.T).float()
    for kw in (dict(num_negatives=10), dict(num_negatives=None, softmax_temperature=0.1), dict(num_negatives=50)):
        outs = [mine_hard_negatives(scores, csr(pos), exclude=csr(exc), num_threads=t, **kw) for t in (1, 2, 3, 7)]
        for other in outs[1:]:
            for a, b in zip(outs[0], other):
                assert torch.equal(a, b)


_REFUSED_THREADS_CHILD = """
import os, pathlib, resource, sys
import numpy as np, torch
from ramen import _C
from ramen.ops import mine_hard_negatives
torch.set_num_threads(1)
text = ("3000 50\\n" + "".join(f"{i % 50}:1 {(i % 50 + 1 + i % 7) % 50}:2\\n" for i in range(3000))).encode()
scores = torch.from_numpy(np.random.default_rng(0).standard_normal((600, 400)).astype(np.float32))
indptr, indices = torch.arange(0, 601), torch.arange(600) % 400
def run(threads):
    parsed = _C.parse_sparse_text(text, num_threads=threads, chunk_bytes=64)
    return [*parsed[2:], *(t.numpy() for t in mine_hard_negatives(scores, (indptr, indices), num_negatives=5,
                                                                    num_threads=threads))]
want = run(1)
tasks = sum(1 for t in pathlib.Path("/proc").glob("[0-9]*/task/[0-9]*")
            if int(next(l for l in (t / "status").read_text().splitlines() if l.startswith("Uid:")).split()[1])
            == os.getuid())
resource.setrlimit(resource.RLIMIT_NPROC, (tasks + int(sys.argv[1]),) * 2)
got = run(4)
assert all(np.array_equal(a, b) for a, b in zip(want, got)), "another answer with fewer threads"
print("same")
"""


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run a child under a thread limit")
@pytest.mark.parametrize("spare", [0, 1])
def test_kernels_finish_with_the_threads_the_system_allows(ramen_env, tmp_path, spare):
    """A process or cgroup limit can refuse a kernel's second or third thread; the kernel used to
    abort the process (a joinable std::thread destroyed while the error unwound) or fail. Now the
    threads it got share the work, and the answer is the one-thread answer."""
    # a real uid other than root makes RLIMIT_NPROC count; no capabilities, so none exempts it
    cmd = ["setpriv", "--ruid", "65534", "--securebits", "+noroot,+noroot_locked", "--bounding-set", "-all",
           "--inh-caps", "-all", "--", sys.executable, "-c", _REFUSED_THREADS_CHILD, str(spare)]
    env = {**ramen_env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "same", out.stderr[-2000:]


def test_inputs_left_untouched_and_int32_csr_accepted():
    q, c, pos, exc = random_problem(seed=14)
    q0, c0 = q.clone(), c.clone()
    indptr, indices = csr(pos)
    a = triplet_loss(q, c, (indptr.int(), indices.int()), num_negatives=3)
    b = triplet_loss(q, c, (indptr, indices), num_negatives=3)
    assert torch.equal(q, q0) and torch.equal(c, c0) and torch.equal(a, b)


def test_empty_batches(grad_form):
    d = 4
    q, c = torch.zeros(0, d, requires_grad=True), torch.randn(5, d, requires_grad=True)
    loss = triplet_loss(q, c, csr([]))
    loss.backward()
    assert loss.item() == 0.0 and c.grad.eq(0).all()
    q, c = torch.randn(3, d), torch.zeros(0, d)
    assert triplet_loss(q, c, csr([[], [], []]), reduction="sum").item() == 0.0


def test_negative_control_different_positives_different_gradients(grad_form):
    q, c, _, _ = random_problem(seed=15)
    grads = []
    for pos in ([[0], [1], [2], [3], [4], [5], [6]], [[6], [5], [4], [3], [2], [1], [0]]):
        qq = q.clone().requires_grad_()
        triplet_loss(qq, c, csr(pos), num_negatives=3).backward()
        grads.append(qq.grad)
    assert not torch.allclose(grads[0], grads[1])
    assert not torch.allclose(grads[0][:3], grads[1][:3])  # rows whose positive changed


# ---- the sparse G (CPU) ----

def _adversarial_rows(m=40, b=12, seed=23):
    """Rows with many positives, duplicates, every column excluded, no positives, a huge degree."""
    q, c, pos, exc = random_problem(b=b, m=m, d=6, seed=seed, max_pos=3, max_exc=4)
    pos[0] = list(range(0, m, 2))  # half the columns positive
    pos[1] = [3, 3, 3, 7, 7]  # duplicates
    pos[2], exc[2] = [5], list(range(m))  # every other column excluded: no candidates
    pos[3] = []  # no positives
    pos[4] = list(range(m))  # every column positive
    exc[5] = list(range(1, m - 3))  # fewer candidates than k
    return q, c, pos, exc


@pytest.mark.parametrize("num_negatives", [None, 1, 3, 10, 100])
@pytest.mark.parametrize("temperature", [None, 0.1])
def test_sparse_grad_is_the_dense_grad(num_negatives, temperature):
    q, c, pos, exc = _adversarial_rows()
    scores = (q @ c.T).float()
    options = ops._options(0.3, num_negatives, "none", temperature, True)
    p = ops._column_sets("positives", csr(pos), 12, 40, scores.device)
    e = ops._column_sets("exclude", csr(exc), 12, 40, scores.device)
    loss, grad, count = ops._mine(scores.clone(), p, e, options, in_place=True)
    s_loss, (indptr, indices, values), s_count = ops._mine(scores.clone(), p, e, options, in_place=True, sparse=True)
    assert torch.equal(loss, s_loss) and torch.equal(count, s_count)
    assert torch.equal(indptr, torch.cat([torch.zeros(1, dtype=torch.int64), grad.ne(0).sum(1).cumsum(0)]))
    dense = torch.zeros_like(grad)
    for i in range(12):
        cols = indices[indptr[i]:indptr[i + 1]]
        assert cols.unique().numel() == cols.numel()  # each column once a row
        dense[i, cols] = values[indptr[i]:indptr[i + 1]]
        if num_negatives is not None:
            assert cols.numel() <= num_negatives + len(set(pos[i]))
    assert values.ne(0).all() and torch.equal(dense, grad)


def test_sparse_backward_kernel_matches_dense_products_for_any_thread_count():
    g = torch.Generator().manual_seed(24)
    b, m, d = 50, 30, 7
    q, c = torch.randn(b, d, generator=g, dtype=torch.float64), torch.randn(m, d, generator=g, dtype=torch.float64)
    dense = torch.randn(b, m, generator=g, dtype=torch.float64) * (torch.rand(b, m, generator=g) < 0.2)
    dense[:, 4] = 1.5  # a column in every row
    dense[10:20] = 0  # empty rows
    indptr = torch.cat([torch.zeros(1, dtype=torch.int64), dense.ne(0).sum(1).cumsum(0)])
    indices = dense.nonzero()[:, 1].contiguous()
    values = dense[dense.ne(0)].contiguous()
    row_scale = torch.randn(b, generator=g, dtype=torch.float64)
    outs = []
    for threads in (1, 2, 3, 7):
        dq, dc = torch.empty(b, d, dtype=torch.float64), torch.empty(m, d, dtype=torch.float64)
        _C.triplet_sparse_backward_cpu(indptr=indptr.numpy(), indices=indices.numpy(), values=values.numpy(),
                                       q=q.numpy(), c=c.numpy(), row_scale=row_scale.numpy(), scale=0.5,
                                       dq=dq.numpy(), dc=dc.numpy(), num_threads=threads)
        outs.append((dq, dc))
    torch.testing.assert_close(outs[0][0], 0.5 * row_scale[:, None] * (dense @ c), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(outs[0][1], 0.5 * dense.T @ (row_scale[:, None] * q), rtol=1e-12, atol=1e-12)
    for dq, dc in outs[1:]:
        assert torch.equal(dq, outs[0][0]) and torch.equal(dc, outs[0][1])


def test_sparse_op_independent_of_thread_count(monkeypatch):
    monkeypatch.setattr(ops, "_FORCE_SPARSE_GRAD", True)
    q, c, pos, exc = random_problem(b=100, m=300, d=16, seed=25, dtype=torch.float32, max_pos=5, max_exc=5)
    threads = torch.get_num_threads()
    outs = []
    try:
        for t in (1, 2, 3, 7):
            torch.set_num_threads(t)
            qq, cc = q.clone().requires_grad_(), c.clone().requires_grad_()
            loss = triplet_loss(qq, cc, csr(pos), exclude=csr(exc), num_negatives=10, reduction="none")
            (loss * torch.linspace(0.5, 1.5, 100)).sum().backward()
            outs.append((loss.detach(), qq.grad, cc.grad))
    finally:
        torch.set_num_threads(threads)
    for other in outs[1:]:
        for a, b in zip(outs[0], other):
            assert torch.equal(a, b)


def test_rule_picks_the_sparse_grad_for_few_negatives():
    def sparse(b, m, k, positives):
        scores = torch.empty(b, m)
        pos = ops._column_sets("positives", positives, b, m, scores.device)
        return ops._sparse_grad(scores.device, b, m, pos, ops._options(0.3, k, "mean", None, False))

    one_each = (torch.arange(1025), torch.zeros(1024, dtype=torch.int64))
    assert sparse(1024, 1024, 10, one_each)  # the paper's task loss: 11 nonzeros in 1024 a row
    assert not sparse(1024, 1024, None, one_each)  # every negative: G is dense
    assert not sparse(1024, 1024, 100, one_each)  # 101 in 1024: above 1/16
    assert not sparse(1024, 64, 10, one_each)  # M small against k
    many = torch.zeros(1024, 4096, dtype=torch.bool)
    assert sparse(1024, 4096, 10, many)
    many[:, :300] = True  # 300 positives a row: the bound counts them
    assert not sparse(1024, 4096, 10, many)


def test_sparse_grad_frees_the_score_matrix(grad_form):
    q, c, pos, _ = random_problem(b=64, m=512, d=8, seed=26)
    loss = triplet_loss(q.requires_grad_(), c, csr(pos), num_negatives=5)
    saved = [t.numel() for t in loss.grad_fn.saved_tensors if t is not None]
    assert (64 * 512 in saved) == (grad_form != "sparse")


@pytest.mark.parametrize("indptr, indices, match", [
    ([1, 1, 2], [0, 1], "indptr"),
    ([0, 3, 2], [0, 1], "decrease"),
    ([0, 1, 2], [0, 3], "column id"),
    ([0, 1, 2], [-1, 0], "column id"),
])
def test_sparse_backward_kernel_rejects_bad_csr(indptr, indices, match):
    q, c = torch.zeros(2, 4), torch.zeros(3, 4)
    with pytest.raises(ValueError, match=match):
        _C.triplet_sparse_backward_cpu(indptr=torch.tensor(indptr).numpy(), indices=torch.tensor(indices).numpy(),
                                       values=torch.ones(2).numpy(), q=q.numpy(), c=c.numpy(),
                                       dq=torch.empty(2, 4).numpy(), dc=torch.empty(3, 4).numpy())
    with pytest.raises(ValueError, match="dc"):
        _C.triplet_sparse_backward_cpu(indptr=torch.tensor([0, 1, 2]).numpy(), indices=torch.tensor([0, 1]).numpy(),
                                       values=torch.ones(2).numpy(), q=q.numpy(), c=c.numpy(),
                                       dc=torch.empty(2, 4).numpy())


# ---- bad input ----

def _bad_calls():
    q, c, _, _ = random_problem(seed=16)
    pos = [[0], [1, 2], [], [3], [4], [5], [6]]
    good = csr(pos)
    indptr, indices = good
    nan_q = q.clone()
    nan_q[2, 1] = float("nan")
    inf_c = c.clone()
    inf_c[0, 0] = float("inf")
    return [
        ("dimension", lambda: triplet_loss(q, c[:, :3], good)),
        ("2-D", lambda: triplet_loss(q[0], c, good)),
        ("column id", lambda: triplet_loss(q, c, (indptr, torch.where(indices == indices[0], 11, indices)))),
        ("column id", lambda: triplet_loss(q, c, (indptr, indices - 20))),
        ("B \\+ 1", lambda: triplet_loss(q, c, (indptr[:-1], indices))),
        ("decrease", lambda: triplet_loss(q, c, (torch.tensor([0, 3, 2, 4, 5, 6, 7, 7]), torch.zeros(7).long()))),
        ("indptr\\[-1\\]", lambda: triplet_loss(q, c, (indptr, indices[:-1]))),
        ("indptr\\[0\\]", lambda: triplet_loss(q, c, (indptr + 1, indices))),
        ("NaN or Inf", lambda: triplet_loss(nan_q, c, good)),
        ("NaN or Inf", lambda: triplet_loss(q, inf_c, good)),
        ("NaN or Inf", lambda: mine_hard_negatives(torch.full((2, 3), float("nan")), csr([[], []]))),
        ("margin", lambda: triplet_loss(q, c, good, margin=-0.1)),
        ("margin", lambda: triplet_loss(q, c, good, margin=float("nan"))),
        ("num_negatives", lambda: triplet_loss(q, c, good, num_negatives=0)),
        ("num_negatives", lambda: triplet_loss(q, c, good, num_negatives=-3)),
        ("num_negatives", lambda: triplet_loss(q, c, good, num_negatives=2.5)),
        ("num_negatives", lambda: triplet_loss(q, c, good, num_negatives=True)),
        ("num_negatives", lambda: triplet_loss(q, c, good, num_negatives=np.float64(3))),
        ("margin", lambda: triplet_loss(q, c, good, margin=torch.tensor(0.3, requires_grad=True))),
        ("margin", lambda: triplet_loss(q, c, good, margin=np.bool_(True))),
        ("margin", lambda: triplet_loss(q, c, good, margin=torch.tensor([0.3, 0.3]))),
        ("reduction", lambda: triplet_loss(q, c, good, reduction="max")),
        ("softmax_temperature", lambda: triplet_loss(q, c, good, softmax_temperature=0.0)),
        ("softmax_temperature", lambda: triplet_loss(q, c, good, softmax_temperature=-1.0)),
        ("dtype", lambda: triplet_loss(q.half(), c.half(), good)),
        ("dtype", lambda: triplet_loss(q.long(), c.long(), good)),
        ("float64", lambda: triplet_loss(q, c.float(), good)),
        ("indptr is on cpu but q and c are on meta", lambda: triplet_loss(q.float().to("meta"), c.float().to("meta"), good)),
        ("meta", lambda: triplet_loss(q, c.to("meta"), good)),
        ("meta", lambda: triplet_loss(q, c, (indptr.to("meta"), indices))),
        ("meta", lambda: triplet_loss(q, c, mask(pos, 11).to("meta"))),
        ("shape", lambda: triplet_loss(q, c, mask(pos, 10))),
        ("bool", lambda: triplet_loss(q, c, mask(pos, 11).to(torch.uint8))),
        ("int64", lambda: triplet_loss(q, c, (indptr.float(), indices))),
        ("bool mask", lambda: triplet_loss(q, c, [1, 2, 3])),
        ("exclude", lambda: triplet_loss(q, c, good, exclude=(indptr, indices + 100))),
    ]


@pytest.mark.parametrize("case", range(len(_bad_calls())))
def test_bad_input_raises_value_error(case):
    match, call = _bad_calls()[case]
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_scalars_and_0d_tensors_are_numbers_like_any_other():
    q, c, pos, _ = random_problem(seed=19)
    good = csr(pos)
    want = triplet_loss(q, c, good, margin=0.3, num_negatives=3, softmax_temperature=0.5)
    for margin, k, t in ((np.float32(0.3), np.int64(3), np.float64(0.5)), (torch.tensor(0.3), torch.tensor(3), 0.5)):
        got = triplet_loss(q, c, good, margin=margin, num_negatives=k, softmax_temperature=t)
        assert torch.allclose(got, want, rtol=0, atol=1e-7)  # np.float32(0.3) is 0.3 to float32's precision


def test_kernel_guards_without_python_validation():
    q, c, pos, _ = random_problem(seed=17)
    indptr, indices = csr(pos)
    with pytest.raises(ValueError, match="outside"):
        triplet_loss(q, c, (indptr, indices + 50), validate=False)
    with pytest.raises(ValueError, match="NaN or Inf"):
        triplet_loss(q * float("inf"), c, (indptr, indices), validate=False)


# ---- CUDA against the CPU (skipped without a GPU) ----

@needs_cuda
@pytest.mark.parametrize("num_negatives", [None, 10, 40])
@pytest.mark.parametrize("temperature", [None, 0.1])
@pytest.mark.parametrize("fmt", ["csr", "mask"])
def test_cuda_float32_matches_cpu(num_negatives, temperature, fmt):
    q, c, pos, exc = random_problem(b=64, m=300, d=32, seed=18, dtype=torch.float32, max_pos=4, max_exc=4)
    sets = (lambda x, dev: csr(x, dev)) if fmt == "csr" else (lambda x, dev: mask(x, 300, dev))
    out = {}
    for dev in ("cpu", "cuda"):
        qq, cc = q.to(dev).requires_grad_(), c.to(dev).requires_grad_()
        loss = triplet_loss(qq, cc, sets(pos, dev), exclude=sets(exc, dev), num_negatives=num_negatives,
                            softmax_temperature=temperature, reduction="sum")
        loss.backward()
        out[dev] = [t.detach().cpu() for t in (loss, qq.grad, cc.grad)]
    for a, b in zip(out["cuda"], out["cpu"]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("num_negatives", [None, 1, 10, 100])
def test_cuda_kernel_matches_cpu_on_the_same_scores(dtype, num_negatives):
    g = torch.Generator().manual_seed(19)
    scores = torch.randn(200, 1500, generator=g).to(dtype)  # low precision: many ties, all broken the same way
    pos = [torch.randint(0, 1500, (i % 4,), generator=g).tolist() for i in range(200)]
    exc = [torch.randint(0, 1500, (i % 3,), generator=g).tolist() for i in range(200)]
    for temperature in (None, 0.1):
        kw = dict(num_negatives=num_negatives, softmax_temperature=temperature)
        cpu = mine_hard_negatives(scores.float(), csr(pos), exclude=csr(exc), **kw)
        gpu = mine_hard_negatives(scores.cuda(), csr(pos, "cuda"), exclude=csr(exc, "cuda"), **kw)
        tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-2, atol=1e-2)
        torch.testing.assert_close(gpu[0].cpu(), cpu[0], **tol)
        torch.testing.assert_close(gpu[1].float().cpu(), cpu[1], **tol)
        assert torch.equal(gpu[2].cpu(), cpu[2])


@needs_cuda
def test_cuda_bfloat16_end_to_end_close_to_float32():
    q, c, pos, exc = random_problem(b=128, m=512, d=64, seed=20, dtype=torch.float32)
    q, c = q.cuda(), c.cuda()
    a = triplet_loss(q, c, csr(pos, "cuda"), exclude=csr(exc, "cuda"), num_negatives=None)
    b = triplet_loss(q.bfloat16(), c.bfloat16(), csr(pos, "cuda"), exclude=csr(exc, "cuda"), num_negatives=None)
    assert b.dtype == torch.float32
    torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-2)


@needs_cuda
def test_cuda_bad_rows_become_nan_without_validation():
    scores = torch.randn(3, 8, device="cuda")
    scores[1, 2] = float("nan")
    loss, grad, _ = mine_hard_negatives(scores, csr([[0], [1], [9]], "cuda"), validate=False)
    assert torch.isfinite(loss[0]) and torch.isnan(loss[1]) and torch.isnan(loss[2])
    assert torch.isnan(grad[1]).all() and torch.isfinite(grad[0]).all()
    with pytest.raises(ValueError, match="NaN or Inf"):
        mine_hard_negatives(scores, csr([[0], [1], [2]], "cuda"))


def test_cpu_autocast_bfloat16(grad_form):
    q, c, pos, exc = random_problem(b=16, m=40, d=8, seed=21, dtype=torch.float32)
    qq, cc = q.clone().requires_grad_(), c.clone().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = triplet_loss(qq, cc, csr(pos), exclude=csr(exc), num_negatives=5)
    loss.backward()
    assert qq.grad.dtype == torch.float32 and cc.grad.dtype == torch.float32
    ref = triplet_loss(q, c, csr(pos), exclude=csr(exc), num_negatives=5)
    torch.testing.assert_close(loss.float(), ref, rtol=5e-2, atol=5e-2)


def test_cuda_tensors_on_a_build_without_cuda_warn_once_naming_the_rebuild(monkeypatch):
    import warnings

    monkeypatch.setattr(ops, "_FALLBACK_WARNED", False)
    with pytest.warns(RuntimeWarning, match="plain torch ops.*RAMEN_CUDA=ON pip install \\."):
        ops._warn_torch_fallback()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops._warn_torch_fallback()  # once per process


@pytest.mark.parametrize("indptr, indices, match", [
    ([1, 2, 3], [0, 1], "indptr\\[0\\]"),
    ([0, 2, 1], [0, 1], "decrease"),
    ([0, 1, 3], [0, 1], "indptr\\[-1\\]"),
    ([0, 1, 2], [0, 5], "column ids"),
    ([0, 1, 2], [-1, 0], "column ids"),
])
def test_device_side_checks(indptr, indices, match):
    # the checks that run before the CUDA kernel (here on CPU tensors: the same torch code)
    from ramen.ops import _csr_checks, _raise_if_bad

    checks = _csr_checks("positives", torch.tensor(indptr), torch.tensor(indices), 5)
    with pytest.raises(ValueError, match="positives: .*" + match):
        _raise_if_bad(checks, None)
    _raise_if_bad(_csr_checks("positives", torch.tensor([0, 1, 2]), torch.tensor([0, 4]), 5), torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN or Inf"):
        _raise_if_bad({}, torch.tensor([[0.0, float("inf")]]))


@pytest.mark.parametrize("num_negatives", [1, 3, 10, 16, 17, 40])
def test_selection_with_a_bound_matches_reference(num_negatives, grad_form):
    # M large enough for the kernel's lower bound from residue-class maxima (M >= 4 * lanes);
    # scores rounded to 1 decimal: many ties, some straddling the k-th place
    q, c, pos, exc = random_problem(b=6, m=700, d=4, seed=22, max_pos=3, max_exc=40)
    q = (q * 10).round() / 10
    c = (c * 10).round() / 10
    ours, ref = run_both(q, c, pos, exc, "csr", num_negatives=num_negatives, reduction="none")
    assert_close(ours, ref, torch.float64)


def test_ties_with_a_bound_prefer_lower_columns():
    row = torch.zeros(2, 1000, dtype=torch.float32)
    row[:, 999] = 0.2  # the positive
    row[1, 500:510] = 0.1  # a few above the tie level
    for k in (7, 16, 17, 30):
        _, grad, _ = mine_hard_negatives(row, csr([[999], [999]]), num_negatives=k)
        assert grad[0, :k].eq(1).all() and grad[0, k:999].eq(0).all(), k
        above = min(k, 10)
        assert grad[1, 500:500 + above].eq(1).all() and grad[1, :k - above].eq(1).all(), k
        assert grad[1, :999].sum() == k, k


# ---- the registered op: torch.ops.ramen.triplet_loss, its fake kernel and its autograd ----

def _op_args(q, c, pos, exc, *, reduction="mean", num_negatives=3, sparse=False):
    (pi, px), (ei, ex) = pos, exc
    return (q, c, pi, px, None, ei, ex, None, 0.3, num_negatives, 0.0, reduction, q.dtype, False, sparse)


# torch 2.14's fake-tensor conversion inside opcheck reads .grad of non-leaf tensors (its own
# meta_utils, which means to hide this warning); pytest's warnings-as-errors would fail opcheck on it
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("sparse", [False, True])
def test_op_passes_torch_library_opcheck(reduction, sparse):
    q, c, pos, exc = random_problem(b=6, m=64, d=4, seed=30, dtype=torch.float32)
    args = _op_args(q.requires_grad_(), c.requires_grad_(), csr(pos), csr(exc), reduction=reduction, sparse=sparse)
    torch.library.opcheck(torch.ops.ramen.triplet_loss.default, args)


def test_op_on_meta_gives_shapes_and_gradients_without_data():
    q = torch.empty(8, 4, device="meta", requires_grad=True)
    c = torch.empty(20, 4, device="meta", requires_grad=True)
    pos = (torch.zeros(9, dtype=torch.int64, device="meta"), torch.zeros(8, dtype=torch.int64, device="meta"))
    for reduction, shape in (("mean", ()), ("none", (8,))):
        loss = triplet_loss(q, c, pos, num_negatives=3, reduction=reduction)
        assert loss.device.type == "meta" and loss.shape == shape and loss.dtype == torch.float32
        loss.sum().backward()
        assert q.grad.shape == q.shape and c.grad.shape == c.shape and q.grad.device.type == "meta"


def test_op_fake_kernel_rejects_inputs_on_two_devices():
    q, c, pos, exc = random_problem(b=6, m=64, d=4, seed=31, dtype=torch.float32)
    args = list(_op_args(q.to("meta"), c.to("meta"), csr(pos), csr(exc)))
    args[2] = args[2].to("meta")  # indices stay on the CPU: what the harness must catch
    args[5], args[6] = args[5].to("meta"), args[6].to("meta")
    with pytest.raises(ValueError, match="pos_indices is on cpu but q is on meta"):
        torch.ops.ramen.triplet_loss(*args)


@pytest.mark.parametrize("huge", [2**31, 2**63, 10**30])
def test_num_negatives_beyond_any_batch_means_every_candidate(huge):
    q, c, pos, exc = random_problem(b=6, m=20, d=4, seed=40)
    for form in (csr(pos), mask(pos, 20)):
        every = triplet_loss(q, c, form, num_negatives=None)
        assert torch.equal(triplet_loss(q, c, form, num_negatives=huge), every)
