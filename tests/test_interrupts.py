"""SIGTERM stops esc as Ctrl-C does: the command stops where it is, keeps what it saved and says so, and ends
with the shell's code for the signal. Once stopping, more interrupts are ignored."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from esccli import checkpoint
from esccli.interrupts import StopOnSignals
from esccli.workers import _run


def raise_on(signum) -> float:
    """Send this process `signum` and give the handler a moment to run; how long it took."""
    t = time.perf_counter()
    os.kill(os.getpid(), signum)
    for _ in range(100):
        time.sleep(0.01)
    return time.perf_counter() - t


@pytest.mark.parametrize("signum, code, terminated", [(signal.SIGTERM, 143, True), (signal.SIGINT, 130, False)])
def test_either_signal_interrupts_once_and_the_handlers_come_back(signum, code, terminated):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with StopOnSignals() as stop:
        assert stop.signum is None and stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            raise_on(signum)
        assert stop.signum == signum and stop.exit_code == code and stop.terminated == terminated
        raise_on(signal.SIGINT)  # ignored while the command winds down: no second KeyboardInterrupt
        raise_on(signal.SIGTERM)
        assert stop.signum == signum
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_it_sets_no_handlers():
    seen = []

    def body():
        with StopOnSignals() as stop:
            seen.append((stop.signum, signal.getsignal(signal.SIGTERM)))

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert seen == [(None, signal.getsignal(signal.SIGTERM))]


def stops_on_sigterm() -> str:
    try:
        raise_on(signal.SIGTERM)
    except KeyboardInterrupt:
        raise_on(signal.SIGTERM)  # a second one is ignored
        return "stopped"
    return "ran on"


def test_a_side_by_side_task_stops_on_sigterm():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert _run(stops_on_sigterm, ()) == "stopped"
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def install(synth_dataset: Path, home: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "ESC-50").symlink_to(synth_dataset, target_is_directory=True)


def start_training(home: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, ESC_HOME=str(home), COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "esccli", "train", "--epochs", "1000", "--name", "t", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_for(paths, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.is_file() for p in paths):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no {[p.name for p in paths]} (exit {proc.returncode}): {proc.communicate()[1][-2000:]}")
        time.sleep(0.2)


def assert_stopped_with_its_epochs_kept(proc: subprocess.Popen, resume_files) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "training interrupted" in err and "--resume" in err and "Traceback" not in err
    for p in resume_files:
        assert checkpoint.read_meta(p)["train"]["history"], p  # whole, and at least one finished epoch


def test_sigterm_stops_a_training_with_its_resume_hint(synth_dataset, esc_home):
    install(synth_dataset, esc_home)
    proc = start_training(esc_home, "--preset", "fast", "--members", "1")
    resume = esc_home / "models" / "t.resume.pt"
    wait_for([resume], proc)
    proc.send_signal(signal.SIGTERM)  # to esc alone, as `kill` sends it
    assert_stopped_with_its_epochs_kept(proc, [resume])
    assert not (esc_home / "models" / "t.pt").exists()


def test_sigterm_to_the_process_group_stops_side_by_side_members(synth_dataset, esc_home):
    install(synth_dataset, esc_home)
    proc = start_training(esc_home, "--preset", "default", "--members", "2", "--jobs", "2", "--threads", "1")
    members = [esc_home / "models" / f".t.member{k}.resume.pt" for k in (1, 2)]
    wait_for(members, proc)
    os.killpg(proc.pid, signal.SIGTERM)  # as a service manager stops a job: esc and its training processes
    assert_stopped_with_its_epochs_kept(proc, members)
    assert not running_in_group(proc.pid), "a training process of esc's is still running"


def running_in_group(pgid: int, timeout: float = 20.0) -> list[int]:
    """The processes of group `pgid` still running (not zombies, which the system reaps in its own time) after
    up to `timeout` s: multiprocessing's resource tracker exits just after esc."""
    if not Path("/proc/self/stat").is_file():
        pytest.skip("needs /proc")
    deadline = time.monotonic() + timeout
    while True:
        running = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):  # it ended meanwhile
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                running.append(int(stat.parent.name))
        if not running or time.monotonic() > deadline:
            return running
        time.sleep(0.1)
