"""The feature front end and its cache.

The log-mel front end is checked against librosa (the reference its docstring names), and for rate
independence (a clip at 44.1 kHz and the same clip at 16 kHz give the same features). The cache must be reused
when intact, and rebuilt, never used, when any part of it is damaged: each damaged cache is compared with a
fresh build. Then `esc featurize` itself: JSON, workers, and the one-line errors.
"""

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from conftest import TEST_PARAMS
from esccli import featurize as featurize_module
from esccli.cli import app
from esccli.dataset import read_metadata
from esccli.errors import DatasetError
from esccli.features import PRESETS, FeatureParams, log_mel, pad_or_trim
from esccli.featurize import (MEMORY_SHARE, FeatureParamsError, _featurize_files, audio_paths, build_bytes,
                              check_params, compute_features, load_or_build)
from esccli.fsutil import sha256_file
from esccli.paths import layout
from synthetic import assert_one_line_error, class_frequency, class_signal, install, read_cache

runner = CliRunner()
PARAMS = FeatureParams(**TEST_PARAMS)  # the parameters of the shared synth_features build



# --- the front end against librosa -------------------------------------------------------------------------------

def librosa_db(x: np.ndarray, p: FeatureParams) -> np.ndarray:
    """What the features.py docstring promises: melspectrogram + power_to_db(ref=np.max, top_db)."""
    x = pad_or_trim(x, p.clip_samples)
    S = librosa.feature.melspectrogram(y=x, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length, n_mels=p.n_mels,
                                       fmin=p.fmin, fmax=p.fmax, center=True, pad_mode="constant", power=2.0)
    return librosa.power_to_db(S, ref=np.max, top_db=p.top_db)


def odd_clips(sr: int) -> dict[str, np.ndarray]:
    """Clips that exercise the whole dB range: noisy tones, a floor-hitting tone after digital silence, short,
    long, full scale, silent."""
    t = np.arange(5 * sr) / sr
    return {
        "low tone": class_signal(0, 5.0, sr, seed=1),
        "high tone": class_signal(49, 5.0, sr, seed=3),
        "silence then tone": (0.9 * np.sin(2 * np.pi * 1234.5 * t) * (t > 2.0)).astype(np.float32),
        "short (padded)": class_signal(10, 1.3, sr, seed=4),
        "long (trimmed)": class_signal(30, 6.5, sr, seed=5),
        "full scale noise": np.random.default_rng(6).uniform(-1, 1, 5 * sr).astype(np.float32),
        "silent": np.zeros(5 * sr, np.float32),
    }


@pytest.fixture(scope="module")
def references():
    """{preset: (clips, librosa's dB of each)}, computed once for the tests below."""
    out = {}
    for preset in ("default", "seed"):
        p = PRESETS[preset]
        clips = odd_clips(p.sample_rate)
        out[preset] = clips, {name: librosa_db(x, p) for name, x in clips.items()}
    return out


@pytest.mark.parametrize("preset", ["default", "seed"])
def test_log_mel_matches_librosa_in_db(references, preset):
    p = replace(PRESETS[preset], scale="db")
    clips, refs = references[preset]
    ours = log_mel(np.stack([pad_or_trim(x, p.clip_samples) for x in clips.values()]), p)  # a batch, as featurize
    for (name, x), feats in zip(clips.items(), ours):
        ref = refs[name]
        assert feats.shape == ref.shape == (p.n_mels, p.frames), name
        if name == "silent":
            continue  # librosa puts silence at its own 0 dB maximum; esc at the floor (below)
        db = (feats.astype(np.float64) - 1.0) * (p.top_db / 2)  # back from [-1, 1] to dB below the clip's max
        # float32 sums differ in their last bits from CPU to CPU (0.0012 dB seen on an AVX-512 Xeon)
        assert np.abs(db - ref).max() < 5e-3, (name, np.abs(db - ref).max())
    assert np.abs(log_mel(clips["long (trimmed)"], p) - ours[4]).max() < 1e-6  # alone (any length) as in a batch
    assert list(clips)[-1] == "silent" and np.all(ours[-1] == -1.0)  # silence: every bin at the floor, not at 0 dB


