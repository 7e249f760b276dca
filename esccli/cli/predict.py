"""`esc predict` (not yet implemented)."""

from esccli.errors import EscError


def predict() -> None:
    """Not yet implemented."""
    raise EscError("not implemented yet")
