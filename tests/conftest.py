"""Shared test setup: the environment for a child process that must import this process's ramen."""
import os
from pathlib import Path

import pytest

import ramen


@pytest.fixture
def ramen_env() -> dict[str, str]:
    """os.environ with PYTHONPATH leading to where this process's ramen lives (site-packages or src/):
    a child run from another directory then tests this copy, whatever PYTHONPATH said (a relative
    `src` reaches nothing from a temporary directory, and a second installed ramen is never picked)."""
    where = str(Path(ramen.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)}
