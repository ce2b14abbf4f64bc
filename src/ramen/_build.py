"""Access to the compiled extension with a clear error when it is missing."""
from __future__ import annotations

from types import ModuleType


def load_C() -> ModuleType:
    """Returns ramen._C, or raises ImportError saying how to build it."""
    try:
        from ramen import _C
    except ImportError as exc:  # pragma: no cover - only without a build
        raise ImportError(
            "ramen's compiled extension ramen._C is missing: install the package with "
            "`pip install .` from the source tree (it builds the C++ kernels with CMake)"
        ) from exc
    return _C
