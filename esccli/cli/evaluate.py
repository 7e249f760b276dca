"""`esc evaluate` (not yet implemented)."""

from esccli.errors import EscError


def evaluate() -> None:
    """Not yet implemented."""
    raise EscError("not implemented yet")
