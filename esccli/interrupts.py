"""How a command stops when it is asked to. SIGTERM (what `kill`, `timeout` and job schedulers send) stops esc as
Ctrl-C does: a KeyboardInterrupt (Terminated) where the work is, so that it stops keeping what it saved (a training:
its last finished epoch, and the `--resume` hint) rather than dying without a word, and exits with the shell's code
for the signal (130, 143). While it winds down, more Ctrl-Cs are ignored, so that the message that says what was
kept is not cut short; a second SIGTERM ends it at once (`die_by`), as do Ctrl-\\ and `kill -9`. A signal the
process was started with ignored (a background job of a shell without job control ignores Ctrl-C) stays ignored.
"""

import os
import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore(signum, frame) -> None:
    """A handler that does nothing. Not SIG_IGN: a signal that came while the first was being handled (SIGTERM to
    the process group, then the interrupt esc passes on to its training processes) would find SIG_IGN when Python
    gets to it, and Python prints a traceback-like "Signal 15 ignored due to race condition"."""


def _end_at_once(signum, frame) -> None:
    """A second SIGTERM: end by it, without winding down."""
    die_by(signum)


def ignore_from_now_on(end_on_sigterm: bool = False) -> None:
    """While winding down (main thread only): ignore Ctrl-C, and SIGTERM too unless `end_on_sigterm` (then another
    SIGTERM ends the process at once). A signal ignored from the start stays so. A training process side by side
    ignores both: a SIGTERM to the process group and the interrupt esc passes on reach it together."""
    for s, handler in ((signal.SIGINT, ignore), (signal.SIGTERM, _end_at_once if end_on_sigterm else ignore)):
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, handler)


def die_by(signum: int) -> None:
    """End this process by `signum`, with its default action (it terminates), as if never handled. Returns only
    where the signal cannot be re-sent (then the caller exits as it would have)."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C raises KeyboardInterrupt: what esc passes on to its training processes is then
    SIGTERM too. (Two different signals that reach a process together can leave the KeyboardInterrupt of the first
    pending until a blocking call returns; the same signal twice is one.)"""


class StopOnSignals:
    """A context in which SIGINT and SIGTERM raise KeyboardInterrupt, once (then more Ctrl-Cs are ignored and a
    second SIGTERM ends the process: ignore_from_now_on); `signum` is the signal that did (None if none came). The
    handlers before it are put back when it ends. Signals the process ignores are left ignored; outside the main
    thread, where Python cannot set handlers, it does nothing."""

    def __init__(self):
        self.signum = None
        self._before = {}

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            with _held():
                self._before = {s: signal.getsignal(s) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
                for s in self._before:
                    signal.signal(s, self._stop)
        return self

    def __exit__(self, *exc) -> None:
        with _held():
            for s, handler in self._before.items():
                signal.signal(s, signal.SIG_DFL if handler is None else handler)  # None: a handler set from C
        self._before = {}

    def _stop(self, signum, frame) -> None:
        ignore_from_now_on(end_on_sigterm=True)
        self.signum = signum
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt

    @property
    def terminated(self) -> bool:
        return self.signum == signal.SIGTERM

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal that came: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)


class _held:
    """SIGINT and SIGTERM held back (not lost) in this thread meanwhile, where the platform can."""

    def __enter__(self):
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, set(SIGNALS)) if hasattr(signal, "pthread_sigmask") \
            else None

    def __exit__(self, *exc):
        if self._mask is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
