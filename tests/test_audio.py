"""The audio loader against every odd file a user can hand it.

load_audio, stream_audio and audio_info either give audio (mono float32, finite, at the asked rate) or raise
AudioError; no other exception, no NaN, no empty array. Formats, rates, sample types and channel counts are
checked for their values, not only for their shapes; then hypothesis throws random bytes, damaged headers,
truncated files and random odd-but-valid files at them.
"""

import io
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from esccli.audio import audio_info, load_audio, stream_audio
from esccli.errors import AudioError

SR = 16000  # the rate everything is loaded at, as the default feature parameters do

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def sine(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path: Path, x: np.ndarray, sr: int, subtype: str | None = None, fmt: str | None = None) -> Path:
    sf.write(path, x, sr, subtype=subtype, format=fmt)
    return path


def encode(x: np.ndarray, sr: int, fmt: str = "WAV", subtype: str = "PCM_16") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def peak_hz(x: np.ndarray, sr: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.argmax(spectrum) * sr / x.size)


def expected_length(frames: int, sr: int) -> int:
    return round(frames * SR / sr)


def check_audio(x) -> np.ndarray:
    """What every successful load must be."""
    assert isinstance(x, np.ndarray)
    assert x.dtype == np.float32 and x.ndim == 1 and x.size > 0
    assert np.all(np.isfinite(x))
    return x


def outcome(path: Path, sample_rate: int = SR):
    """("audio", array) or ("error", message): anything else fails the test with its traceback."""
    try:
        return "audio", check_audio(load_audio(path, sample_rate))
    except AudioError as e:
        assert str(e).startswith(str(path)), str(e)  # the message names the file
        return "error", str(e)


def streamed(path: Path, sample_rate: int = SR, block_seconds: float = 0.37):
    try:
        blocks = list(stream_audio(path, sample_rate, block_seconds))
    except AudioError as e:
        return "error", str(e)
    for b in blocks:
        check_audio(b)
    return "audio", np.concatenate(blocks)


def info(path: Path):
    try:
        sr, channels, seconds = audio_info(path)
    except AudioError as e:
        return "error", str(e)
    assert sr > 0 and channels >= 1 and seconds >= 0
    return "audio", (sr, channels, seconds)


# --- formats, rates, sample types ------------------------------------------------------------------------------

@pytest.mark.parametrize("sr", [8000, 16000, 44100, 96000])
@pytest.mark.parametrize("fmt, ext, lossless", [("WAV", "wav", True), ("FLAC", "flac", True), ("OGG", "ogg", False)])
def test_formats_and_rates(tmp_path, fmt, ext, lossless, sr):
    x = sine(1000.0, sr, 0.5)
    path = write(tmp_path / f"a.{ext}", x, sr, fmt=fmt)
    y = check_audio(load_audio(path, SR))
    assert abs(y.size - expected_length(x.size, sr)) <= 1
    assert abs(peak_hz(y, SR) - 1000.0) <= SR / y.size  # within one FFT bin
    assert 0.45 < np.abs(y).max() < 0.56
    if lossless:  # 16-bit quantisation and nothing else
        reference = soxr.resample(x, sr, SR, quality="HQ") if sr != SR else x
        assert np.abs(y - reference[: y.size]).max() < 1e-3
    assert audio_info(path)[:2] == (sr, 1)
    assert audio_info(path)[2] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize("fmt, subtype, step", [
    ("WAV", "PCM_U8", 1 / 128), ("WAV", "PCM_16", 1 / 2**15), ("WAV", "PCM_24", 1 / 2**23),
    ("WAV", "PCM_32", 1 / 2**31), ("WAV", "FLOAT", 0.0), ("WAV", "DOUBLE", 0.0),
    ("FLAC", "PCM_S8", 1 / 128), ("FLAC", "PCM_16", 1 / 2**15), ("FLAC", "PCM_24", 1 / 2**23),
])
def test_sample_types_keep_their_values(tmp_path, fmt, subtype, step):
    x = np.random.default_rng(0).uniform(-0.9, 0.9, 4000).astype(np.float32)
    x[:4] = [0.0, 0.5, -0.5, 0.25]
    path = write(tmp_path / f"a.{fmt.lower()}", x, SR, subtype=subtype, fmt=fmt)
    y = check_audio(load_audio(path, SR))
    assert y.size == x.size
    assert np.abs(y - x).max() <= step + 1e-7  # one quantisation step at most
    assert np.array_equal(y[:4], x[:4])  # these are exact in every type
    kind, z = streamed(path)
    assert kind == "audio" and np.array_equal(z, y)


