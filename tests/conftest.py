import os
from pathlib import Path

import pytest

from synthetic import make_archive, make_dataset


@pytest.fixture(autouse=True)
def esc_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty data dir; nothing touches the real home."""
    home = tmp_path / "esc-home"
    monkeypatch.setenv("ESC_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A read-only ESC-50-shaped folder: 1 clip per class per fold (250 clips). Copy it before changing it."""
    return make_dataset(tmp_path_factory.mktemp("synth") / "ESC-50-master", per_class=1)


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory, synth_dataset) -> Path:
    return make_archive(tmp_path_factory.mktemp("zip") / "ESC-50-master.zip", synth_dataset)
