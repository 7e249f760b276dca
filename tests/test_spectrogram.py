"""`esc spectrogram` and esccli.plotting: pictures of any audio file, the network's input image, confusion matrices."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from esccli import audio, plotting
from esccli.cli import app
from esccli.cli.spectrogram import Preset
from esccli.features import PRESETS, log_mel
from synthetic import assert_one_line_error

runner = CliRunner()
SMALL = ["--width", "3", "--height", "2", "--dpi", "40"]  # 120 x 80 pixels: quick to draw


def tone(seconds: float, sr: int, freq: float = 440.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t) + 0.01 * np.random.default_rng(0).standard_normal(t.size)
    x = x.astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def write(path: Path, x: np.ndarray, sr: int) -> Path:
    fmt = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS")}[path.suffix]
    sf.write(path, x, sr, format=fmt[0], subtype=fmt[1])
    return path


def run(*args):
    return runner.invoke(app, ["spectrogram", *map(str, args)])


def read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(path)


# --- pictures of files of any kind ----------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg"])
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_picture_of_any_format_and_rate(tmp_path, ext, sr):
    src = write(tmp_path / f"stereo{ext}", tone(0.3, sr, channels=2), sr)
    out = tmp_path / "pic.png"
    r = run(src, "-o", out, *SMALL)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == str(out)
    h, w, _ = read_png(out).shape
    assert (w, h) == (120, 80)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # the temporary file was renamed


def test_default_size_and_default_name_in_current_folder(tmp_path, monkeypatch):
    src = write(tmp_path / "long clip.flac", tone(12.0, 44100, channels=2), 44100)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = run(src)
    assert r.exit_code == 0, r.output
    assert r.stdout.strip() == "long clip.png"
    pixels = read_png(work / "long clip.png")
    h, w, channels = pixels.shape
    assert (w, h) == (1000, 400) and channels in (3, 4)
    assert pixels[..., :3].std() > 0.05  # not a blank canvas


def test_whole_file_is_shown_not_five_seconds(tmp_path):
    params = PRESETS["default"]
    src = write(tmp_path / "a.wav", tone(12.0, 16000), 16000)
    power, factor, frames = plotting.mel_power(src, params)
    assert frames == 1 + 12 * 16000 // params.hop_length
    assert factor == 1 and power.shape == (params.n_mels, frames)


def test_long_files_are_read_in_blocks_and_pooled(tmp_path, monkeypatch):
    import librosa

    params = PRESETS["default"]
    x = tone(12.0, 16000, freq=1000.0)
    src = write(tmp_path / "a.wav", x, 16000)
    reference = librosa.feature.melspectrogram(
        y=audio.load_audio(src, 16000), sr=16000, n_fft=params.n_fft, hop_length=params.hop_length,
        n_mels=params.n_mels, fmin=params.fmin, fmax=params.fmax, center=True, pad_mode="constant")
    monkeypatch.setattr(plotting, "stream_audio", lambda p, sr: audio.stream_audio(p, sr, block_seconds=0.77))
    power, factor, frames = plotting.mel_power(src, params, max_columns=100)
    assert frames == 601 and factor == 7 and power.shape == (params.n_mels, 86)  # ceil(601 / 100) frames per column
    np.testing.assert_allclose(power, plotting._pool_max(reference, 7), rtol=1e-3, atol=1e-3 * reference.max())


# --- --raw: what the network sees -----------------------------------------------------------------------------

@pytest.mark.parametrize("preset", ["default", "seed"])
@pytest.mark.parametrize("seconds", [0.3, 12.0])
def test_raw_is_one_pixel_per_mel_and_frame(tmp_path, preset, seconds):
    params = PRESETS[preset]
    src = write(tmp_path / "a.wav", tone(seconds, 22050, freq=300.0, channels=2), 22050)
    out = tmp_path / "raw.png"
    r = run(src, "--raw", "--preset", preset, "-o", out)
    assert r.exit_code == 0, r.output
    img = read_png(out)
    assert img.shape == (params.n_mels, params.frames)  # one grey channel
    # exactly the features, 0..255, low frequencies at the bottom
    feats = log_mel(audio.load_audio(src, params.sample_rate), params)
    expected = (feats + 1) * 127.5 if params.scale == "db" else feats
    np.testing.assert_allclose(img * 255, np.flipud(np.clip(np.rint(expected), 0, 255)), atol=1.0)
    loudest_row = int(np.argmax(img[:, : params.frames // 20].mean(axis=1)))
    assert loudest_row > params.n_mels // 2  # a 300 Hz tone is near the bottom


def test_presets_offered_are_the_feature_presets():
    assert {p.value for p in Preset} == set(PRESETS)


# --- refusing, with one clear line ----------------------------------------------------------------------------

@pytest.fixture
def wav(tmp_path) -> Path:
    return write(tmp_path / "ok.wav", tone(0.3, 16000), 16000)


def test_missing_file(tmp_path):
    assert_one_line_error(run(tmp_path / "nope.wav", "-o", tmp_path / "x.png"), "nope.wav", "no such file")
    assert not (tmp_path / "x.png").exists()
    (tmp_path / "x.png").write_bytes(b"")  # a misspelt input is the mistake to hear of, not the output's --force
    assert_one_line_error(run(tmp_path / "nope.wav", "-o", tmp_path / "x.png"), "nope.wav", "no such file")


def test_directory_as_input(tmp_path):
    (tmp_path / "folder.wav").mkdir()
    assert_one_line_error(run(tmp_path / "folder.wav", "-o", tmp_path / "x.png"), "folder")


def test_empty_file(tmp_path):
    (tmp_path / "empty.wav").write_bytes(b"")
    assert_one_line_error(run(tmp_path / "empty.wav", "-o", tmp_path / "x.png"), "empty")


@pytest.mark.parametrize("raw", [False, True])
def test_not_audio(tmp_path, raw):
    (tmp_path / "notes.wav").write_text("these are not sounds\n" * 100)
    args = ["--raw"] if raw else []
    assert_one_line_error(run(tmp_path / "notes.wav", "-o", tmp_path / "x.png", *args), "not a readable audio file")
    assert not (tmp_path / "x.png").exists()


def test_silence_is_drawn_at_the_floor_not_at_full_loudness(tmp_path):
    import matplotlib

    src = write(tmp_path / "silent.wav", np.zeros(22050, np.float32), 22050)
    for preset in PRESETS.values():  # what the network sees: the bottom of its scale
        assert np.all(log_mel(np.zeros(preset.clip_samples, np.float32), preset) == (-1.0 if preset.scale == "db" else 0.0))
    r = run(src, "--raw", "-o", tmp_path / "raw.png")
    assert r.exit_code == 0, r.output
    assert np.all(read_png(tmp_path / "raw.png") == 0.0)  # black
    r = run(src, "-o", tmp_path / "pic.png", *SMALL)
    assert r.exit_code == 0, r.output
    middle = read_png(tmp_path / "pic.png")[40, 40, :3]  # inside the axes
    np.testing.assert_allclose(middle, matplotlib.colormaps[plotting.COLORMAP](0.0)[:3], atol=0.02)


def test_only_png_pictures_are_written(tmp_path, wav):
    assert_one_line_error(run(wav, "-o", tmp_path / "x.jpg"), "PNG pictures only", "x.png")
    assert not (tmp_path / "x.jpg").exists()
    # an existing file of another kind: the name is the mistake to fix, not the missing --force
    assert_one_line_error(run(wav, "-o", wav), "PNG pictures only")


def test_the_audio_file_is_never_overwritten_by_its_picture(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the picture goes by default, under the file's own name
    audio_named_png = write(tmp_path / "x.wav", tone(1.0, 16000), 16000).rename(tmp_path / "weird.png")
    data = audio_named_png.read_bytes()
    for force in ([], ["--force"]):
        assert_one_line_error(run(audio_named_png, *SMALL, *force), "is the audio file itself", "-o")
        assert_one_line_error(run(audio_named_png, "-o", "weird.png", *SMALL, *force), "is the audio file itself")
    for draw in (lambda: plotting.spectrogram_figure(audio_named_png, PRESETS["default"], "weird.png", 3, 2, 40),
                 lambda: plotting.raw_image(audio_named_png, PRESETS["default"], "weird.png")):
        with pytest.raises(plotting.EscError, match="is the audio file itself"):  # the core refuses it too
            draw()
    assert audio_named_png.read_bytes() == data


@pytest.mark.parametrize("samples", [1, 100])
def test_a_recording_too_short_to_draw_is_one_line(tmp_path, samples):
    short = write(tmp_path / "short.wav", tone(1.0, 16000)[:samples], 16000)
    assert_one_line_error(run(short, "-o", tmp_path / "s.png", *SMALL), "too short to draw", "20 ms")
    assert not (tmp_path / "s.png").exists()


def test_a_tiny_picture_draws_without_warnings(tmp_path, wav, recwarn):
    r = run(wav, "-o", tmp_path / "t.png", "--width", "1", "--height", "1", "--dpi", "40")
    assert r.exit_code == 0 and r.stderr == "" and (tmp_path / "t.png").is_file()
    assert not [w for w in recwarn if "constrained" in str(w.message)]


def test_long_recordings_have_ticks_on_whole_minutes():
    # a 30-minute recording: 5:00, 10:00 ... rather than matplotlib's 8:20, 16:40, 25:00
    assert [plotting.time_step(s) for s in (90, 600, 1800, 5400, 10**6)] == [15, 120, 300, 900, 86400]


def test_output_folder_missing(tmp_path, wav):
    assert_one_line_error(run(wav, "-o", tmp_path / "no" / "such" / "x.png"), "no such folder")
    assert not (tmp_path / "no").exists()


def test_output_is_a_folder(tmp_path, wav):
    (tmp_path / "pics").mkdir()
    assert_one_line_error(run(wav, "-o", tmp_path / "pics"), "is a folder")
    assert_one_line_error(run(wav, "-o", tmp_path / "pics", "--force"), "is a folder")


def test_output_inside_a_file(tmp_path, wav):
    assert_one_line_error(run(wav, "-o", wav / "x.png"), "not a folder")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_output_folder_not_writable(tmp_path, wav):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line_error(run(wav, "-o", locked / "x.png"), "permission denied")
    finally:
        locked.chmod(0o700)


def test_write_failure_is_one_line(tmp_path, monkeypatch):
    """Whatever the OS says while writing (full disk, permissions) becomes an EscError naming the file."""
    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(plotting, "atomic_write", refuse)
    with pytest.raises(plotting.EscError, match="x.png: cannot write"):
        plotting._save(tmp_path / "x.png", lambda f: None)


@pytest.mark.parametrize("raw", [False, True])
def test_existing_output_needs_force(tmp_path, wav, raw):
    out = tmp_path / "x.png"
    out.write_bytes(b"keep me")
    args = ["--raw"] if raw else SMALL
    assert_one_line_error(run(wav, "-o", out, *args), "already exists", "--force")
    assert out.read_bytes() == b"keep me"
    r = run(wav, "-o", out, "--force", *args)
    assert r.exit_code == 0, r.output
    assert out.read_bytes().startswith(b"\x89PNG")


# --- confusion matrices ---------------------------------------------------------------------------------------

def test_confusion_heatmap(tmp_path):
    from esccli.classes import CLASS_NAMES

    rng = np.random.default_rng(0)
    m = np.diag(rng.integers(5, 9, 50)) + (rng.random((50, 50)) > 0.97)
    out = plotting.confusion_heatmap(m, CLASS_NAMES, tmp_path / "cm.png", "fold 1")
    h, w, _ = read_png(out).shape
    assert w > 1000 and h > 1000  # room for 50 names on each axis
    small = plotting.confusion_heatmap(np.eye(5, dtype=int) * 8, CLASS_NAMES[:5], tmp_path / "cm5.png", "esc10")
    assert small.exists()
    with pytest.raises(ValueError):
        plotting.confusion_heatmap(np.eye(4), CLASS_NAMES[:5], tmp_path / "bad.png", "bad")
