"""Where esc keeps its files: one data directory holding the dataset, the feature caches and the models.

The data directory is, in order of precedence: the `--data-dir` option, the ESC_HOME environment variable,
then platformdirs' per-user data directory. Tests set ESC_HOME to a temporary folder.
"""

import os
from dataclasses import dataclass
from pathlib import Path

ENV_VAR = "ESC_HOME"
APP_NAME = "esc"


def default_home() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


@dataclass(frozen=True)
class Layout:
    """The folders under one data directory."""

    home: Path

    @property
    def dataset(self) -> Path:
        """The installed, verified ESC-50 copy (meta/esc50.csv, audio/...)."""
        return self.home / "ESC-50"

    @property
    def downloads(self) -> Path:
        return self.home / "downloads"

    @property
    def features(self) -> Path:
        return self.home / "features"

    @property
    def models(self) -> Path:
        return self.home / "models"

    @property
    def locks(self) -> Path:
        return self.home / "locks"


def layout(home: Path | str | None = None) -> Layout:
    return Layout(Path(home).expanduser() if home else default_home())
