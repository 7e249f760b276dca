"""SIGTERM stops esc as Ctrl-C does: the command stops where it is, keeps what it saved and says so, and ends
with the shell's code for the signal. Once stopping, more Ctrl-Cs are ignored and a second SIGTERM ends it."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from esccli import checkpoint, featurize, workers
from esccli.features import FeatureParams
from esccli.interrupts import StopOnSignals, Terminated
from synthetic import install

TESTS = Path(__file__).parent


class Leaked(Exception):
    """A signal reached the handler in place before StopOnSignals: it did not take over."""


@pytest.fixture
def guarded():
    """SIGINT and SIGTERM raise Leaked unless something takes them over; put back afterwards. A regression then
    fails its test instead of stopping (KeyboardInterrupt) or killing (SIGTERM) the whole pytest session."""
    def leak(signum, frame):
        raise Leaked(signum)

    before = {s: signal.signal(s, leak) for s in (signal.SIGINT, signal.SIGTERM)}
    yield leak
    for s, handler in before.items():
        signal.signal(s, handler)


def send(signum) -> None:
    """Send this process `signum`, and give Python a moment to run its handler."""
    os.kill(os.getpid(), signum)
    for _ in range(20):
        time.sleep(0.005)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_either_signal_interrupts_once_and_the_handlers_come_back(guarded, signum, raised):
    with StopOnSignals() as stop:
        assert stop.signum is None
        with pytest.raises(raised):
            send(signum)
        assert stop.signum == signum
        try:
            send(signal.SIGINT)  # ignored while the command winds down
            send(signal.SIGTERM)  # within a second of the first: the same request (`timeout` sends two)
        except KeyboardInterrupt:
            pytest.fail("a second signal interrupted the winding down")
        assert stop.signum == signum
    assert signal.getsignal(signal.SIGINT) is guarded and signal.getsignal(signal.SIGTERM) is guarded


def test_a_signal_ignored_from_the_start_stays_ignored(guarded):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a background job of a shell without job control
    with StopOnSignals() as stop:
        send(signal.SIGINT)
        assert stop.signum is None
        with pytest.raises(KeyboardInterrupt):
            send(signal.SIGTERM)
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def run_python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=60, **kw)


def test_a_second_sigterm_after_a_second_ends_the_process_at_once():
    r = run_python("""
        import os, signal, time
        from esccli.interrupts import StopOnSignals
        with StopOnSignals():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
            except KeyboardInterrupt:
                print("stopping", flush=True)
                os.kill(os.getpid(), signal.SIGINT)  # ignored
                os.kill(os.getpid(), signal.SIGTERM)  # within a second: the same request
                time.sleep(1.2)
                print("still winding down", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # ends it
                time.sleep(5)
                print("ran on", flush=True)
    """)
    assert r.returncode == -signal.SIGTERM and r.stdout.split("\n")[:2] == ["stopping", "still winding down"]
    assert "ran on" not in r.stdout and "Traceback" not in r.stderr


def stops_on_sigterm() -> str:
    try:
        send(signal.SIGTERM)
    except KeyboardInterrupt:
        send(signal.SIGTERM)  # a second one, and the interrupt esc passes on, are ignored
        send(signal.SIGINT)
        return "stopped"
    return "ran on"


def test_a_side_by_side_task_stops_on_sigterm(guarded, monkeypatch):
    monkeypatch.setattr(workers, "exit_with_parent", lambda: None)  # this process has no pool to outlive
    assert workers._run(stops_on_sigterm, ()) == "stopped"


def recorded_task(folder: str, i: int) -> None:
    """Runs for a minute unless interrupted; says which, in `folder`, with its pid."""
    folder = Path(folder)
    try:
        (folder / f"{i}-pid").write_text(str(os.getpid()))
        (folder / f"{i}-pid").rename(folder / f"{i}-running")  # whole when it appears
        time.sleep(60)
        (folder / f"{i}-ran-to-the-end").touch()
    except KeyboardInterrupt:
        (folder / f"{i}-interrupted").touch()
        raise


SIDE_BY_SIDE = """
    import signal, sys
    if {ignore_ctrl_c}:  # a background job of a shell without job control
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.path.insert(0, {tests!r})
    from esccli.errors import Interrupted
    from esccli.interrupts import StopOnSignals
    from esccli.workers import run_side_by_side
    from test_interrupts import recorded_task
    with StopOnSignals():
        try:
            run_side_by_side(recorded_task, [({folder!r}, 0), ({folder!r}, 1)], 2, Interrupted("stopped"))
        except Interrupted as e:
            print("interrupted by", e.signum, flush=True)
"""


def start_side_by_side(folder: Path, ignore_ctrl_c: bool = False) -> subprocess.Popen:
    code = textwrap.dedent(SIDE_BY_SIDE.format(tests=str(TESTS), folder=str(folder), ignore_ctrl_c=ignore_ctrl_c))
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


@pytest.mark.parametrize("to", ["the process group", "one task alone", "the group, Ctrl-C ignored from the start"])
def test_sigterm_stops_every_task_side_by_side(tmp_path, to):
    proc = start_side_by_side(tmp_path, ignore_ctrl_c="ignored" in to)
    with group_killed_at_the_end(proc):
        wait_for([tmp_path / "0-running", tmp_path / "1-running"], proc, timeout=60)
        if "ignored" in to:  # the terminal's Ctrl-C reaches neither esc nor its tasks
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(1.0)
            assert proc.poll() is None and not list(tmp_path.glob("*-interrupted"))
        if "group" in to:  # as a service manager stops a job
            os.killpg(proc.pid, signal.SIGTERM)
        else:  # an administrator, or earlyoom: the other task stops too, rather than training to its end
            os.kill(int((tmp_path / "0-running").read_text()), signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert out == f"interrupted by {int(signal.SIGTERM)}\n" and "Traceback" not in err, err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["0-interrupted", "0-running", "1-interrupted",
                                                              "1-running"]


def slow_chunk(paths: list[str], params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    with open(paths[0], "a") as f:  # every chunk's "paths" name the same log file
        f.write("chunk\n")
    time.sleep(0.3)
    return np.zeros((len(paths), params.n_mels, params.frames), np.float32), np.zeros((len(paths), 272), np.float32)


def test_an_interrupted_feature_build_drops_the_chunks_not_started(tmp_path, monkeypatch, capfd):
    log = tmp_path / "chunks.log"
    monkeypatch.setattr(featurize, "_featurize_files", slow_chunk)
    params = FeatureParams(clip_seconds=0.1, n_mels=8)

    def interrupt(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        featurize.compute_features([log] * (40 * featurize.CHUNK), params, jobs=2, progress=interrupt)
    ran = log.read_text().count("chunk")
    assert ran < 12, f"{ran} of 40 chunks were read after the interrupt"  # at most those running or queued
    assert "Traceback" not in capfd.readouterr().err



def start_training(home: Path, *args: str) -> subprocess.Popen:
    env = dict(os.environ, ESC_HOME=str(home), COLUMNS="200")
    return subprocess.Popen([sys.executable, "-m", "esccli", "train", "--epochs", "1000", "--name", "t", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


class group_killed_at_the_end:
    """Whatever happens in the test, nothing of the process group of `proc` is left running."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc

    def __enter__(self):
        return self.proc

    def __exit__(self, *exc):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.communicate()


def wait_for(paths, proc: subprocess.Popen, timeout: float = 240.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.is_file() for p in paths):
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"no {[p.name for p in paths]} (exit {proc.poll()})")
        time.sleep(0.2)


