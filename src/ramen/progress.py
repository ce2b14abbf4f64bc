"""Progress bars: tqdm on stderr, quieter where stderr is not a terminal."""
from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

QUIET_INTERVAL_S = 30.0  # seconds between a bar's updates in a log file or a batch job's output


def bar(**kwargs: Any) -> tqdm:
    """A tqdm bar. Where stderr is not a terminal (a log file, a scheduler's output) it updates at most
    every QUIET_INTERVAL_S, where tqdm writes up to ten times a second: a days-long run's log would
    grow by hundreds of megabytes of bar updates. TQDM_MININTERVAL in the environment overrides it."""
    if "mininterval" not in kwargs and "TQDM_MININTERVAL" not in os.environ and not _stderr_is_a_terminal():
        kwargs["mininterval"] = QUIET_INTERVAL_S
    return tqdm(**kwargs)


def _stderr_is_a_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False
