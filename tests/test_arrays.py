import numpy as np

from ramen._arrays import grow_rows


def test_grow_rows_keeps_rows_and_fills_new_ones():
    a = np.arange(6, dtype=np.int64).reshape(3, 2)
    b = grow_rows(a, 4, fill=-1, minimum=1)
    assert b.shape == (6, 2)  # doubling, not just the 4 asked for
    np.testing.assert_array_equal(b[:3], a)
    assert (b[3:] == -1).all()


def test_grow_rows_returns_the_same_array_when_it_fits():
    a = np.zeros(10, np.float16)
    assert grow_rows(a, 10) is a
    assert len(grow_rows(np.zeros(0, np.int8), 1)) == 1024  # the minimum capacity
    assert len(grow_rows(a, 50, minimum=1)) == 50  # more than doubling when asked
