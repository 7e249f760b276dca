"""The one exception type for mistakes a user can cause or fix.

The core raises EscError (or a subclass) with a message that says what is wrong and, where it helps, what to
do; the CLI prints it as one red line and exits with `exit_code`. Anything else is a bug and keeps its traceback.
"""


class EscError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class AudioError(EscError):
    """A file could not be read as audio (missing, empty, not audio, corrupt, NaN samples...)."""


class DatasetError(EscError):
    """The ESC-50 copy on disk is missing, incomplete or damaged."""


class DownloadError(EscError):
    """The archive could not be downloaded or is not what it should be."""


class ModelError(EscError):
    """A model file is missing, damaged, not a model, or from an incompatible version."""


class Interrupted(EscError):
    """Work stopped by Ctrl-C or SIGTERM, keeping what it had saved; the message says what, and how to go on."""
    exit_code = 130
    signum: int | None = None  # the signal that stopped it, where known (a training process's own SIGTERM)
