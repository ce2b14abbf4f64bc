"""Shared test setup."""
import os

import pytest

from _child_env import child_env

# a child process (torchrun-style workers, CLI runs) that dies on a signal prints its Python stacks,
# so a crash in a child names where it happened (pytest's own faulthandler covers only this process)
os.environ.setdefault("PYTHONFAULTHANDLER", "1")


@pytest.fixture
def ramen_env() -> dict[str, str]:
    """The environment of a child that must test this process's ramen (`_child_env.child_env`)."""
    return child_env()


@pytest.fixture
def python_sigint():
    """SIGINT raising KeyboardInterrupt, as in a terminal: a shell's background job (CI runs the tests
    as one) starts with SIGINT ignored, where Ctrl-C never reaches Python at all."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
