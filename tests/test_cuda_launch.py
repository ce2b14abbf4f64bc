"""The CUDA triplet kernel's launch arithmetic (csrc/cpu/triplet_launch.cpp), checked on the CPU:
the shared-memory opt-in counts the kernel's static shared memory, and rows wider than a block's
shared memory take the global-memory path instead of failing."""
import pytest

from ramen import _C

H100_OPTIN = 227 * 1024  # cudaDevAttrMaxSharedMemoryPerBlockOptin on an H100
A100_OPTIN = 163 * 1024
STATIC = 8 * 4 + 8 * 4 + 256 * 4 + 2 * 4  # the kernel's BlockScratch: sums, counts, histogram, digit, remaining
DEFAULT = 48 * 1024


def plan(cols, optin=H100_OPTIN, static=STATIC, rows=1024, **kw):
    return _C.triplet_cuda_launch_plan(rows=rows, cols=cols, optin_bytes=optin, static_bytes=static, **kw)


def test_the_opt_in_counts_static_shared_memory():
    # dynamic (13 bytes a column) + static passes the 48 KiB default from 3,697 columns on; the old
    # rule (dynamic alone > 48 KiB) opted in only from 3,781, so 3,697-3,780 failed to launch
    first = next(c for c in range(3000, 4000) if 13 * c + STATIC > DEFAULT)
    assert first == 3697
    for cols in (1, 300, 3696):
        assert plan(cols)["shared"] and not plan(cols)["raise_limit"]
    for cols in (3697, 3700, 3780, 3781, 10_000):
        p = plan(cols)
        assert p["shared"] and p["raise_limit"] and p["dynamic_shared"] == 13 * cols
        assert p["dynamic_shared"] + STATIC <= H100_OPTIN


@pytest.mark.parametrize("optin, widest", [(H100_OPTIN, 17_796), (A100_OPTIN, 12_755)])
def test_rows_wider_than_shared_memory_take_the_global_path(optin, widest):
    assert plan(widest, optin)["shared_max_cols"] == widest
    assert plan(widest, optin)["shared"]
    p = plan(widest + 1, optin)
    assert not p["shared"] and p["dynamic_shared"] == 0
    assert p["workspace_stride"] % 16 == 0 and p["workspace_stride"] >= 13 * (widest + 1)


@pytest.mark.parametrize("rows, cols", [(1024, 20_000), (1, 10_000_000), (50_000, 100_000), (7, 2**31 - 1)])
def test_global_path_bounds_the_workspace_and_covers_every_row(rows, cols):
    budget = 256 << 20
    p = plan(cols, rows=rows, workspace_budget=budget)
    assert not p["shared"] and 1 <= p["rows_per_launch"] <= rows
    assert p["rows_per_launch"] == 1 or p["rows_per_launch"] * p["workspace_stride"] <= budget
    launches = -(-rows // p["rows_per_launch"])
    assert launches * p["rows_per_launch"] >= rows > (launches - 1) * p["rows_per_launch"]


def test_bad_sizes_raise_value_error():
    for kw in (dict(cols=-1), dict(cols=2**31), dict(cols=10, rows=-2), dict(cols=10, optin=-1)):
        with pytest.raises(ValueError):
            plan(**kw)
    with pytest.raises(ValueError, match="budget"):
        plan(10, workspace_budget=0)
