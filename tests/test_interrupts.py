"""Ctrl-C that Python drops: a KeyboardInterrupt raised while a finaliser (`__del__`) runs is printed
as "Exception ignored" and lost. ramen.interrupts remembers it and raises it again where it matters."""
import signal

import pytest

from ramen.interrupts import Interrupts, raise_dropped, remembering

# the KeyboardInterrupt a finaliser drops is reported to sys.unraisablehook, which pytest makes a warning
pytestmark = [pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
              pytest.mark.usefixtures("python_sigint")]


class _InterruptedWhileFinalised:
    def __del__(self):
        signal.raise_signal(signal.SIGINT)  # the handler's KeyboardInterrupt is raised here, and dropped


def _drop_a_ctrl_c() -> None:
    _InterruptedWhileFinalised()  # finalised at once: the Ctrl-C lands in its __del__


def test_a_dropped_ctrl_c_is_raised_again_where_a_run_would_replace_the_earlier_one():
    with remembering():
        _drop_a_ctrl_c()  # without remembering, nothing more would ever be raised
        with pytest.raises(KeyboardInterrupt):
            raise_dropped()
        raise_dropped()  # raised once
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_a_ctrl_c_raised_through_is_not_raised_again():
    with pytest.raises(KeyboardInterrupt):
        with remembering():
            signal.raise_signal(signal.SIGINT)
    with remembering():
        raise_dropped()  # the block that saw it has ended: nothing remembered


def test_outside_remembering_a_dropped_ctrl_c_is_lost_as_python_loses_it():
    _drop_a_ctrl_c()
    raise_dropped()


def test_a_ctrl_c_dropped_between_steps_stops_the_next_step_before_it_starts():
    ran = []
    with Interrupts() as interrupts:
        _drop_a_ctrl_c()
        with pytest.raises(KeyboardInterrupt):
            with interrupts.step():
                ran.append(1)
    assert ran == []


def test_a_ctrl_c_dropped_in_the_set_up_stops_the_first_step():
    ran = []
    with remembering():
        _drop_a_ctrl_c()
        with Interrupts() as interrupts:
            with pytest.raises(KeyboardInterrupt):
                with interrupts.step():
                    ran.append(1)
        raise_dropped()  # handed over to the steps: not raised twice
    assert ran == []
