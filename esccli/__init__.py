"""esc: learn to recognise environmental sounds from ESC-50 and label anyone's recordings."""

__version__ = "0.1.0"
