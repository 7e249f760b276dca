"""`esc featurize` (not yet implemented)."""

from esccli.errors import EscError


def featurize() -> None:
    """Not yet implemented."""
    raise EscError("not implemented yet")
