from pathlib import Path

import pytest

from esccli.errors import EscError
from esccli.workers import run_side_by_side


def test_each_task_runs_in_its_own_process_and_reports_by_index():
    got = {}
    run_side_by_side(pow, [(2, 3), (3, 2), (5, 1)], 2, EscError("interrupted"), on_result=got.__setitem__)
    assert got == {0: 8, 1: 9, 2: 5}


def test_the_first_failure_stops_the_rest_and_is_raised():
    got = {}
    with pytest.raises(ValueError):  # pow(2, 1, 0): modulo zero
        run_side_by_side(pow, [(2, 1, 0), (2, 2), (2, 3)], 1, EscError("interrupted"), on_result=got.__setitem__)
    assert 2 not in got  # not started: cancelled


def mark(folder: str, i: int) -> None:
    (Path(folder) / str(i)).touch()


def test_ctrl_c_cancels_what_has_not_started_and_raises_the_given_error(tmp_path):
    done = []

    def on_result(i, r):
        done.append(i)
        raise KeyboardInterrupt  # what Ctrl-C does in the waiting process

    with pytest.raises(EscError, match="stopped: resume later"):
        run_side_by_side(mark, [(str(tmp_path), i) for i in range(8)], 1, EscError("stopped: resume later"),
                         on_result=on_result)
    assert done == [0]
    started = {int(p.name) for p in tmp_path.iterdir()}
    assert 0 in started and len(started) <= 3  # the one running and the one queued at most: the rest cancelled
