"""The environment for a child process that must import this process's ramen (shared by the tests)."""
import os
import site
from pathlib import Path

import ramen


def child_env(**extra: str) -> dict[str, str]:
    """os.environ (and `extra`) for a child, run from any directory, that must test this process's
    ramen: a source tree (a relative `src` on PYTHONPATH reaches nothing from elsewhere) leads
    PYTHONPATH; an installed ramen is the child's already, and a site directory there would go
    before the stdlib."""
    where = str(Path(ramen.__file__).resolve().parents[1])
    sites = {str(Path(p).resolve()) for p in [*site.getsitepackages(), site.getusersitepackages()]}
    env = {**os.environ, **extra}
    if where not in sites:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (where, os.environ.get("PYTHONPATH")) if p)
    return env
