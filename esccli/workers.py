"""Trainings side by side: folds of a cross-validation, or members of an ensemble, each in a process of its own.

One fresh spawned process per task (an idle worker would print a traceback on Ctrl-C), each exiting as soon as
the process that started it is gone. Ctrl-C cancels the tasks that have not started and waits for the running
ones, which save their last finished epoch, then raises `interrupted`. The first task to fail stops the rest.
"""

import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
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
                               max_tasks_per_child=1)
    try:
        futures = {pool.submit(_run, fn, task): i for i, task in enumerate(tasks)}
        for f in as_completed(futures):
            result = f.result()
            if on_result:
                on_result(futures[f], result)
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        raise interrupted from None
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run(fn: Callable, task: tuple):
    exit_with_parent()
    return fn(*task)
