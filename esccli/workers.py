"""Trainings side by side: folds of a cross-validation, or members of an ensemble, each in a process of its own.

One fresh spawned process per task, each exiting as soon as the process that started it is gone. No more tasks
are handed to the pool than can run at once, so Ctrl-C reaches every task that has started (it goes to the whole
process group): they stop, keeping what they saved (a training: its last finished epoch), the others never
start, and `interrupted` is raised. An interrupt sent to the starting process alone (by a program that started
it, as benchmarks/crossval.py does) is passed on to the tasks, so it stops them too rather than waiting for them
to end. A task stops on the first interrupt or SIGTERM and ignores any more (Ctrl-C and the passed-on one arrive
together, as do a SIGTERM to the process group and the passed-on interrupt); one that was still starting up when
Ctrl-C came stops as it begins. A task stopped on its own (a SIGTERM to it alone) stops the others too. Workers
waiting for a task ignore Ctrl-C (no traceback from an idle or starting process), not SIGTERM (the pool ends them
by it when it breaks). After a failure no new task starts; the running ones finish, then the failure is raised.
"""

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable

from esccli.errors import Interrupted
from esccli.interrupts import SIGNALS, Terminated, held, ignore, ignore_from_now_on


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
    context = multiprocessing.get_context("spawn")
    stop = context.Event()  # set once interrupted: a task that had not yet started when told to stop, stops
    others = set(multiprocessing.active_children())  # this process's children that are not the pool's
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=context, max_tasks_per_child=1,
                               initializer=_start_worker, initargs=(stop,))
    waiting = list(reversed(list(enumerate(tasks))))  # popped from the end: in order
    running = {}
    try:
        while waiting or running:
            while waiting and len(running) < jobs:
                i, task = waiting.pop()
                running[_submit(pool, fn, task)] = i
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in done:
                i = running.pop(f)
                result = f.result()  # a failure: nothing new starts (below)
                if on_result:
                    on_result(i, result)
    except (KeyboardInterrupt, Interrupted) as e:  # this process was interrupted, or a task (a SIGTERM to it alone)
        interrupted.signum = _signal_of(e)
        _stop_tasks(pool, stop, others, interrupted.signum)
        raise interrupted from None
    except BaseException:
        try:
            wait(running)  # the running tasks finish
        except KeyboardInterrupt as e:  # unless interrupted meanwhile; the failure is still what is raised
            _stop_tasks(pool, stop, others, _signal_of(e))
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _submit(pool: ProcessPoolExecutor, fn: Callable, task: tuple):
    """pool.submit with Ctrl-C held back meanwhile in this thread. A worker process the pool starts (here or in
    its manager thread, created by the first submit) inherits that: Ctrl-C cannot reach it while it starts up, and
    its initializer ignores it. (A Ctrl-C held back reaches this process as soon as the submit returns.)"""
    with held({signal.SIGINT}):
        return pool.submit(_run, fn, task)


def _signal_of(e: BaseException) -> int:
    """The signal that stopped this process (or a task: its Interrupted says), SIGTERM or else SIGINT: the one to
    pass on to the tasks (SIGTERM sent to the process group reaches them too, and one signal twice is one)."""
    return signal.SIGTERM if isinstance(e, Terminated) or getattr(e, "signum", None) == signal.SIGTERM \
        else signal.SIGINT


def _stop_tasks(pool: ProcessPoolExecutor, stop, others: set, signum: int = signal.SIGINT) -> None:
    """Interrupted: stop the running tasks and any about to start, and wait for them. The pool's processes are
    sent `signum` (running tasks stop on it, idle workers ignore Ctrl-C; SIGTERM ends them); a second Ctrl-C
    meanwhile is ignored, so the wait is not cut short."""
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    before = signal.signal(signal.SIGINT, ignore) if main else None
    try:
        stop.set()
        for p in set(multiprocessing.active_children()) - others:
            try:
                os.kill(p.pid, signum)
            except ProcessLookupError:  # it ended meanwhile
                pass
        pool.shutdown(wait=True, cancel_futures=True)
    finally:
        if main:
            signal.signal(signal.SIGINT, before)


_stop = None  # in a worker process: the pool's stop event
_ignored: set = set()  # ... the signals it was started with ignored (esc's were: they stay so)
_received = None  # ... the signal that stopped its task


def _start_worker(stop) -> None:
    """A worker process's initializer: Ctrl-C ignored while it waits for a task (no traceback from an idle
    process), then no longer held back (_submit)."""
    global _stop, _ignored
    _stop = stop
    _ignored = {s for s in SIGNALS if signal.getsignal(s) is signal.SIG_IGN}
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def _interrupt_once(signum, frame) -> None:
    global _received
    _received = signum
    ignore_from_now_on()
    raise KeyboardInterrupt


def _run(fn: Callable, task: tuple):
    # a running task stops on the first Ctrl-C or SIGTERM (sent to the whole process group, it reaches the tasks
    # too) and ignores any more; it keeps what it saved (a training: its last finished epoch, in its resume file)
    global _received
    _received = None
    for s in set(SIGNALS) - _ignored:
        signal.signal(s, _interrupt_once)
    if _stop is not None and _stop.is_set():  # told to stop before it could hear it
        _interrupt_once(signal.SIGINT, None)
    exit_with_parent()
    try:
        return fn(*task)
    except (KeyboardInterrupt, Interrupted) as e:  # the parent learns which signal stopped it
        e.signum = _received
        raise
    finally:
        ignore_from_now_on()  # done: an interrupt now would only cut short its exit