def test_unsigned_8_bit_centre_is_zero(tmp_path):
    """PCM_U8 stores silence as 128: it must come back as 0.0, not 0.5 or 1.0."""
    path = write(tmp_path / "u8.wav", np.zeros(100, np.float32), SR, subtype="PCM_U8")
    assert path.read_bytes()[-100:] == b"\x80" * 100
    assert np.array_equal(load_audio(path, SR), np.zeros(100, np.float32))


@pytest.mark.parametrize("channels", [2, 6])
@pytest.mark.parametrize("sr", [SR, 44100])
def test_channels_are_averaged(tmp_path, channels, sr):
    rng = np.random.default_rng(channels)
    x = rng.uniform(-1, 1, (sr // 4, channels)).astype(np.float32)
    x[:, 0] = 0.25  # one channel constant, the others noise: the mean is neither of them
    path = write(tmp_path / "multi.wav", x, sr, subtype="FLOAT")
    y = check_audio(load_audio(path, SR))
    mono = x.astype(np.float64).mean(axis=1).astype(np.float32)
    expected = mono if sr == SR else soxr.resample(mono, sr, SR, quality="HQ")
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, atol=1e-6)
    kind, z = streamed(path)
    assert kind == "audio" and z.size == y.size and np.abs(z - y).max() < 1e-5
    assert audio_info(path)[1] == channels


def test_six_channel_ogg_and_flac(tmp_path):
    """Each channel a sine of its own frequency: every one must be in the mix, each at a sixth of the level.
    (Vorbis treats the sixth channel of a 6-channel file as LFE and low-passes it, so that one is low.)"""
    freqs = [500.0, 1000.0, 1500.0, 2000.0, 2500.0, 80.0]
    x = np.stack([sine(f, 44100, 1.0, amp=0.3) for f in freqs], axis=1)
    for fmt in ("OGG", "FLAC"):
        path = write(tmp_path / f"six.{fmt.lower()}", x, 44100, fmt=fmt)
        y = check_audio(load_audio(path, SR))
        assert abs(y.size - expected_length(x.shape[0], 44100)) <= 1
        spectrum = np.abs(np.fft.rfft(y)) * 2 / y.size
        levels = [spectrum[int(round(f * y.size / SR))] for f in freqs]
        # lossy Vorbis moves a level by up to ~20%; a lost channel, or a sum instead of a mean, is far off
        np.testing.assert_allclose(levels, 0.3 / 6, rtol=0.3 if fmt == "OGG" else 0.01, err_msg=fmt)


def test_huge_but_finite_float_samples_never_come_back_infinite(tmp_path):
    """3e38 is a float32, but two of them add up to infinity, and the resampler's overshoot can exceed the
    float32 range: such samples are refused before either (MAX_PEAK), stereo or mono, at any rate."""
    big = np.full((2000, 2), 3e38, np.float32)
    path = write(tmp_path / "big-stereo.wav", big, SR, subtype="FLOAT")
    assert outcome(path)[0] == "error" and "far outside audio's range" in outcome(path)[1]
    for sr in (44100, 8000):
        path = write(tmp_path / f"big-{sr}.wav", np.full(2000, 3e38, np.float32), sr, subtype="FLOAT")
        for kind, message in (outcome(path), streamed(path)):
            assert kind == "error" and "far outside audio's range" in message


# --- resampling ----------------------------------------------------------------------------------------------

def test_resampling_keeps_the_frequency_and_the_length(tmp_path):
    x = sine(1000.0, 44100, 2.0)
    path = write(tmp_path / "sine.wav", x, 44100, subtype="FLOAT")
    y = check_audio(load_audio(path, SR))
    assert abs(y.size - round(x.size * 16000 / 44100)) <= 1
    assert abs(peak_hz(y, SR) - 1000.0) <= 0.5  # 0.5 Hz bins over 2 s
    middle = y[1000:-1000]  # away from the filter's edges
    assert np.abs(middle).max() == pytest.approx(0.5, abs=0.005)
    # the same sine made at 16 kHz directly, same phase
    np.testing.assert_allclose(middle, sine(1000.0, SR, 2.0)[1000:-1000], atol=2e-3)


def test_content_above_the_new_nyquist_is_filtered_out(tmp_path):
    x = sine(12000.0, 44100, 1.0)  # above 8 kHz: must not alias to 4 kHz
    y = check_audio(load_audio(write(tmp_path / "high.wav", x, 44100, subtype="FLOAT"), SR))
    assert np.abs(y[500:-500]).max() < 0.01


# --- tiny, silent, empty, not audio --------------------------------------------------------------------------

@pytest.mark.parametrize("sr, n_out", [(8000, 2), (SR, 1), (1000, 16)])
def test_a_one_sample_file(tmp_path, sr, n_out):
    path = write(tmp_path / "one.wav", np.array([0.5], np.float32), sr, subtype="FLOAT")
    y = check_audio(load_audio(path, SR))
    assert y.size == n_out
    if sr == SR:
        assert y[0] == 0.5
    kind, z = streamed(path)
    assert kind == "audio" and z.size == y.size
    assert audio_info(path) == (sr, 1, 1 / sr)


@pytest.mark.parametrize("sr", [44100, 96000])
def test_a_one_sample_file_at_a_higher_rate_is_too_short(tmp_path, sr):
    """One sample at 44.1 kHz is less than one at 16 kHz: an error saying so, not an empty array."""
    path = write(tmp_path / "one.wav", np.array([0.5], np.float32), sr, subtype="FLOAT")
    for kind, message in (outcome(path), streamed(path)):
        assert kind == "error" and "too short" in message, message


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT", "PCM_U8"])
def test_a_silent_file_loads_as_zeros(tmp_path, subtype):
    for sr in (SR, 44100):
        path = write(tmp_path / f"silent-{sr}.wav", np.zeros(sr, np.float32), sr, subtype=subtype)
        y = check_audio(load_audio(path, SR))
        assert y.size == SR and not np.any(y)


def test_a_header_with_no_samples(tmp_path):
    path = write(tmp_path / "none.wav", np.zeros(0, np.float32), SR)
    assert outcome(path) == ("error", f"{path}: has no samples")
    assert streamed(path)[0] == "error"


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("subtype", ["FLOAT", "DOUBLE"])
def test_nan_and_inf_samples_are_refused(tmp_path, bad, subtype):
    x = sine(440.0, SR, 0.5)
    x[1234] = bad
    path = write(tmp_path / "bad.wav", x, SR, subtype=subtype)
    kind, message = outcome(path)
    assert kind == "error" and "NaN or infinite" in message
    kind, message = streamed(path, block_seconds=0.01)
    assert kind == "error" and "NaN or infinite" in message


def test_samples_far_beyond_any_audio_scale_are_refused_and_int32_scale_floats_are_not(tmp_path):
    """Finite but absurd float samples (1e20) would overflow the power spectrum: refused in one line. Floats
    written at int32 scale (2.1e9) are audio at another scale: loaded as they are (the features are relative)."""
    x = sine(440.0, SR, 0.5)
    path = write(tmp_path / "absurd.wav", x * np.float32(1e20), SR, subtype="FLOAT")
    kind, message = outcome(path)
    assert kind == "error" and "sample values up to 5e+19, far outside audio's range" in message  # sine() peaks at 0.5
    kind, message = streamed(path, block_seconds=0.01)
    assert kind == "error" and "far outside audio's range" in message
    path = write(tmp_path / "int32-scale.wav", x * np.float32(2**31 - 1), SR, subtype="FLOAT")
    y = load_audio(path, SR)
    assert np.allclose(y, x * np.float32(2**31 - 1), rtol=1e-6)
    from esccli.features import PRESETS, log_mel, pad_or_trim

    p = PRESETS["default"]
    same = [log_mel(pad_or_trim(v, p.clip_samples)[None], p) for v in (x, y)]  # relative to the loudest bin
    assert np.allclose(same[0].astype(np.float32), same[1].astype(np.float32), atol=1e-3)


def test_nan_in_one_channel_only_is_refused(tmp_path):
    x = np.zeros((SR, 2), np.float32)
    x[-1, 1] = np.nan  # in the last block when streamed
    for sr in (SR, 44100):
        path = write(tmp_path / f"nan-{sr}.wav", x, sr, subtype="FLOAT")
        assert outcome(path)[0] == "error"
        assert streamed(path, block_seconds=0.1)[0] == "error"


def test_files_that_are_not_audio(tmp_path):
    cases = {
        "zero.wav": ("", "empty file (0 bytes)"),
        "text.wav": ("this is not audio\n" * 50, "not a readable audio file"),
        "json.flac": ('{"a": 1}', "not a readable audio file"),
    }
    for name, (content, words) in cases.items():
        (tmp_path / name).write_text(content)
    (tmp_path / "folder.wav").mkdir()
    cases["folder.wav"] = (None, "is a folder")
    cases["missing.wav"] = (None, "no such file")
    for name, (_, words) in cases.items():
        path = tmp_path / name
        for kind, message in (outcome(path), streamed(path), info(path)):
            assert kind == "error" and words in message and "\n" not in message, (name, message)


def test_an_unreadable_file(tmp_path, monkeypatch):
    path = write(tmp_path / "locked.wav", sine(440.0, SR, 0.1), SR)

    def denied(*args, **kwargs):  # what opening a chmod-000 file raises (as root, chmod cannot show it)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(sf, "SoundFile", denied)
    for kind, message in (outcome(path), streamed(path), info(path)):
        assert kind == "error" and "permission denied" in message


# --- headers that lie ----------------------------------------------------------------------------------------

def chunk_offset(data: bytes, name: bytes) -> int:
    """Where the chunk `name` starts in a RIFF file (walking the chunks, not searching the bytes)."""
    i = 12
    while i + 8 <= len(data):
        size = struct.unpack_from("<I", data, i + 4)[0]
        if data[i:i + 4] == name:
            return i
        i += 8 + size + (size & 1)
    raise AssertionError(f"no {name!r} chunk")


def with_size(data: bytes, at: int, size: int) -> bytes:
    b = bytearray(data)
    struct.pack_into("<I", b, at, size)
    return bytes(b)


@pytest.fixture
def truthful(tmp_path):
    """A 16-bit WAV of 1000 frames followed by a LIST chunk, and its samples."""
    x = np.random.default_rng(1).uniform(-0.8, 0.8, 1000).astype(np.float32)
    data = encode(x, SR, "WAV", "PCM_16")
    data += b"LIST" + struct.pack("<I", 26) + b"INFOISFT" + struct.pack("<I", 14) + b"made by a test"
    data = with_size(data, 4, len(data) - 8)
    return data, load_audio(write(tmp_path / "x.wav", x, SR, subtype="PCM_16"), SR)


@pytest.mark.parametrize("claim", [0, 1, 2, 999, 1000, 1001, 1999, 2000, 2001, 2002, 4000, 2**31 - 1, 2**31,
                                   2**32 - 1])
def test_a_data_chunk_that_claims_more_or_fewer_bytes(tmp_path, truthful, claim):
    data, x = truthful
    at = chunk_offset(data, b"data")
    path = tmp_path / "lying.wav"
    path.write_bytes(with_size(data, at + 4, claim))
    kind, y = outcome(path)
    if kind == "audio":  # what was read must be the file's own samples, as far as they go
        n = min(y.size, x.size)
        np.testing.assert_array_equal(y[:n], x[:n])
        if claim < 2000:
            assert y.size == claim // 2  # fewer: only what the header says
        assert y.size <= (len(data) - at - 8) // 2  # more: never more than the bytes that are there
    else:
        assert claim < 2, y  # only a header declaring no whole frame may be refused
    assert streamed(path)[0] == kind
    assert info(path)[0] == "audio"  # the header itself is fine (it may declare 0 frames)


@pytest.mark.parametrize("claim", [0, 4, 36, 100, 2**31, 2**32 - 1])
def test_a_riff_chunk_that_claims_more_or_fewer_bytes(tmp_path, truthful, claim):
    data, x = truthful
    path = tmp_path / "lying.wav"
    path.write_bytes(with_size(data, 4, claim))
    kind, y = outcome(path)
    if kind == "audio":
        np.testing.assert_array_equal(y, x)
    assert streamed(path)[0] == kind


@pytest.mark.parametrize("field, value", [
    ("channels", 0), ("channels", 65535), ("samplerate", 0), ("samplerate", 2**32 - 1),
    ("bits", 0), ("bits", 7), ("bits", 64), ("block_align", 0), ("format", 0x1234),
])
def test_a_fmt_chunk_with_nonsense(tmp_path, truthful, field, value):
    data, _ = truthful
    at = chunk_offset(data, b"fmt ") + 8
    offset, fmt = {"format": (0, "<H"), "channels": (2, "<H"), "samplerate": (4, "<I"),
                   "block_align": (12, "<H"), "bits": (14, "<H")}[field]
    b = bytearray(data)
    struct.pack_into(fmt, b, at + offset, value)
    path = tmp_path / "odd.wav"
    path.write_bytes(bytes(b))
    for kind, _ in (outcome(path), streamed(path), info(path)):  # each one audio (checked) or AudioError
        assert kind in ("audio", "error")


def test_a_float_data_chunk_running_into_the_next_chunk(tmp_path):
    """Claiming more data than there is, in a float file, makes the reader look at the LIST chunk's bytes as
    samples: audio or an error, never NaN passed on."""
    data = encode(sine(440.0, SR, 0.1), SR, "WAV", "FLOAT")
    data += b"LIST" + struct.pack("<I", 8) + b"\xff\xff\xff\x7f\x00\x00\xc0\x7f"  # NaN-shaped bytes
    data = with_size(data, 4, len(data) - 8)
    at = chunk_offset(data, b"data")
    path = tmp_path / "runs-on.wav"
    path.write_bytes(with_size(data, at + 4, 2**31))
    kind, y = outcome(path)
    assert streamed(path)[0] == kind
    if kind == "error":
        assert "NaN or infinite" in y


# --- streaming ---------------------------------------------------------------------------------------------------

def test_streamed_blocks_equal_the_whole_file_without_resampling(tmp_path):
    x = np.random.default_rng(2).uniform(-1, 1, (3 * SR + 123, 2)).astype(np.float32)
    path = write(tmp_path / "s.wav", x, SR, subtype="FLOAT")
    whole = load_audio(path, SR)
    for block_seconds in (0.01, 0.37, 1.0, 3.0, 30.0):
        kind, z = streamed(path, block_seconds=block_seconds)
        assert kind == "audio" and np.array_equal(z, whole), block_seconds


def test_streamed_blocks_nearly_equal_the_whole_file_when_resampled(tmp_path):
    x = np.random.default_rng(3).uniform(-0.5, 0.5, 3 * 44100 + 77).astype(np.float32)
    path = write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    whole = load_audio(path, SR)
    for block_seconds in (0.01, 0.37, 1.0, 30.0):
        blocks = list(stream_audio(path, SR, block_seconds))
        z = np.concatenate(blocks)
        assert abs(z.size - whole.size) <= 1
        n = min(z.size, whole.size)
        assert np.abs(z[:n] - whole[:n]).max() < 1e-4, block_seconds
        if block_seconds < 1:
            assert len(blocks) > 3  # it did stream


def test_stream_memory_follows_the_block_not_the_file(tmp_path):
    path = write(tmp_path / "long.wav", np.zeros(20 * SR, np.float32), SR)
    sizes = [b.size for b in stream_audio(path, SR, block_seconds=1.0)]
    assert max(sizes) == SR and sum(sizes) == 20 * SR


# --- property tests ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scratch():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _valid_files() -> list[bytes]:
    rng = np.random.default_rng(4)
    x1 = rng.uniform(-0.9, 0.9, (300, 1)).astype(np.float32)
    x2 = rng.uniform(-0.9, 0.9, (300, 2)).astype(np.float32)
    return [
        encode(x1, SR, "WAV", "PCM_16"), encode(x2, 44100, "WAV", "PCM_24"), encode(x1, 8000, "WAV", "PCM_U8"),
        encode(x2, SR, "WAV", "FLOAT"), encode(x1, 96000, "WAV", "DOUBLE"), encode(x1, SR, "WAV", "PCM_32"),
        encode(x1, SR, "FLAC", "PCM_16"), encode(x2, 44100, "FLAC", "PCM_24"),
        encode(x1, 22050, "OGG", "VORBIS"),
    ]


VALID = _valid_files()


def check_any(path: Path, data: bytes) -> None:
    """The property: audio or AudioError from each reader, and the two loaders agree on which."""
    path.write_bytes(data)
    kind, y = outcome(path)
    kind_s, z = streamed(path, block_seconds=0.005)
    assert kind_s == kind, (kind, y if kind == "error" else "", z if kind_s == "error" else "")
    if kind == "audio":
        assert abs(z.size - y.size) <= 1
    info(path)


@FUZZ
@given(data=st.binary(min_size=1, max_size=3000))
def test_random_bytes(scratch, data):
    check_any(scratch / "random.wav", data)


@FUZZ
@given(which=st.integers(0, len(VALID) - 1), keep=st.integers(4, 120), tail=st.binary(max_size=2000))
def test_random_bytes_after_a_valid_header(scratch, which, keep, tail):
    check_any(scratch / "header.wav", VALID[which][:keep] + tail)


@FUZZ
@given(which=st.integers(0, len(VALID) - 1), fraction=st.floats(0.0, 1.0))
def test_truncated_files(scratch, which, fraction):
    data = VALID[which]
    cut = max(1, int(len(data) * fraction))
    check_any(scratch / "cut.wav", data[:cut])


@FUZZ
@given(which=st.integers(0, len(VALID) - 1), flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                                                               min_size=1, max_size=8))
def test_flipped_bytes(scratch, which, flips):
    b = bytearray(VALID[which])
    for at, mask in flips:
        b[at % len(b)] ^= mask
    check_any(scratch / "flipped.wav", bytes(b))