def test_seed_image_scale_matches_librosa(references):
    """The notebook's 0..255 picture: min-max of librosa's dB, rounded. Equal wherever the unrounded value is not
    within 1e-3 dB of a rounding boundary, and never more than one grey level off there."""
    p = PRESETS["seed"]
    clips, refs = references["seed"]
    images = log_mel(np.stack([pad_or_trim(x, p.clip_samples) for x in clips.values()]), p)
    for name, img in zip(clips, images):
        ref = refs[name]
        lo, hi = ref.min(), ref.max()
        if hi - lo < 1e-6:  # a flat (silent) clip: all zero
            assert not img.any(), name
            continue
        exact = (ref - lo) / (hi - lo) * 255.0
        expected = np.round(exact)
        assert img.dtype == np.float32 and img.min() == 0 and img.max() == 255, name
        assert np.abs(img - expected).max() <= 1, name
        tolerance = 1e-3 * 255.0 / (hi - lo) + 1e-4  # 1e-3 dB in grey levels
        clear = np.abs(np.abs(exact - np.floor(exact)) - 0.5) > tolerance
        assert np.array_equal(img[clear], expected[clear]), name


def analytic_clip(sr: int, seconds: float = 5.0) -> np.ndarray:
    """A gated tone over many quiet sines, all below 7.8 kHz and computed from the formula at any rate: the same
    sound at 44.1 kHz and at 16 kHz (no noise, whose samples would differ, nothing that aliases at 16 kHz)."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * sr)) / sr
    gate = 0.5 * (1 + np.tanh(8 * np.sin(2 * np.pi * 1.5 * t)))  # smooth on/off: no broadband clicks
    x = 0.4 * np.sin(2 * np.pi * class_frequency(30) * t) * gate
    freqs, phases = rng.uniform(40, 7800, 40), rng.uniform(0, 2 * np.pi, 40)
    for f, ph in zip(freqs, phases):
        x += 0.006 * np.sin(2 * np.pi * f * t + ph)
    return x.astype(np.float32)


def test_the_same_clip_at_44k_and_16k_gives_the_same_features(tmp_path):
    p = PRESETS["default"]
    for sr in (44100, 16000):
        sf.write(tmp_path / f"{sr}.wav", analytic_clip(sr), sr, subtype="PCM_16")
    # through what featurize runs: load (resampling to 16 kHz), fit to 5 s (an ESC-50 clip: 5 s long), log-mel, float16
    hi, lo = _featurize_files([str(tmp_path / "44100.wav"), str(tmp_path / "16000.wav")], p)[0].astype(np.float32)
    THRESHOLD = 0.01  # mean |difference| on the [-1, 1] scale (0.4 dB); measured: 0.003 here, 0.04 for fmax 7800
    assert np.abs(hi - lo).mean() < THRESHOLD
    # a real mismatch is far above it: another fmax, or a 44.1 kHz file not resampled (read as if it were 16 kHz)
    for wrong in (replace(p, fmax=7800.0), replace(p, fmax=7000.0), replace(p, n_mels=64, fmin=100.0)):
        other = _featurize_files([str(tmp_path / "16000.wav")], wrong)[0][0].astype(np.float32)
        assert np.abs(other - lo).mean() > THRESHOLD, wrong
    unresampled = log_mel(sf.read(tmp_path / "44100.wav", dtype="float32")[0], p)
    assert np.abs(unresampled - lo).mean() > THRESHOLD


# --- the cache ---------------------------------------------------------------------------------------------------

N_SMALL = 25


@pytest.fixture(scope="module")
def small(tmp_path_factory, synth_dataset):
    """(root, fresh build) of the first 25 clips of the synthetic dataset: its audio folder linked, its csv cut.
    Small, so that every test can afford to build its own cache."""
    root = tmp_path_factory.mktemp("small") / "ESC-50"
    (root / "meta").mkdir(parents=True)
    (root / "audio").symlink_to(synth_dataset / "audio", target_is_directory=True)
    lines = (synth_dataset / "meta" / "esc50.csv").read_text().splitlines(keepends=True)
    (root / "meta" / "esc50.csv").write_text("".join(lines[: 1 + N_SMALL]))
    return root, load_or_build(layout(tmp_path_factory.mktemp("small-home")), PARAMS, dataset_root=root, jobs=1)


def same_features(a, b) -> bool:
    return (np.array_equal(a.features, b.features) and a.features.dtype == b.features.dtype == np.float16
            and a.filenames == b.filenames and np.array_equal(a.folds, b.folds)
            and np.array_equal(a.targets, b.targets) and np.array_equal(a.modulation, b.modulation)
            and a.modulation.dtype == b.modulation.dtype == np.float32)


def test_a_second_build_is_read_from_the_cache(esc_home, small, synth_features):
    root, fresh = small
    L = layout(esc_home)
    said = []
    first = load_or_build(L, PARAMS, dataset_root=root, jobs=1, notify=said.append)
    assert first.built and first.path.parent == L.features and said == []  # a first build is no rebuild
    assert same_features(first, fresh)  # another home, same parameters: the same numbers
    assert np.array_equal(first.features, synth_features.features[:N_SMALL])  # and the same as in the whole set
    index = json.loads((first.path / "index.json").read_text())
    assert index["sha256"] == sha256_file(first.path / "features.npy")
    assert index["shape"] == [N_SMALL, PARAMS.n_mels, PARAMS.frames] and index["dtype"] == "float16"
    assert FeatureParams.from_dict(index["params"]) == PARAMS
    assert [c["filename"] for c in index["clips"]] == [c.filename for c in read_metadata(root)]

    second = load_or_build(L, PARAMS, dataset_root=root, jobs=1, notify=said.append,
                           progress=lambda *a: pytest.fail("a cache hit computes nothing"))
    assert said == []
    assert not second.built and second.path == first.path
    assert same_features(second, first)
    assert sorted(p.name for p in first.path.iterdir()) == ["features.npy", "index.json", "modulation.npy"]  # no temporaries


def test_a_changed_parameter_makes_a_new_cache(esc_home, small, tmp_path):
    root, _ = small
    L = layout(esc_home)
    a = load_or_build(L, PARAMS, dataset_root=root, jobs=1)
    b = load_or_build(L, replace(PARAMS, n_mels=16), dataset_root=root, jobs=1)
    assert b.built and b.path != a.path and b.features.shape == (N_SMALL, 16, PARAMS.frames)
    c = load_or_build(L, replace(PARAMS, top_db=60.0), dataset_root=root, jobs=1)
    assert c.built and c.path not in (a.path, b.path)
    assert read_cache(a.path, PARAMS) is not None  # the first is still there and intact
    assert read_cache(a.path, replace(PARAMS, n_mels=16)) is None  # and is not taken for another
    assert not load_or_build(L, PARAMS, dataset_root=root, jobs=1).built
    # a changed csv (here: one row fewer) is another dataset: another cache
    other = tmp_path / "subset"
    (other / "meta").mkdir(parents=True)
    (other / "audio").symlink_to(root / "audio", target_is_directory=True)
    lines = (root / "meta" / "esc50.csv").read_text().splitlines(keepends=True)
    (other / "meta" / "esc50.csv").write_text("".join(lines[:-1]))
    d = load_or_build(L, PARAMS, dataset_root=other, jobs=1)
    assert d.built and d.path != a.path and len(d) == N_SMALL - 1
    assert np.array_equal(d.features, a.features[:-1])


def flip_byte(path: Path, at: int) -> None:
    b = bytearray(path.read_bytes())
    b[at] ^= 0x01
    path.write_bytes(bytes(b))


def edit_index(folder: Path, change) -> None:
    index = json.loads((folder / "index.json").read_text())
    change(index)
    (folder / "index.json").write_text(json.dumps(index))


def float32_copy(folder: Path) -> None:
    """Same numbers as float32, with a matching checksum: not the float16 the index says."""
    npy = folder / "features.npy"
    np.save(npy, np.load(npy).astype(np.float32))
    edit_index(folder, lambda ix: ix.update(sha256=sha256_file(npy)))


def killed_writer(folder: Path) -> None:
    """What a process killed half way through write_cache leaves: a new features.npy's temporary, and one whose
    rename happened with the old index still in place."""
    (folder / ".features.npy.k1ll3d.tmp").write_bytes(b"\x93NUMPY" + b"\0" * 100)
    (folder / ".index.json.k1ll3d.tmp").write_text("{")
    flip_byte(folder / "features.npy", 200)


def swap_names(ix):
    ix["clips"][0]["filename"], ix["clips"][1]["filename"] = ix["clips"][1]["filename"], ix["clips"][0]["filename"]


def next_target(ix):
    ix["clips"][7]["target"] = (ix["clips"][7]["target"] + 1) % 50


def other_shaped_modulation(folder: Path) -> None:
    """modulation.npy rewritten with one statistic fewer per clip, and index.json made to describe it (shape and
    checksum): only the check of the array against modulation.COUNT can tell."""
    np.save(folder / "modulation.npy", np.zeros((N_SMALL, 271), np.float32), allow_pickle=False)
    edit_index(folder, lambda ix: ix["modulation"].update(shape=[N_SMALL, 271],
                                                           sha256=sha256_file(folder / "modulation.npy")))


DAMAGE = {
    "truncated features.npy": lambda d: (d / "features.npy").write_bytes((d / "features.npy").read_bytes()[:-100]),
    "a flipped byte in the data": lambda d: flip_byte(d / "features.npy", (d / "features.npy").stat().st_size // 2),
    "a flipped byte in the npy header": lambda d: flip_byte(d / "features.npy", 60),
    "features.npy deleted": lambda d: (d / "features.npy").unlink(),
    "features.npy empty": lambda d: (d / "features.npy").write_bytes(b""),
    "index.json deleted": lambda d: (d / "index.json").unlink(),
    "index.json not json": lambda d: (d / "index.json").write_text('{"format": 1, "params'),
    "index.json a list": lambda d: (d / "index.json").write_text("[1, 2, 3]"),
    "index.json binary": lambda d: (d / "index.json").write_bytes(b"\xff\xfe\x00garbage"),
    "wrong shape": lambda d: edit_index(d, lambda ix: ix.update(shape=[N_SMALL, PARAMS.n_mels, PARAMS.frames + 1])),
    "wrong clip count": lambda d: edit_index(d, lambda ix: ix.update(clips=ix["clips"][:-1])),
    "clips not records": lambda d: edit_index(d, lambda ix: ix.update(clips=[1, 2, 3])),
    "a changed target": lambda d: edit_index(d, next_target),
    "a changed fold": lambda d: edit_index(d, lambda ix: ix["clips"][0].update(fold=5)),
    "swapped file names": lambda d: edit_index(d, swap_names),
    "other parameters": lambda d: edit_index(d, lambda ix: ix["params"].update(top_db=60.0)),
    "unknown parameter": lambda d: edit_index(d, lambda ix: ix["params"].update(colour="blue")),
    "future format": lambda d: edit_index(d, lambda ix: ix.update(format=99)),
    "a format that is not a number": lambda d: edit_index(d, lambda ix: ix.update(format=str(ix["format"]))),
    "no record of the audio files (a cache from before it was kept)": lambda d: edit_index(d, lambda ix: ix.pop("audio")),
    "another size recorded for a clip's audio": lambda d: edit_index(d, lambda ix: ix["audio"][2].__setitem__(1, 7)),
    "float32 array": float32_copy,
    "modulation.npy deleted": lambda d: (d / "modulation.npy").unlink(),
    "a flipped byte in modulation.npy": lambda d: flip_byte(d / "modulation.npy", (d / "modulation.npy").stat().st_size // 2),
    "modulation statistics of another version": lambda d: edit_index(d, lambda ix: ix["modulation"].update(version=0)),
    "no record of the modulation statistics": lambda d: edit_index(d, lambda ix: ix.pop("modulation")),
    "modulation statistics of another shape": lambda d: edit_index(d, lambda ix: ix["modulation"].update(shape=[N_SMALL, 3])),
    "a modulation array of another shape, its record to match": other_shaped_modulation,
    "no modulation statistics recorded for features in dB": lambda d: edit_index(d, lambda ix: ix.update(modulation=None)),
    "a killed writer's leftovers": killed_writer,
    "no shape recorded": lambda d: edit_index(d, lambda ix: ix.pop("shape")),
    "no shape recorded for the modulation statistics": lambda d: edit_index(d, lambda ix: ix["modulation"].pop("shape")),
    "index.json nested beyond reason": lambda d: (d / "index.json").write_text("[" * 100_000),
}

# what the note says for some of them
REASON = {
    "index.json deleted": "its index.json is missing",
    "a format that is not a number": "its index.json is damaged",
    "a flipped byte in the data": "features.npy does not match its checksum",
    "features.npy deleted": "features.npy is missing",
    "index.json not json": "its index.json is damaged",
    "index.json binary": "its index.json is damaged",
    "wrong clip count": f"its index lists {N_SMALL - 1} clips, features.npy holds {N_SMALL}",
    "swapped file names": "its clip list is not the dataset's",
    "future format": "it was made by another version of esc (cache format 99, this one reads 2)",
    "another size recorded for a clip's audio": "the dataset's audio files changed since it was built",
    "modulation.npy deleted": "modulation.npy is missing",
    "no record of the modulation statistics": "its index.json lacks 'modulation'",
    "no shape recorded": "its index.json lacks 'shape'",
    "index.json nested beyond reason": "its index.json is damaged",
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_cache_is_rebuilt_never_used(esc_home, small, damage):
    root, fresh = small
    L = layout(esc_home)
    folder = L.features / fresh.path.name  # the same parameters and csv name the same folder
    shutil.copytree(fresh.path, folder)
    assert not load_or_build(L, PARAMS, dataset_root=root, jobs=1).built  # the copy is a valid cache

    DAMAGE[damage](folder)
    said = []
    fs = load_or_build(L, PARAMS, dataset_root=root, jobs=1, notify=said.append)
    assert fs.built, f"a cache with {damage} was used"
    # a cache that is there is not rebuilt without a word
    assert len(said) == 1 and said[0].startswith(f"rebuilding the feature cache in {folder}: "), said
    assert said[0].endswith(REASON.get(damage, "")), said
    assert same_features(fs, fresh)  # what a fresh build gives
    again = read_cache(folder, PARAMS)  # and the rebuilt cache on disk is whole
    assert again is not None and same_features(again, fresh)
    assert sorted(p.name for p in folder.iterdir()) == ["features.npy", "index.json", "modulation.npy"]


def test_rebuild_recomputes_an_intact_cache(esc_home, small):
    root, fresh = small
    L = layout(esc_home)
    shutil.copytree(fresh.path, L.features / fresh.path.name)
    fs = load_or_build(L, PARAMS, dataset_root=root, jobs=1, rebuild=True)
    assert fs.built and same_features(fs, fresh)


def test_one_and_two_workers_give_identical_arrays(synth_dataset, synth_features):
    clips = read_metadata(synth_dataset)[:70]  # three chunks of 32: workers finish in any order
    two, mods = compute_features(audio_paths(synth_dataset, clips), PARAMS, jobs=2)
    assert np.array_equal(two, synth_features.features[:70])  # synth_features was built with jobs=1
    assert np.array_equal(mods, synth_features.modulation[:70])


def test_audio_replaced_under_the_same_csv_is_featurized_again(esc_home, small, tmp_path, monkeypatch):
    root = tmp_path / "ESC-50"
    shutil.copytree(small[0], root)  # the audio folder link becomes a real folder
    L = layout(esc_home)
    first = load_or_build(L, PARAMS, dataset_root=root, jobs=1)
    assert first.built and not load_or_build(L, PARAMS, dataset_root=root, jobs=1).built
    clips = read_metadata(root)
    target, other = root / "audio" / clips[4].filename, root / "audio" / clips[9].filename
    assert clips[4].target != clips[9].target and target.stat().st_size == other.stat().st_size  # as in ESC-50
    shutil.copy2(other, target)  # clip 4 now holds clip 9's sound, with clip 9's modification time (as cp -p)
    again = load_or_build(L, PARAMS, dataset_root=root, jobs=1)
    assert again.built and again.path == first.path
    assert np.array_equal(again.features[4], first.features[9])  # the new audio's features, not the old ones
    assert np.array_equal(np.delete(again.features, 4, 0), np.delete(first.features, 4, 0))
    assert not load_or_build(L, PARAMS, dataset_root=root, jobs=1).built  # and that is cached in turn

    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10 * 10**9))  # touched, the same bytes: rebuilt
    assert load_or_build(L, PARAMS, dataset_root=root, jobs=1).built  # too, as only the files' stamps are compared

    real = featurize_module.compute_features

    def touched_while_read(*a, **k):
        out = real(*a, **k)
        os.utime(other, ns=(stat.st_atime_ns, stat.st_mtime_ns + 20 * 10**9))
        return out

    monkeypatch.setattr(featurize_module, "compute_features", touched_while_read)
    assert load_or_build(L, PARAMS, dataset_root=root, jobs=1, rebuild=True).built
    monkeypatch.undo()
    assert json.loads((first.path / "index.json").read_text())["audio"] is None  # recorded as unknown,
    assert load_or_build(L, PARAMS, dataset_root=root, jobs=1).built  # so the next call builds it again

    other.unlink()  # a clip without its audio is an error, cache or not
    with pytest.raises(DatasetError, match=clips[9].filename):
        load_or_build(L, PARAMS, dataset_root=root, jobs=1)


def test_a_missing_or_broken_clip_is_a_clear_error(esc_home, small, tmp_path):
    root = tmp_path / "ESC-50"
    shutil.copytree(small[0], root)  # the audio folder link becomes a real folder
    name = read_metadata(root)[3].filename
    (root / "audio" / name).unlink()
    with pytest.raises(DatasetError, match=name):
        load_or_build(layout(esc_home), PARAMS, dataset_root=root, jobs=1)
    (root / "audio" / name).write_text("not audio")
    for jobs in (1, 2):  # in this process, and from a worker: the same error, with the same way out
        with pytest.raises(DatasetError, match=name) as e:
            load_or_build(layout(esc_home), PARAMS, dataset_root=root, jobs=jobs)
        assert "not a readable audio file" in str(e.value) and "run `esc fetch --force`" in str(e.value)
    wav = (root / "audio" / read_metadata(root)[4].filename)
    (root / "audio" / name).write_bytes(wav.read_bytes())
    wav.write_bytes(wav.read_bytes()[:1000])  # cut short since it was installed: it still decodes
    with pytest.raises(DatasetError, match="lasts 0.03 s, not 5 s as every ESC-50 clip does") as e:
        load_or_build(layout(esc_home), PARAMS, dataset_root=root, jobs=1)
    assert wav.name in str(e.value) and "run `esc fetch --force`" in str(e.value)
    assert not any(layout(esc_home).features.rglob("*.json"))  # nothing cached


def test_a_build_that_would_not_fit_in_memory_is_refused_before_any_work(esc_home, small, monkeypatch):
    root, fresh = small
    need = build_bytes(PARAMS, N_SMALL, 1)
    assert need > fresh.features.nbytes  # the array, and more for the chunk being computed
    # a 4x shorter hop: 4x the frames; shown without the modulation statistics, whose STFT (the same for any hop, a
    # floor under the estimate) comes only with features in dB
    images = replace(PARAMS, scale="image")
    assert build_bytes(replace(images, hop_length=PARAMS.hop_length // 4), N_SMALL, 1) > 3 * build_bytes(images, N_SMALL, 1)
    assert build_bytes(replace(PARAMS, hop_length=PARAMS.hop_length // 4), N_SMALL, 1) > need > build_bytes(images, N_SMALL, 1)
    assert build_bytes(PARAMS, 100, 2) > build_bytes(PARAMS, 100, 1)  # each busy worker holds a chunk,
    assert build_bytes(PARAMS, N_SMALL, 2) == need  # and a single chunk keeps one worker busy
    monkeypatch.setattr("esccli.featurize.physical_memory", lambda: int(need / MEMORY_SHARE) - 1)
    with pytest.raises(FeatureParamsError, match=r"GB of memory to compute, more than the .* GB allowed"):
        load_or_build(layout(esc_home), PARAMS, dataset_root=root, jobs=1)
    assert not layout(esc_home).features.exists() or not any(layout(esc_home).features.rglob("*.json"))
    monkeypatch.setattr("esccli.featurize.physical_memory", lambda: int(need / MEMORY_SHARE) + 1)
    assert load_or_build(layout(esc_home), PARAMS, dataset_root=root, jobs=1).built  # just enough: built
    monkeypatch.setattr("esccli.featurize.physical_memory", lambda: None)  # a system that does not say: no check
    assert load_or_build(layout(esc_home), PARAMS, dataset_root=root, jobs=1, rebuild=True).built


@pytest.mark.parametrize("change, words", [
    (dict(fmax=30000.0), "fmax"),
    (dict(top_db=0.0), "top_db must be positive"),
    (dict(top_db=float("nan")), "top_db must be a finite"),
    (dict(n_fft=1023), "n_fft must be even"),
    (dict(n_mels=0), "positive"),
    (dict(clip_seconds=float("nan")), "clip_seconds must be a finite"),
    (dict(clip_seconds=1e-9), "no samples"),
    (dict(scale="jpeg"), "scale"),
])
def test_bad_parameters_are_refused_before_any_work(esc_home, change, words):
    p = replace(PARAMS, **change)
    with pytest.raises(FeatureParamsError, match=words):
        check_params(p)
    with pytest.raises(ValueError):  # still a ValueError, as FeatureParams.validate raises
        load_or_build(layout(esc_home), p)


def test_every_preset_passes_the_checks():
    for p in PRESETS.values():
        check_params(p)


# --- the CLI -----------------------------------------------------------------------------------------------------

def featurize(*args):
    return runner.invoke(app, ["featurize", *args])


def test_cli_json_then_cached_then_two_workers(esc_home, synth_dataset):
    install(synth_dataset, esc_home)
    r = featurize("--n-mels", "32", "--jobs", "1", "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert set(out) == {"cache", "clips", "shape", "built", "seconds", "params"}
    assert out["clips"] == 250 and out["shape"] == [250, 32, 251] and out["built"] is True
    assert out["params"] == replace(PRESETS["default"], n_mels=32).to_dict()
    assert Path(out["cache"]).parent == esc_home / "features" and out["seconds"] >= 0
    params = FeatureParams.from_dict(out["params"])
    one = read_cache(Path(out["cache"]), params).features.copy()

    r = featurize("--n-mels", "32", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["built"] is False and json.loads(r.stdout)["cache"] == out["cache"]

    r = featurize("--n-mels", "32", "--jobs", "2", "--rebuild", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["built"] is True
    assert np.array_equal(read_cache(Path(out["cache"]), params).features, one)

    r = featurize("--n-mels", "32")  # without --json: the folder on stdout, a summary on stderr
    assert r.exit_code == 0 and r.stdout.strip() == out["cache"] and "found in the cache" in r.stderr


def test_cli_without_a_dataset_says_run_esc_fetch(esc_home):
    r = featurize()
    assert r.exit_code == 1
    assert_one_line_error(r, "esc fetch", "not installed")


@pytest.mark.parametrize("args, words", [
    (["--fmax", "30000"], ["fmax", "sample_rate/2"]),
    (["--fmin", "9000"], ["fmin"]),
    (["--sample-rate", "8000"], ["fmax"]),  # the default fmax (8 kHz) is above 4 kHz
    (["--top-db", "0"], ["top_db"]),
    (["--top-db", "nan"], ["top_db"]),
    (["--n-fft", "1023"], ["n_fft"]),
    (["--hop-length", "0"], ["positive"]),
    (["--scale", "jpeg"], ["scale"]),
    (["--preset", "nope"], ["unknown feature preset", "default, seed"]),
])
def test_cli_bad_parameters_are_one_clear_line(esc_home, synth_dataset, args, words):
    install(synth_dataset, esc_home)
    assert_one_line_error(featurize(*args), "error:", *words)
    assert not (esc_home / "features").exists()  # refused before any work


def test_cli_features_too_large_for_the_memory_are_one_clear_line(esc_home, synth_dataset, monkeypatch):
    install(synth_dataset, esc_home)
    monkeypatch.setattr("esccli.featurize.physical_memory", lambda: 8 * 2**30)  # an 8 GB laptop
    assert_one_line_error(featurize("--hop-length", "1"), "error:", "GB of memory", "6.9 GB allowed", "8.6 GB",
                          "longer hop")
    assert not (esc_home / "features").exists() or not any((esc_home / "features").rglob("*.json"))


def test_cli_too_many_mels_for_the_fft_is_one_clear_line(esc_home, synth_dataset):
    install(synth_dataset, esc_home)
    r = featurize("--n-mels", "300", "--n-fft", "256")
    assert_one_line_error(r, "mel bands would be empty", "fewer mels")
    assert "Warning" not in r.output


def test_image_features_carry_no_modulation_statistics(esc_home, small):
    """Only features in dB hold the clips' modulation statistics: a texture network, which alone hears them, reads
    nothing else, and the seed preset's 0-255 images would pay for them at 44.1 kHz."""
    root, _ = small
    images = replace(PARAMS, scale="image")
    fs = load_or_build(layout(esc_home), images, dataset_root=root, jobs=1)
    assert fs.modulation is None and fs.built
    assert sorted(p.name for p in fs.path.iterdir()) == ["features.npy", "index.json"]
    assert json.loads((fs.path / "index.json").read_text())["modulation"] is None
    again = load_or_build(layout(esc_home), images, dataset_root=root, jobs=1)
    assert not again.built and again.modulation is None
