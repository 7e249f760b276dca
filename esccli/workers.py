"""Trainings side by side: folds of a cross-validation, or members of an ensemble, each in a process of its own.

One fresh spawned process per task, each exiting as soon as the process that started it is gone. No more tasks
are handed to the pool than can run at once, so Ctrl-C reaches every task that has started (it goes to the whole
process group): they save their last finished epoch and stop, the others never start, and `interrupted` is
raised. An interrupt sent to the starting process alone (`kill -INT`, as a job manager does) is passed on to the
running tasks, so it stops them too rather than waiting for them to end; a task stops on the first interrupt and
ignores any more (the terminal's and the passed-on one arrive together). Workers waiting for a task ignore Ctrl-C
(no traceback from an idle process). After a failure no new task starts; the running ones finish, then the
failure is raised.
"""

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable


def exit_with_parent() -> None:
    """In a worker process: exit as soon as the process that started it is gone (killed, not just interrupted),
    instead of training on as an orphan. Progress up to the last finished epoch is in the resume file."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def run_side_by_side(fn: Callable, tasks: list[tuple], jobs: int, interrupted: Exception,
                     on_result: Callable[[int, object], None] | None = None) -> None:
    """Run `fn(*task)` for every task, `jobs` at a time, each in a new process; `on_result(i, result)` is called
    in this process as task i finishes. `fn` must be importable (a module-level function)."""
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                               max_tasks_per_child=1, initializer=_ignore_ctrl_c)
    waiting = list(reversed(list(enumerate(tasks))))  # popped from the end: in order
    running = {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                i, task = waiting.pop()
                running[pool.submit(_run, fn, task)] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                i = running.pop(f)
                result = f.result()  # a failure: nothing new starts (below)
                if on_result:
                    on_result(i, result)
    except KeyboardInterrupt:
        _interrupt_children()
        pool.shutdown(wait=True, cancel_futures=True)
        raise interrupted from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _ignore_ctrl_c() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_children() -> None:
    """Send an interrupt to this process's worker processes: running tasks stop, idle workers ignore it."""
    for p in multiprocessing.active_children():
        try:
            os.kill(p.pid, signal.SIGINT)
        except ProcessLookupError:  # it ended meanwhile
            pass


def _interrupt_once(signum, frame) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _run(fn: Callable, task: tuple):
    signal.signal(signal.SIGINT, _interrupt_once)  # a running task stops on the first Ctrl-C (its progress is saved)
    exit_with_parent()
    return fn(*task)
