import platform

import pytest

from esccli import memory


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_glibc_takes_both_settings():
    assert memory.keep_freed_memory(1 << 20) is True
    assert memory.keep_freed_memory() is True  # and again, with another limit: settings, not a one-off


def test_elsewhere_nothing_changes(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False


def test_training_asks_for_it(monkeypatch, tmp_path, synth_features):
    from conftest import tiny_recipe

    from esccli import train

    asked = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: asked.append(True))
    train.train(synth_features, tiny_recipe(epochs=1), tmp_path / "m.pt", fold=5, seed=0)
    assert asked == [True] and (tmp_path / "m.pt").is_file()
