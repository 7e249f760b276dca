import os
import signal
import time
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


def interrupted_twice() -> str:
    """Ctrl-C in a running task: the first stops it, a second (the terminal's and a passed-on one together) is
    ignored while it stops."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        return "ran on"
    except KeyboardInterrupt:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.2)  # a second KeyboardInterrupt would be raised here
        return "stopped once"


def wait_for(path: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def long_task(folder: str, i: int) -> None:
    """Task 0 ends once task 1 runs; task 1 runs for a minute unless interrupted, and says which."""
    folder = Path(folder)
    if i == 0:
        wait_for(folder / "1-running")
        return
    try:
        (folder / "1-running").touch()
        time.sleep(60)
        (folder / "1-ran-to-the-end").touch()
    except KeyboardInterrupt:
        (folder / "1-interrupted").touch()
        raise


def test_each_task_runs_in_a_process_of_its_own_and_reports_by_index():
    got = {}
    run_side_by_side(pow, [(2, 3), (3, 2), (5, 1)], 2, EscError("interrupted"), on_result=got.__setitem__)
    assert got == {0: 8, 1: 9, 2: 5}
    pids = {}
    run_side_by_side(os.getpid, [()] * 3, 2, EscError("interrupted"), on_result=pids.__setitem__)
    assert len(set(pids.values())) == 3 and os.getpid() not in pids.values()
    flags = {}
    run_side_by_side(interrupted_twice, [()], 1, EscError("interrupted"), on_result=flags.__setitem__)
    assert flags == {0: "stopped once"}  # a running task stops on Ctrl-C (idle workers ignore it: checked by hand)


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


def test_an_interrupt_of_the_waiting_process_alone_stops_the_running_tasks(tmp_path):
    """`kill -INT` sent to the process that waits (not to its whole group, as Ctrl-C is): the running task is
    interrupted too, rather than running to its end while the waiting process waits for it."""

    def on_result(i, r):
        raise KeyboardInterrupt  # the interrupt reaches the waiting process only

    t = time.monotonic()
    with pytest.raises(EscError, match="stopped"):
        run_side_by_side(long_task, [(str(tmp_path), 0), (str(tmp_path), 1)], 2, EscError("stopped"),
                         on_result=on_result)
    assert (tmp_path / "1-interrupted").exists() and not (tmp_path / "1-ran-to-the-end").exists()
    assert time.monotonic() - t < 50


def test_a_task_told_to_stop_before_it_could_hear_it_does_not_run(monkeypatch):
    """A worker that was still starting up (Ctrl-C held back, then ignored) when the pool was interrupted: its
    task stops as it begins, instead of running to its end."""
    import multiprocessing

    from esccli import workers

    stop = multiprocessing.get_context("spawn").Event()
    monkeypatch.setattr(workers, "_stop", stop)
    monkeypatch.setattr(workers, "exit_with_parent", lambda: None)  # this process has no pool to outlive
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # _run sets both
    ran = []
    try:
        assert workers._run(ran.append, ("ran",)) is None and ran == ["ran"]
        stop.set()
        with pytest.raises(KeyboardInterrupt):
            workers._run(ran.append, ("ran again",))
        assert ran == ["ran"]
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)