SUBTYPES = {"WAV": ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"], "FLAC": ["PCM_16", "PCM_24"]}


@st.composite
def odd_audio(draw):
    fmt = draw(st.sampled_from(sorted(SUBTYPES)))
    subtype = draw(st.sampled_from(SUBTYPES[fmt]))
    sr = draw(st.one_of(st.integers(1000, 192000), st.sampled_from([1000, 8000, 11025, 16000, 22050, 44100, 48000,
                                                                    96000, 192000])))
    if fmt == "FLAC" and sr > 65535:
        sr -= sr % 10  # FLAC stores rates above 65535 Hz in tens of Hz
    channels = draw(st.integers(1, 8))
    frames = draw(st.one_of(st.integers(1, 20000), st.integers(1, 16)))
    seed = draw(st.integers(0, 2**32 - 1))
    return fmt, subtype, sr, channels, frames, seed


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=odd_audio())
def test_random_odd_but_valid_audio(scratch, spec):
    fmt, subtype, sr, channels, frames, seed = spec
    x = np.random.default_rng(seed).uniform(-1, 1, (frames, channels)).astype(np.float32)
    path = write(scratch / f"odd.{fmt.lower()}", x, sr, subtype=subtype, fmt=fmt)
    expected = expected_length(frames, sr)
    kind, y = outcome(path)
    if kind == "error":  # only a file shorter than one output sample may be refused
        assert "too short" in y and expected <= 1, (spec, y)
        return
    assert abs(y.size - expected) <= 1, (spec, y.size, expected)
    assert np.abs(y).max() < 4.0  # [-1, 1] in; the resampler's overshoot stays small
    if sr == SR:
        step = {"PCM_U8": 1 / 128, "PCM_16": 1 / 2**15}.get(subtype, 1 / 2**23)
        assert np.abs(y - x.astype(np.float64).mean(axis=1)).max() <= step + 1e-6
    kind_s, z = streamed(path, block_seconds=0.05)
    assert kind_s == "audio" and abs(z.size - y.size) <= 1
