"""Reading audio: any format soundfile reads, any rate, any channel count -> mono float32 at one rate.

Everything that can go wrong with a user's file becomes an AudioError with a message naming the file, so that
a batch can report it and go on with the next file.
"""

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from esccli.errors import AudioError

RESAMPLE_QUALITY = "HQ"  # soxr quality; the same one librosa uses by default ("soxr_hq")
STREAM_BLOCK_SECONDS = 30.0  # how much audio `stream_audio` reads at a time
# Float files may hold any finite value. The features are relative to a clip's loudest bin, and came out the same
# with samples scaled up to 1e16 (both presets); beyond about 1e17 the power spectrum overflows float32. Files at
# int32 scale (2.1e9) pass; a peak above this is refused as not audio.
MAX_PEAK = 1e12


@dataclass(frozen=True)
class AudioBytes:
    """A recording held in memory (e.g. read from stdin): any format soundfile reads. `name` names it in errors."""

    name: str
    data: bytes

    def __str__(self) -> str:
        return self.name


Input = Path | str | AudioBytes


def _check_path(path: Path) -> None:
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if path.is_dir():
        raise AudioError(f"{path}: is a folder, not an audio file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(f"{path}: cannot read ({e.strerror})") from None
    if size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")


def _as_input(source: Input) -> Path | AudioBytes:
    return source if isinstance(source, AudioBytes) else Path(source)


def _open(path: Path | AudioBytes):
    import soundfile as sf

    if isinstance(path, AudioBytes):
        if not path.data:
            raise AudioError(f"{path}: empty input (0 bytes)")
        target = io.BytesIO(path.data)
    else:
        _check_path(path)
        target = str(path)
    try:
        f = sf.SoundFile(target)
    except PermissionError:
        raise AudioError(f"{path}: permission denied") from None
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError for bad data
        detail = str(e).split("\n")[0].strip().replace(repr(target), str(path))  # not "<_io.BytesIO object ...>"
        raise AudioError(f"{path}: not a readable audio file ({detail})") from None
    if f.channels < 1 or f.samplerate <= 0:
        f.close()
        raise AudioError(f"{path}: the header declares {f.channels} channels at {f.samplerate} Hz")
    return f


def _mono(path: Path, block: np.ndarray) -> np.ndarray:
    """The mean of the channels of a [frames, channels] block, refusing NaN or infinite samples, and samples beyond
    MAX_PEAK.

    The samples are checked before mixing (so the message names the real problem), and the mean is taken in
    float64 (a guard: below MAX_PEAK two samples cannot add up to infinity in float32 either).
    """
    if not np.all(np.isfinite(block)):
        raise AudioError(f"{path}: contains NaN or infinite samples")
    peak = float(np.abs(block).max()) if block.size else 0.0
    if peak > MAX_PEAK:
        raise AudioError(f"{path}: sample values up to {peak:.3g}, far outside audio's range of -1 to 1 "
                         f"(a file written at the wrong scale?)")
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0], dtype=np.float32)
    return block.mean(axis=1, dtype=np.float64).astype(np.float32)


def resample(x: np.ndarray, orig_sr: int, target_sr: int) -> np.ndarray:
    if orig_sr == target_sr:
        return x.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(x, orig_sr, target_sr, quality=RESAMPLE_QUALITY).astype(np.float32, copy=False)


def audio_info(path: Input) -> tuple[int, int, float]:
    """(sample rate, channels, duration in seconds) of a file, from its header."""
    path = _as_input(path)
    with _open(path) as f:
        return f.samplerate, f.channels, f.frames / f.samplerate


def load_audio(path: Input, sample_rate: int) -> np.ndarray:
    """The whole file as mono float32 at `sample_rate` (for clips; use stream_audio for long recordings)."""
    path = _as_input(path)
    with _open(path) as f:
        sr = f.samplerate
        try:
            x = f.read(dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{path}: damaged audio data ({str(e).splitlines()[0]})") from None
    if x.shape[0] == 0:
        raise AudioError(f"{path}: has no samples")
    y = resample(_mono(path, x), sr, sample_rate)
    if y.size == 0:  # e.g. one sample at 44.1 kHz is less than one at 16 kHz
        raise AudioError(f"{path}: too short: no samples left at {sample_rate} Hz")
    return y


def stream_audio(path: Input, sample_rate: int, block_seconds: float = STREAM_BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield consecutive mono float32 blocks at `sample_rate`, reading `block_seconds` of the file at a time.

    Memory stays bounded by the block size whatever the file's length. Resampling is done by a streaming
    resampler, so the concatenation of the blocks equals a whole-file resample up to filter edge effects.
    """
    path = _as_input(path)
    with _open(path) as f:
        sr = f.samplerate
        stream = None
        if sr != sample_rate:
            import soxr

            stream = soxr.ResampleStream(sr, sample_rate, 1, dtype="float32", quality=RESAMPLE_QUALITY)
        per_block = max(1, int(block_seconds * sr))
        total = out = 0
        while True:
            try:
                block = f.read(per_block, dtype="float32", always_2d=True)
            except Exception as e:
                raise AudioError(f"{path}: damaged audio data ({str(e).splitlines()[0]})") from None
            last = block.shape[0] < per_block
            total += block.shape[0]
            x = _mono(path, block)
            if stream is not None:
                x = stream.resample_chunk(x, last=last)
            if x.size:
                out += x.size
                yield x
            if last:
                break
        if total == 0:
            raise AudioError(f"{path}: has no samples")
        if out == 0:
            raise AudioError(f"{path}: too short: no samples left at {sample_rate} Hz")
