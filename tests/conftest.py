"""Shared test setup."""
import pytest

from _child_env import child_env


@pytest.fixture
def ramen_env() -> dict[str, str]:
    """The environment of a child that must test this process's ramen (`_child_env.child_env`)."""
    return child_env()
