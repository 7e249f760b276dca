"""`esc fetch` (not yet implemented)."""

from esccli.errors import EscError


def fetch() -> None:
    """Not yet implemented."""
    raise EscError("not implemented yet")
