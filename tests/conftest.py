"""Shared test setup: the environment for a child process that must import this process's ramen."""
import os
import site
from pathlib import Path

import pytest

import ramen


@pytest.fixture
def ramen_env() -> dict[str, str]:
    """os.environ for a child run from another directory that must test this process's ramen: a
    source tree (a relative `src` on PYTHONPATH reaches nothing from there) leads PYTHONPATH; an
    installed ramen is the child's already, and a site directory there would go before the stdlib."""
    where = str(Path(ramen.__file__).resolve().parents[1])
    sites = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    if where in sites:
        return dict(os.environ)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)}
