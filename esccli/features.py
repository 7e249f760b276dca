"""Log-mel spectrograms: the one feature front end used by featurize, train, eval, predict and spectrogram.

Like a paper's table: the parameters are fields of FeatureParams with their defaults, the derived sizes are
properties, and the pipeline is a few small steps: pad or trim -> STFT power -> mel -> dB (ref = clip max,
floor at -top_db) -> scale. The STFT runs in torch on a batch of clips at once; the mel filters are librosa's
(Slaney), so the numbers match librosa.feature.melspectrogram + librosa.power_to_db(ref=np.max).
"""

import hashlib
import json
from dataclasses import asdict, dataclass, fields

import numpy as np

from esccli.dataset import CLIP_SECONDS

FEATURE_VERSION = 1  # bump when the computation changes, so that old caches are not reused


@dataclass(frozen=True)
class FeatureParams:
    sample_rate: int = 16000  # every clip is resampled to this before the STFT
    clip_seconds: float = CLIP_SECONDS  # clips are cut or zero-padded to this length (ESC-50's own)
    n_fft: int = 1024  # 64 ms window at 16 kHz
    hop_length: int = 320  # 20 ms hop: 251 frames per 5 s clip
    n_mels: int = 64
    fmin: float = 20.0
    fmax: float = 8000.0  # the Nyquist frequency of 16 kHz audio
    top_db: float = 80.0  # dB floor below the clip's loudest bin
    scale: str = "db"  # "db": dB mapped linearly to [-1, 1]; "image": min-max to 0..255 integers (the notebook)

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def frames(self) -> int:
        """Frames per clip (centred STFT: one frame per hop plus one)."""
        return 1 + self.clip_samples // self.hop_length

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureParams":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown feature parameters: {sorted(unknown)}")
        return cls(**d)

    def key(self) -> str:
        """A short stable hash naming the feature cache for these parameters."""
        blob = json.dumps({"v": FEATURE_VERSION, **self.to_dict()}, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def validate(self) -> "FeatureParams":
        if self.scale not in ("db", "image"):
            raise ValueError(f"scale must be 'db' or 'image', not {self.scale!r}")
        if not 0 <= self.fmin < self.fmax <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= fmin < fmax <= sample_rate/2, got fmin={self.fmin} fmax={self.fmax} "
                             f"at sample_rate={self.sample_rate}")
        if self.hop_length <= 0 or self.n_fft <= 0 or self.n_mels <= 0 or self.clip_seconds <= 0:
            raise ValueError("n_fft, hop_length, n_mels and clip_seconds must be positive")
        return self


PRESETS = {
    # the esc default: 16 kHz, 64 mels, 20 ms hop
    "default": FeatureParams(),
    # the student notebook, exactly: 44.1 kHz, n_fft 2048, hop 512, 128 mels 20-8300 Hz, 0..255 image
    "seed": FeatureParams(
        sample_rate=44100, n_fft=2048, hop_length=512, n_mels=128, fmin=20.0, fmax=8300.0, scale="image"
    ),
}


def pad_or_trim(x: np.ndarray, length: int) -> np.ndarray:
    """Cut the end off, or append zeros, so that the last axis has `length` samples."""
    n = x.shape[-1]
    if n >= length:
        return x[..., :length]
    pad = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
    return np.pad(x, pad)


_BASES: dict[tuple, np.ndarray] = {}  # mel filterbanks by (sample_rate, n_fft, n_mels, fmin, fmax)


def mel_basis(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """The [n_mels, n_fft // 2 + 1] mel filterbank: one a model file carries, else librosa's (Slaney)."""
    key = (sample_rate, n_fft, n_mels, float(fmin), float(fmax))
    if key not in _BASES:
        import librosa.filters

        _BASES[key] = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).astype(np.float32)
    return _BASES[key]


def params_basis(params: FeatureParams) -> np.ndarray:
    return mel_basis(params.sample_rate, params.n_fft, params.n_mels, params.fmin, params.fmax)


def use_mel_basis(params: FeatureParams, basis: np.ndarray) -> None:
    """Use the filterbank a model was trained with (so a model's features never depend on the librosa version,
    and predicting needs no librosa import)."""
    basis = np.asarray(basis, np.float32)
    if basis.shape != (params.n_mels, params.n_fft // 2 + 1) or not np.all(np.isfinite(basis)):
        raise ValueError(f"mel filterbank of shape {basis.shape} does not fit {params.n_mels} mels and n_fft {params.n_fft}")
    _BASES[(params.sample_rate, params.n_fft, params.n_mels, float(params.fmin), float(params.fmax))] = basis


AMIN = 1e-10  # power floor before the log, as librosa.power_to_db


def db_below_peak(power: np.ndarray, top_db: float) -> np.ndarray:
    """Mel power -> dB below each spectrogram's loudest bin (over the last two axes), floored at -top_db: librosa's
    power_to_db(ref=np.max, amin=AMIN, top_db=top_db), except that silence (every bin at the power floor) is at
    the floor rather than at its own "loudest" 0 dB. The network's features and the pictures both use it."""
    db = 10.0 * np.log10(np.maximum(power, AMIN))
    db = np.maximum(db - db.max(axis=(-2, -1), keepdims=True), -top_db)
    silent = power.max(axis=(-2, -1), keepdims=True) <= AMIN
    return np.where(silent, np.float32(-top_db), db).astype(np.float32, copy=False)


def log_mel(waves: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Features of a batch of clips: float32 [batch, n_mels, frames] from float32 [batch, clip_samples].

    A 1-D input is one clip and gives [n_mels, frames].
    """
    import torch

    single = waves.ndim == 1
    x = torch.from_numpy(np.ascontiguousarray(pad_or_trim(np.atleast_2d(waves), params.clip_samples), np.float32))
    window = torch.hann_window(params.n_fft)
    spec = torch.stft(x, params.n_fft, params.hop_length, window=window, center=True, pad_mode="constant",
                      return_complex=True)
    power = spec.real**2 + spec.imag**2  # [batch, n_fft//2+1, frames]
    basis = torch.from_numpy(params_basis(params))
    mel = torch.matmul(basis, power)  # [batch, n_mels, frames]
    db = torch.from_numpy(db_below_peak(mel.numpy(), params.top_db))
    out = scale(db, params).numpy()
    return out[0] if single else out


def scale(db, params: FeatureParams):
    """Map dB values in [-top_db, 0] to what the network sees."""
    if params.scale == "db":
        return db / (params.top_db / 2) + 1.0  # [-1, 1]
    # "image": the notebook's min-max normalisation of each spectrogram to an 8-bit picture
    lo = db.amin(dim=(1, 2), keepdim=True)
    hi = db.amax(dim=(1, 2), keepdim=True)
    return ((db - lo) / (hi - lo).clamp_min(1e-6) * 255.0).round()