def assert_stopped_with_its_epochs_kept(proc: subprocess.Popen, resume_files) -> None:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err  # ended by the signal once it said so: the shell shows 143
    assert "training interrupted" in err and "--resume" in err and "Traceback" not in err
    for p in resume_files:
        assert checkpoint.read_meta(p)["train"]["history"], p  # whole, and at least one finished epoch


def test_sigterm_stops_a_training_with_its_resume_hint(synth_dataset, esc_home):
    install(synth_dataset, esc_home)
    resume = esc_home / "models" / "t.resume.pt"
    with group_killed_at_the_end(start_training(esc_home, "--preset", "fast", "--members", "1")) as proc:
        wait_for([resume], proc)
        proc.send_signal(signal.SIGTERM)  # to esc alone, as `kill` sends it
        assert_stopped_with_its_epochs_kept(proc, [resume])
    assert not (esc_home / "models" / "t.pt").exists()


@pytest.mark.parametrize("to", ["the process group", "one training process"])
def test_sigterm_stops_side_by_side_members(synth_dataset, esc_home, to):
    """To the group, as a service manager stops a job; to one member's process alone (an administrator, earlyoom):
    esc learns it was SIGTERM and stops the other member too. Either way nothing is left running."""
    install(synth_dataset, esc_home)
    members = [esc_home / "models" / f".t.member{k}.resume.pt" for k in (1, 2)]
    args = ("--preset", "default", "--members", "2", "--jobs", "2", "--threads", "1")
    with group_killed_at_the_end(start_training(esc_home, *args)) as proc:
        wait_for(members, proc)
        if to == "the process group":
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            trainers = [p for p in running_in_group(proc.pid, timeout=0) if p != proc.pid and is_trainer(p)]
            assert len(trainers) == 2, trainers
            os.kill(trainers[0], signal.SIGTERM)
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


def is_trainer(pid: int) -> bool:
    try:
        return b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
