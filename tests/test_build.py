"""The compiled extension loads and reports its build options."""
from ramen import _C


def test_extension_loads() -> None:
    assert isinstance(_C.has_cuda(), bool)
    assert _C.hardware_threads() >= 1
