"""`esc spectrogram` (not yet implemented)."""

from esccli.errors import EscError


def spectrogram() -> None:
    """Not yet implemented."""
    raise EscError("not implemented yet")
