"""How a command stops when it is asked to. SIGTERM (what `kill`, `timeout` and job schedulers send) stops esc as
Ctrl-C does: a KeyboardInterrupt where the work is, so it stops keeping what it saved (a training: its last finished
epoch, and the `--resume` hint), rather than the process dying without a word. After the first interrupt, more of
either are ignored while the command winds down, so that a second Ctrl-C does not cut short the message that says
what was kept. (Ctrl-\\ still ends it at once.)
"""

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ignore(signum, frame) -> None:
    """A handler that does nothing. Not SIG_IGN: a signal that came while the first was being handled (SIGTERM to
    the process group, then the interrupt esc passes on to its training processes) would find SIG_IGN when Python
    gets to it, and Python prints a traceback-like "Signal 15 ignored due to race condition"."""


def ignore_from_now_on() -> None:
    """Ignore SIGINT and SIGTERM in this process from now on (main thread only)."""
    for s in SIGNALS:
        signal.signal(s, ignore)


class StopOnSignals:
    """A context in which SIGINT and SIGTERM raise KeyboardInterrupt, once; `signum` is the signal that did
    (None if none came). The handlers before it are put back when it ends. Outside the main thread, where Python
    cannot set handlers, it does nothing."""

    def __init__(self):
        self.signum = None
        self._before = {}

    def __enter__(self) -> "StopOnSignals":
        if threading.current_thread() is threading.main_thread():
            self._before = {s: signal.signal(s, self._stop) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._before.items():
            signal.signal(s, handler)
        self._before = {}

    def _stop(self, signum, frame) -> None:
        ignore_from_now_on()
        self.signum = signum
        raise KeyboardInterrupt

    @property
    def terminated(self) -> bool:
        return self.signum == signal.SIGTERM

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by the signal that came: 130 for Ctrl-C, 143 for SIGTERM."""
        return 128 + (self.signum or signal.SIGINT)
