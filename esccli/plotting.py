"""Pictures: a file's mel spectrogram for people, the exact input image for the network, a confusion matrix.

Three functions, each writing one PNG and returning its path. Drawing uses matplotlib's object API on the Agg
canvas (no pyplot state, no window); every PNG goes through fsutil.atomic_write, so a crash never leaves half
a picture. A path we cannot write to is an EscError, checked before any audio is read.
"""

import itertools
import os
import sys
from pathlib import Path

import numpy as np

from esccli.audio import audio_info, load_audio, stream_audio
from esccli.errors import EscError
from esccli.features import FeatureParams, db_below_peak, log_mel, mel_basis
from esccli.fsutil import atomic_write

MAX_COLUMNS = 2000  # a long recording is max-pooled in time to at most this many columns (short events stay visible)
RAW_WHOLE_FILE_SECONDS = 60.0  # --raw reads shorter files whole (as featurize does); longer ones only their start
COLORMAP = "magma"
# the steps between time ticks of a recording over a minute long, in seconds (whole minutes and hours, not 8:20)
TIME_STEPS = (10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
CONFUSION_COLORMAP = "Blues"


# --- where the picture goes ---------------------------------------------------------------------------------

def check_output(out_png: Path | str, source: Path | str | None = None, overwrite: bool = True) -> Path:
    """The output path if a PNG can be written there, else an EscError saying why not: also when it is the
    `source` audio file itself (whatever `overwrite` says), or exists and `overwrite` is off."""
    out = Path(out_png)
    if out.is_dir():
        raise EscError(f"{out}: is a folder", "give a file name such as picture.png")
    if out.suffix.lower() != ".png":
        raise EscError(f"{out}: esc draws PNG pictures only", f"name the output {out.stem}.png")
    parent = out.parent
    if not parent.exists():
        raise EscError(f"{parent}: no such folder", "create it first or choose another output path")
    if not parent.is_dir():
        raise EscError(f"{parent}: is not a folder, cannot write {out.name} in it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise EscError(f"{parent}: permission denied, cannot write {out.name}")
    if out.exists() and source is not None and Path(source).exists() and out.samefile(source):
        raise EscError(f"{out}: is the audio file itself", "choose another output name with -o")
    if out.exists() and not overwrite:
        raise EscError(f"{out}: already exists", "use --force to overwrite it, or -o to choose another name")
    return out


def _save(out_png: Path | str, write) -> Path:
    """Check the path, then call write(binary file) inside an atomic write; OS errors become EscError. Drawing
    libraries' warnings (matplotlib's "constrained_layout not applied" on a tiny picture) are not for the user."""
    import warnings

    out = check_output(out_png)
    try:
        with atomic_write(out) as f, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write(f)
    except OSError as e:
        raise EscError(f"{out}: cannot write ({e.strerror or e})") from None
    return out


def _use_agg() -> None:
    """Draw off-screen: librosa.display imports pyplot, which must not pick a GUI backend (unless already in use)."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:
        matplotlib.use("Agg")


def _figure(width: float, height: float, dpi: float):
    _use_agg()
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


# --- the spectrogram a person looks at ----------------------------------------------------------------------

def _pool_max(frames: np.ndarray, factor: int) -> np.ndarray:
    """Max over groups of `factor` consecutive columns (the last group may be shorter)."""
    if factor == 1:
        return frames
    n = frames.shape[1]
    full = n // factor * factor
    pooled = frames[:, :full].reshape(frames.shape[0], -1, factor).max(axis=2)
    if full < n:
        pooled = np.concatenate([pooled, frames[:, full:].max(axis=1, keepdims=True)], axis=1)
    return pooled


def mel_power(path: Path | str, params: FeatureParams,
              max_columns: int = MAX_COLUMNS) -> tuple[np.ndarray, int, int]:
    """Mel power [n_mels, columns] of the whole file, how many STFT frames each column covers, and the frames.

    The file is read in blocks, so memory stays bounded whatever its length. The frames are those of a
    centred STFT with zero padding, as in features.log_mel (1 + samples // hop of them); when there are more
    than `max_columns`, consecutive frames are max-pooled into one column.
    """
    import librosa

    sr, n_fft, hop = params.sample_rate, params.n_fft, params.hop_length
    basis = mel_basis(sr, n_fft, params.n_mels, params.fmin, params.fmax)
    _, _, seconds = audio_info(path)
    expected_frames = 1 + int(seconds * sr) // hop
    factor = max(1, -(-expected_frames // max_columns))

    def frames_of(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mel power of every whole frame in buf, and the samples left for the next frame."""
        if buf.size < n_fft:
            return np.zeros((params.n_mels, 0), np.float32), buf
        n = 1 + (buf.size - n_fft) // hop
        spec = librosa.stft(buf[: (n - 1) * hop + n_fft], n_fft=n_fft, hop_length=hop, window="hann", center=False)
        return basis @ (spec.real**2 + spec.imag**2), buf[n * hop:]

    columns, pending, frames = [], np.zeros((params.n_mels, 0), np.float32), 0
    buf = np.zeros(n_fft // 2, np.float32)  # the centring pad at the start
    for block in itertools.chain(stream_audio(path, sr), [None]):
        if block is None:  # the end: the centring pad at the end, then the last frames
            block = np.zeros(n_fft // 2, np.float32)
        mel, buf = frames_of(np.concatenate([buf, block]))
        frames += mel.shape[1]
        pending = np.concatenate([pending, mel], axis=1)
        full = pending.shape[1] // factor * factor
        if full:
            columns.append(_pool_max(pending[:, :full], factor))
            pending = pending[:, full:]
    if pending.shape[1]:
        columns.append(_pool_max(pending, factor))
    return np.concatenate(columns, axis=1).astype(np.float32), factor, frames


def spectrogram_figure(path: Path | str, params: FeatureParams, out_png: Path | str, width: float, height: float,
                       dpi: float, title: str | None = None, overwrite: bool = True) -> Path:
    """Draw the mel spectrogram of the whole file (dB below its loudest bin, time in s, mel-spaced Hz axis); an
    existing picture is replaced only if `overwrite`, the audio file itself never."""
    _use_agg()
    import librosa
    import librosa.display

    path = Path(path)
    check_output(out_png, path, overwrite)
    power, factor, frames = mel_power(path, params)
    if frames < 2:  # a single frame: a picture with no width
        raise EscError(f"{path}: too short to draw ({frames} frame of {params.hop_length / params.sample_rate * 1000:.0f} ms)",
                       f"a spectrogram needs at least {params.hop_length / params.sample_rate * 1000:.0f} ms of audio")
    db = db_below_peak(power, params.top_db)  # silence at the floor, as the network sees it
    # column j covers frames j*factor .. (j+1)*factor - 1, and frame i is centred on sample i*hop
    frame_seconds = params.hop_length / params.sample_rate
    first = np.arange(db.shape[1]) * factor
    centres = (first + np.minimum(first + factor, frames) - 1) / 2 * frame_seconds
    seconds = (frames - 1) * frame_seconds
    x_axis, x_label = ("s", "time (s)") if seconds <= 60 else ("m", "time (m:ss)") if seconds <= 3600 \
        else ("h", "time (h:mm:ss)")

    fig = _figure(width, height, dpi)
    ax = fig.add_subplot()
    img = librosa.display.specshow(db, ax=ax, sr=params.sample_rate, x_coords=centres, x_axis=x_axis, y_axis="mel",
                                   fmin=params.fmin, fmax=params.fmax, cmap=COLORMAP, vmin=-params.top_db, vmax=0.0)
    ax.set_xlim(0, max(seconds, frame_seconds / 2))
    if x_axis != "s":
        from matplotlib.ticker import MultipleLocator

        ax.xaxis.set_major_locator(MultipleLocator(time_step(seconds)))
    ax.set_title(path.name if title is None else title)
    ax.set_xlabel(x_label)
    ax.set_ylabel("frequency (Hz)")
    fig.colorbar(img, ax=ax, format="%+2.0f dB")
    return _save(out_png, lambda f: fig.savefig(f, format="png"))


def time_step(seconds: float) -> float:
    """The step between time ticks for a recording over a minute long: the shortest of TIME_STEPS that gives at
    most 8 ticks."""
    return next((t for t in TIME_STEPS if seconds / t <= 8), TIME_STEPS[-1])


# --- the image the network sees -----------------------------------------------------------------------------

def _clip(path: Path, params: FeatureParams) -> np.ndarray:
    """The first clip_seconds of the file (all of it if shorter), mono at the feature sample rate."""
    _, _, seconds = audio_info(path)
    if seconds <= RAW_WHOLE_FILE_SECONDS:
        return load_audio(path, params.sample_rate)
    parts, have = [], 0
    for block in stream_audio(path, params.sample_rate):
        parts.append(block)
        have += block.size
        if have >= params.clip_samples:
            break
    return np.concatenate(parts)


def network_image(path: Path | str, params: FeatureParams) -> np.ndarray:
    """uint8 [n_mels, frames]: the features of the file's first clip as 0..255 grey, low frequencies in the last row."""
    feats = log_mel(_clip(Path(path), params), params)
    if params.scale == "db":
        feats = (feats + 1.0) * 127.5  # [-1, 1] -> [0, 255]
    return np.flipud(np.clip(np.rint(feats), 0, 255).astype(np.uint8))


def raw_image(path: Path | str, params: FeatureParams, out_png: Path | str, overwrite: bool = True) -> Path:
    """Write the network's input for the file as a grayscale PNG, one pixel per (mel band, frame); `overwrite` as
    for spectrogram_figure."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    check_output(out_png, path, overwrite)
    pixels = network_image(path, params)
    info = PngInfo()
    info.add_text("Software", "esc")
    info.add_text("Description", f"log-mel features of {Path(path).name}: rows = mel bands (low at the bottom), "
                                 f"columns = frames; parameters {params.to_dict()}")
    return _save(out_png, lambda f: Image.fromarray(pixels, mode="L").save(f, format="PNG", pnginfo=info))


# --- the confusion matrix -----------------------------------------------------------------------------------

def confusion_heatmap(matrix, class_names, out_png: Path | str, title: str) -> Path:
    """Draw a confusion matrix (rows: true class, columns: predicted) with counts and class names."""
    m = np.asarray(matrix)
    n = len(class_names)
    if m.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {m.shape} for {n} class names")
    check_output(out_png)
    big = n > 12
    side = max(5.0, 0.24 * n + 2.5)  # 50 classes: 14.5 in, room for one readable count per cell
    label_size, count_size = (6, 4.5) if big else (9, 9)

    fig = _figure(side + 1.2, side, 100)
    ax = fig.add_subplot()
    img = ax.imshow(m, cmap=CONFUSION_COLORMAP, interpolation="nearest", vmin=0)
    ax.set_xticks(range(n), [str(c) for c in class_names], rotation=90, fontsize=label_size)
    ax.set_yticks(range(n), [str(c) for c in class_names], fontsize=label_size)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    high = m.max() / 2 if m.size and m.max() > 0 else 0
    for i in range(n):
        for j in range(n):
            v = m[i, j]
            if v == 0 and big:  # leave empty cells blank so the errors stand out
                continue
            text = f"{v:g}" if np.issubdtype(m.dtype, np.floating) else str(v)
            ax.text(j, i, text, ha="center", va="center", fontsize=count_size,
                    color="white" if v > high else "black")
    fig.colorbar(img, ax=ax, shrink=0.8, label=None if np.issubdtype(m.dtype, np.floating) else "clips")
    return _save(out_png, lambda f: fig.savefig(f, format="png"))
