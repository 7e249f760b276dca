import os
import signal
from pathlib import Path

import pytest

from synthetic import make_archive, make_dataset

# The interrupt tests send Ctrl-C (SIGINT) to esc and its processes. A shell's background job starts with SIGINT
# ignored, which esc respects (esccli/interrupts.py), so in a suite started that way (`pytest &`) no interrupt would
# arrive: the suite starts from Python's own handler, as it does in a terminal.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(autouse=True)
def esc_home(tmp_path, monkeypatch) -> Path:
    """Every test gets its own empty data dir; nothing touches the real home."""
    home = tmp_path / "esc-home"
    monkeypatch.setenv("ESC_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture(autouse=True, scope="session")
def fp32_everywhere():
    """Training in the tests (in this process) picks fp32 under --precision auto on every CPU, so that the tiny
    models they train, and what those predict, do not depend on whether the CPU computes bf16 (on one that does, a
    tiny model trained in bf16 missed a 0.2 s sound that test_predict expects). Tests of bf16 ask for it, or patch
    this. Session-wide, so that the session's trained fixtures are trained so too."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("esccli.train.cpu_has_bf16", lambda: False)
        yield


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """A read-only ESC-50-shaped folder: 1 clip per class per fold (250 clips). Copy it before changing it."""
    return make_dataset(tmp_path_factory.mktemp("synth") / "ESC-50-master", per_class=1)


@pytest.fixture(scope="session")
def synth_archive(tmp_path_factory, synth_dataset) -> Path:
    return make_archive(tmp_path_factory.mktemp("zip") / "ESC-50-master.zip", synth_dataset)


# Small features (1 s clips, 32 mels) and a tiny network keep training in tests to seconds.
TEST_PARAMS = dict(clip_seconds=1.0, n_mels=32)
TINY_RECIPE = dict(arch_args={"stem": 8, "channels": [16, 32], "head": "flatten"}, epochs=10, batch_size=16, lr=3e-3, warmup_epochs=1,
                   mixup_alpha=0.0, crop_frames=0, freq_masks=0, time_masks=0, label_smoothing=0.0, members=1,
                   ensemble_mean="arithmetic")


def tiny_recipe(**kw):
    from esccli.recipes import get_recipe

    return get_recipe("default").with_overrides(**{**TINY_RECIPE, **kw})


@pytest.fixture(scope="session")
def synth_features(tmp_path_factory, synth_dataset):
    from esccli.features import FeatureParams
    from esccli.featurize import load_or_build
    from esccli.paths import layout

    home = tmp_path_factory.mktemp("feat-home")
    return load_or_build(layout(home), FeatureParams(**TEST_PARAMS), dataset_root=synth_dataset, jobs=1)


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, synth_features) -> Path:
    """A tiny escnet trained on the synthetic dataset with fold 5 held out (read-only: copy before changing)."""
    from esccli.train import train

    path = tmp_path_factory.mktemp("models") / "tiny.pt"
    train(synth_features, tiny_recipe(), path, fold=5, seed=0)
    return path
