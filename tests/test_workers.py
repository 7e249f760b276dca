import os
import signal
from pathlib import Path

import pytest

from esccli.errors import EscError
from esccli.workers import run_side_by_side


def mark(folder: str, i: int) -> None:
    (Path(folder) / str(i)).touch()


def fail_first(folder: str, i: int) -> None:
    if i == 0:
        raise ValueError("task 0 failed")
    mark(folder, i)


def stops_on_ctrl_c() -> bool:
    return signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_each_task_runs_in_a_process_of_its_own_and_reports_by_index():
    got = {}
    run_side_by_side(pow, [(2, 3), (3, 2), (5, 1)], 2, EscError("interrupted"), on_result=got.__setitem__)
    assert got == {0: 8, 1: 9, 2: 5}
    pids = {}
    run_side_by_side(os.getpid, [()] * 3, 2, EscError("interrupted"), on_result=pids.__setitem__)
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    flags = {}
    run_side_by_side(stops_on_ctrl_c, [()], 1, EscError("interrupted"), on_result=flags.__setitem__)
    assert flags == {0: True}  # a running task stops on Ctrl-C (idle workers ignore it: checked by hand only)


def test_after_a_failure_no_new_task_starts_and_the_failure_is_raised(tmp_path):
    with pytest.raises(ValueError, match="task 0 failed"):
        run_side_by_side(fail_first, [(str(tmp_path), i) for i in range(4)], 1, EscError("interrupted"))
    assert not any(tmp_path.iterdir())  # tasks 1-3 never started


def test_ctrl_c_starts_nothing_new_and_raises_the_given_error(tmp_path):
    done = []

    def on_result(i, r):
        done.append(i)
        raise KeyboardInterrupt  # what Ctrl-C does in the waiting process

    with pytest.raises(EscError, match="stopped: resume later"):
        run_side_by_side(mark, [(str(tmp_path), i) for i in range(8)], 1, EscError("stopped: resume later"),
                         on_result=on_result)
    assert done == [0]
    assert {int(p.name) for p in tmp_path.iterdir()} == {0}  # only the task that ran; none queued behind it
