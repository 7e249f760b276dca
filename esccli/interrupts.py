"""How a command stops when it is asked to. SIGTERM (what `kill`, `timeout` and job schedulers send) stops esc as
Ctrl-C does: a KeyboardInterrupt (Terminated) where the work is, so that it stops keeping what it saved (a training:
its last finished epoch, and the `--resume` hint) rather than dying without a word. While it winds down, more
Ctrl-Cs are ignored, so that the message that says what was kept is not cut short; a SIGTERM a second or more after
the first ends it at once (`timeout` sends two together), as do Ctrl-\\ and `kill -9`. A signal the process was
started with ignored (a background job of a shell without job control ignores Ctrl-C) stays ignored. Once esc has
said what it kept, it ends by the signal itself (`end_by`), as Python does for an uncaught KeyboardInterrupt: the
shell shows 130 or 143, and a shell loop running esc stops on Ctrl-C rather than going on to its next command.
"""

import os
import signal
import sys
import threading
import time

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore(signum, frame) -> None:
    """A handler that does nothing. Not SIG_IGN: a signal that came while the first was being handled (SIGTERM to
    the process group, then the interrupt esc passes on to its training processes) would find SIG_IGN when Python
    gets to it, and Python prints a traceback-like "Signal 15 ignored due to race condition"."""


def ignore_from_now_on(on_sigterm=ignore) -> None:
    """While winding down (main thread only): ignore Ctrl-C, and handle SIGTERM by `on_sigterm`. A signal ignored
    from the start stays so. A training process side by side ignores both: a SIGTERM to the process group and the
    interrupt esc passes on can reach it together."""
    for s, handler in ((signal.SIGINT, ignore), (signal.SIGTERM, on_sigterm)):
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, handler)


def end_by(signum: int) -> None:
    """End this process by `signum`'s default action (it terminates), after flushing what it printed. Returns only
    where the signal cannot be re-sent (outside the main thread, or on Windows): the caller then exits as it would
    have."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more to say there
            pass
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: what esc passes on to its training processes is then
    SIGTERM too. (Two different signals that reach a process together can leave the KeyboardInterrupt of the first
    pending until a blocking call returns; the same signal twice is one.)"""


class StopOnSignals:
    """A context in which SIGINT and SIGTERM raise KeyboardInterrupt, once (then more Ctrl-Cs are ignored and a
    SIGTERM after GRACE ends the process); `signum` is the signal that did (None if none came). The handlers before
    it are put back when it ends. Signals the process ignores are left ignored; outside the main thread, where
    Python cannot set handlers, it does nothing."""

    GRACE = 1.0  # seconds after the first SIGTERM during which another is the same request (`timeout` sends two)

    def __init__(self):
        self.signum = None
        self._before = {}
        self._since = 0.0

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            with held():
                self._before = {s: signal.getsignal(s) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
                for s in self._before:
                    signal.signal(s, self._stop)
        return self

    def __exit__(self, *exc) -> None:
        with held():
            for s, handler in self._before.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set from C
        self._before = {}

    def _stop(self, signum, frame) -> None:
        ignore_from_now_on(on_sigterm=self._again)
        self.signum, self._since = signum, time.monotonic()
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    def _again(self, signum, frame) -> None:
        """SIGTERM while winding down: the same request if within GRACE of the first signal, else "now"."""
        if time.monotonic() - self._since >= self.GRACE:
            end_by(signum)


class held:
    """`signals` (SIGINT and SIGTERM) held back, not lost, in this thread meanwhile, where the platform can. A
    process started meanwhile starts with them held back too."""

    def __init__(self, signals=SIGNALS):
        self.signals = set(signals)

    def __enter__(self):
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.signals) if hasattr(signal, "pthread_sigmask") \
            else None

    def __exit__(self, *exc):
        if self._mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
