"""`esc train` (not yet implemented)."""

from esccli.errors import EscError


def train() -> None:
    """Not yet implemented."""
    raise EscError("not implemented yet")
