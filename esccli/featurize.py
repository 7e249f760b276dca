"""The feature cache: log-mel spectrograms of every ESC-50 clip, computed once and kept on disk.

A cache lives in `<data>/features/<params key>-<csv hash>/` as `features.npy` (float16 [clips, n_mels, frames]),
`modulation.npy` (float32 [clips, modulation.COUNT]: each clip's fine-rate modulation statistics, from the same
decoded audio; only for features in dB, the only ones a texture network hears: has_modulation) and `index.json`
(the parameters, each clip's name, fold and target, each array's shape and sha256, the modulation statistics'
version, and each clip's audio file: size, times, inode). Changing a feature parameter or the dataset's csv names a
new cache; a cache whose checksums, shapes, dtypes or modulation version do not match, whose clip list is not the
dataset's, or whose audio files have been replaced or touched since (or which predates that record), is rebuilt,
never used, with a note saying why (load_cache); a clip whose audio file is missing is an error even then. Clips are decoded and transformed by `jobs` worker processes in chunks.
"""

import hashlib
import json
import math
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from esccli import __version__, modulation
from esccli.audio import load_audio
from esccli.dataset import META_CSV, Clip, audio_path, length_problem, read_metadata
from esccli.errors import AudioError, DatasetError, EscError
from esccli.features import FeatureParams, log_mel, pad_or_trim, params_basis
from esccli.fsutil import atomic_write, atomic_write_text, folder_lock, remove_stale_temporaries, sha256_file
from esccli.memory import physical_memory
from esccli.paths import Layout

CACHE_FORMAT = 2  # 2: with modulation.npy


def has_modulation(params: FeatureParams) -> bool:
    """Whether a cache of these features holds the clips' modulation statistics: only features in dB, which a texture
    network can hear (the seed preset's 0-255 images never feed one, and at 44.1 kHz the statistics would cost
    the most)."""
    return params.scale == "db"
CHUNK = 32  # clips per worker task
MEMORY_SHARE = 0.8  # a build that would need more than this share of the machine's memory is refused


@dataclass
class FeatureSet:
    """All clips' features in memory, with what is needed to split them by fold."""

    features: np.ndarray  # float16 [clips, n_mels, frames]
    targets: np.ndarray  # int64 [clips]
    folds: np.ndarray  # int64 [clips]
    filenames: list[str]
    params: FeatureParams
    path: Path | None = None  # the cache folder it came from
    built: bool = False  # True when this call computed it, False when it was read from the cache
    audio: list | None = None  # each clip's audio file as it was computed from (audio_stamps)
    modulation: np.ndarray | None = None  # float32 [clips, modulation.COUNT] (esccli/modulation.py; has_modulation)

    def __len__(self) -> int:
        return len(self.filenames)

    def modulation_rows(self, idx=None):
        """The modulation statistics of the clips `idx` (all when None) as a float32 tensor, for a network that hears
        them; a feature set without them (image features, or not from esc's cache) is refused in one line."""
        import torch

        if self.modulation is None or len(self.modulation) != len(self):
            raise EscError("this model's texture network hears the clips' modulation statistics, and these features "
                           "come without them", "run `esc featurize --rebuild` (they come with features in dB)")
        rows = self.modulation if idx is None else self.modulation[idx]
        return torch.from_numpy(np.ascontiguousarray(rows, np.float32))

    def digest(self) -> str:
        """A fingerprint of which clips these are (their names, classes and folds), recorded in the models trained
        on them so that a training resumes, or an ensemble is joined, only on the same clips."""
        h = hashlib.sha256("\n".join(self.filenames).encode())
        h.update(np.asarray(self.targets, "<i8").tobytes())
        h.update(np.asarray(self.folds, "<i8").tobytes())
        return h.hexdigest()[:16]

    def made(self, meta: dict) -> bool:
        """Whether a model (or resume) file's metadata says it was trained on these features: the same parameters
        and the same clips (models from before the clips were recorded are taken at their word)."""
        recorded = meta.get("train", {}).get("clips_digest")
        return meta.get("features") == self.params.to_dict() and recorded in (None, self.digest())


class FeatureParamsError(EscError, ValueError):
    """Feature parameters that cannot work: one line from the CLI, a ValueError like FeatureParams.validate's."""


def check_params(params: FeatureParams) -> FeatureParams:
    """FeatureParams.validate, plus what would otherwise give NaN features or a crash half way through a build."""
    try:
        params.validate()
    except ValueError as e:
        raise FeatureParamsError(f"bad feature parameters: {e}") from None
    problem = _params_problem(params)
    if problem:
        raise FeatureParamsError(f"bad feature parameters: {problem}")
    return params


def _params_problem(params: FeatureParams) -> str | None:
    for name in ("clip_seconds", "fmin", "fmax", "top_db"):
        if not math.isfinite(getattr(params, name)):
            return f"{name} must be a finite number, not {getattr(params, name)}"
    if not params.top_db > 0:  # the dB scale divides by it
        return f"top_db must be positive, not {params.top_db}"
    if params.n_fft < 2 or params.n_fft % 2:  # FeatureParams.frames counts frames as an even n_fft gives them
        return f"n_fft must be even (and at least 2), not {params.n_fft}"
    if params.clip_samples < 1:
        return f"a clip of {params.clip_seconds} s at {params.sample_rate} Hz has no samples"
    return None


def check_bands(params: FeatureParams) -> None:
    """Refuse mel bands that no FFT bin falls into (too many mels for n_fft): they would be constant features.
    Separate from check_params because it needs librosa, which a cache hit does not."""
    with warnings.catch_warnings():  # librosa warns about empty bands: the error says it instead
        warnings.simplefilter("ignore")
        empty = int((params_basis(params).max(axis=1) <= 0).sum())
    if empty:
        raise FeatureParamsError(f"bad feature parameters: {empty} of the {params.n_mels} mel bands would be empty "
                                 f"with n_fft={params.n_fft} between {params.fmin:g} and {params.fmax:g} Hz",
                                 "use fewer mels or a larger n_fft")


def _describes(fs: FeatureSet, clips: list[Clip]) -> bool:
    return fs.filenames == [c.filename for c in clips] and fs.folds.tolist() == [c.fold for c in clips] \
        and fs.targets.tolist() == [c.target for c in clips]


def build_bytes(params: FeatureParams, clips: int, jobs: int) -> int:
    """About the memory a build of `clips` clips takes at its peak (an estimate, generous rather than tight): the
    float16 array, the mel filterbank (built in float64, kept in float32, in the parent and in each worker), and
    in each worker busy with a chunk its waves, framed STFT input and complex64 STFT, the power and its
    temporaries, and the mel steps (float32)."""
    chunk = min(CHUNK, clips)
    workers = max(1, min(jobs, math.ceil(clips / CHUNK)))
    bins = params.n_fft // 2 + 1
    per_chunk = chunk * (params.clip_samples * 4 * 2 + params.frames * (bins * (8 + 8 + 4 * 3) + params.n_mels * 4 * 3))
    mods = 0
    if has_modulation(params):  # their STFT, after the features' (its framed input, complex64 and power temporaries)
        n_fft, hop = modulation.stft_sizes(params.sample_rate)
        per_chunk = max(per_chunk, chunk * (params.clip_samples * 4 * 2 + (1 + params.clip_samples // hop)
                                            * (n_fft // 2 + 1) * 32))
        mods = modulation.COUNT * 4
    basis = params.n_mels * bins * (8 + 4)
    return clips * (params.n_mels * params.frames * 2 + mods) + (workers + 1) * basis + workers * per_chunk


def check_memory(params: FeatureParams, clips: int, jobs: int) -> None:
    """Refuse a build that would not fit in this machine's memory (a very short hop, a huge n_fft or thousands of
    mels) before anything is computed, rather than let it be killed half way. No check where the system does not
    say how much memory there is."""
    total, need = physical_memory(), build_bytes(params, clips, jobs)
    if total is not None and need > MEMORY_SHARE * total:
        raise FeatureParamsError(f"bad feature parameters: these features of {clips} clips would take about "
                                 f"{need / 1e9:.1f} GB of memory to compute, more than the {MEMORY_SHARE * total / 1e9:.1f} "
                                 f"GB allowed ({MEMORY_SHARE:.0%} of the {total / 1e9:.1f} GB of memory here)",
                                 "use fewer mels, a longer hop, a smaller n_fft or fewer --jobs")


def audio_paths(root: Path, clips: list[Clip]) -> list[Path]:
    """Where each clip's audio is stored; a clip listed in the csv without its file is an error."""
    paths = []
    for c in clips:
        p = audio_path(root, c.filename)
        if p is None:
            from esccli.fetch import reinstall_command  # ssl and http: not in every featurize worker

            raise DatasetError(f"{c.filename} is listed in the csv but missing from {root / 'audio'}",
                               f"run `{reinstall_command(root)}` to reinstall ESC-50")
        paths.append(p)
    return paths


def audio_stamps(paths: list[Path]) -> list[list] | None:
    """Each audio file as [name, size in bytes, modification time, status-change time (both in ns), inode number],
    or None when one cannot be read: what a cache records so that audio replaced under an unchanged csv is not
    served from features of the old audio. A copy that keeps the modification time (cp -p, rsync -a, unpacking an
    archive) still gets a new inode or status-change time."""
    stamps = []
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            return None
        stamps.append([p.name, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino])
    return stamps


def cache_dir(layout: Layout, params: FeatureParams, csv_sha: str) -> Path:
    return layout.features / f"{params.key()}-{csv_sha[:8]}"


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


def load_or_build(
    layout: Layout,
    params: FeatureParams,
    dataset_root: Path | None = None,
    jobs: int | None = None,
    rebuild: bool = False,
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
) -> FeatureSet:
    """The features of every clip for `params`: from the cache when it is intact, else computed and cached.
    notify(message) says why a cache that is there is rebuilt."""
    check_params(params)
    root = Path(dataset_root) if dataset_root else layout.dataset
    if not (root / META_CSV).is_file():
        raise DatasetError(f"ESC-50 is not installed in {root}", "run `esc fetch` first")
    # the dataset lock keeps `esc fetch --force` from swapping the dataset while it is read; then the cache's own
    with folder_lock(layout.locks / "dataset.lock", "the dataset"):
        csv_sha = sha256_file(root / META_CSV)
        folder = cache_dir(layout, params, csv_sha)
        with folder_lock(layout.locks / f"features-{folder.name}.lock", "the feature cache"):
            clips = read_metadata(root)
            paths = audio_paths(root, clips)
            stamps = audio_stamps(paths)
            remove_stale_temporaries(folder, older_than=0)  # we hold its lock: a killed writer's, none in use
            if not rebuild:
                try:
                    cached = load_cache(folder, params)
                    # index.json has no checksum of its own: its clip list must be the dataset's, clip for clip,
                    # and the audio files the ones it was computed from
                    if not _describes(cached, clips):
                        raise CacheProblem("its clip list is not the dataset's")
                    if stamps is None or cached.audio != stamps:
                        raise CacheProblem("the dataset's audio files changed since it was built")
                    return cached
                except FileNotFoundError:
                    pass  # no cache yet
                except CacheProblem as e:
                    if notify:
                        notify(f"rebuilding the feature cache in {folder}: {e}")
            jobs = jobs or default_jobs()
            check_memory(params, len(clips), jobs)
            check_bands(params)
            features, mods = compute_features(paths, params, jobs, progress)
            if audio_stamps(paths) != stamps:  # changed while it was read: the next call rebuilds
                stamps = None
            fs = FeatureSet(features, np.array([c.target for c in clips], np.int64), np.array([c.fold for c in clips], np.int64),
                            [c.filename for c in clips], params, folder, built=True, audio=stamps, modulation=mods)
            write_cache(folder, fs, csv_sha)
            return fs


def compute_features(audio: list[Path], params: FeatureParams, jobs: int,
                     progress: Callable[[int, int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The features of these audio files (audio_paths), [files, n_mels, frames] float16, and their modulation
    statistics, [files, modulation.COUNT] float32 (None where has_modulation says so), in `jobs` processes."""
    paths = [str(p) for p in audio]
    out = np.empty((len(paths), params.n_mels, params.frames), np.float16)
    mods = np.empty((len(paths), modulation.COUNT), np.float32) if has_modulation(params) else None
    chunks = [(i, paths[i:i + CHUNK]) for i in range(0, len(paths), CHUNK)]
    done = 0
    if jobs <= 1:
        results = ((i, _featurize_files(ps, params)) for i, ps in chunks)
        for i, (feats, m) in results:
            _put(out, mods, i, feats, m)
            done += len(feats)
            if progress:
                progress(done, len(paths))
        return out, mods
    from concurrent.futures import as_completed

    from esccli.interrupts import held

    pool = ProcessPoolExecutor(max_workers=jobs, initializer=_worker_init)
    try:
        with held():  # the workers start (forked here) with them held back, until _worker_init has set them
            futures = {pool.submit(_featurize_files, ps, params): i for i, ps in chunks}
        for fut in as_completed(futures):
            i = futures.pop(fut)  # and the finished chunk is let go once copied
            feats, m = fut.result()
            _put(out, mods, i, feats, m)
            done += len(feats)
            if progress:
                progress(done, len(paths))
    except BaseException:  # interrupted, or a file failed: the chunks not yet handed to a worker are dropped
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return out, mods


def _put(out: np.ndarray, mods: np.ndarray | None, i: int, feats: np.ndarray, m: np.ndarray | None) -> None:
    out[i:i + len(feats)] = feats
    if mods is not None:
        mods[i:i + len(feats)] = m


def _worker_init() -> None:
    """A featurizing process: one thread; Ctrl-C is the parent's to handle (it drops the chunks not yet handed out,
    and those handed out end within moments), SIGTERM ends it unless esc ignores it (a forked worker would otherwise
    keep esc's handlers)."""
    import signal

    import torch

    from esccli.interrupts import SIGNALS

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(SIGNALS))


def _featurize_files(paths: list[str], params: FeatureParams) -> tuple[np.ndarray, np.ndarray]:
    """The features (float16) and modulation statistics (float32; None where has_modulation says so) of these clips,
    from one decoding."""
    import torch

    waves = np.stack([pad_or_trim(_dataset_clip(p, params.sample_rate), params.clip_samples) for p in paths])
    mods = None
    if has_modulation(params):
        mods = modulation.statistics(torch.from_numpy(np.ascontiguousarray(waves, np.float32)), params.sample_rate).numpy()
    return log_mel(waves, params).astype(np.float16), mods


def _damaged(path: str) -> str:
    """The hint for a clip of the installed dataset (root/audio/clip) that cannot be used."""
    from esccli.fetch import reinstall_command  # ssl and http: imported by a worker only when a clip is bad

    return f"the installed ESC-50 is damaged: run `{reinstall_command(Path(path).parent.parent)}` to reinstall it"


def _dataset_clip(path: str, sample_rate: int) -> np.ndarray:
    """A clip of the installed dataset; one that cannot be read means the copy is damaged, which fetch mends."""
    try:
        wave = load_audio(path, sample_rate)
    except AudioError as e:
        raise DatasetError(e.message, _damaged(path)) from None
    problem = length_problem(len(wave), sample_rate)
    if problem:
        raise DatasetError(f"{path}: {problem}", _damaged(path))
    return wave


def write_cache(folder: Path, fs: FeatureSet, csv_sha: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_write(folder / "features.npy") as f:
        np.save(f, fs.features, allow_pickle=False)
    if fs.modulation is not None:
        with atomic_write(folder / "modulation.npy") as f:
            np.save(f, fs.modulation, allow_pickle=False)
    else:
        (folder / "modulation.npy").unlink(missing_ok=True)
    index = {
        "format": CACHE_FORMAT,
        "esc_version": __version__,
        "params": fs.params.to_dict(),
        "csv_sha256": csv_sha,
        "shape": list(fs.features.shape),
        "dtype": str(fs.features.dtype),
        "sha256": sha256_file(folder / "features.npy"),
        "modulation": None if fs.modulation is None else {
            "version": modulation.VERSION, "shape": list(fs.modulation.shape), "sha256": sha256_file(folder / "modulation.npy")},
        "clips": [{"filename": n, "fold": int(f), "target": int(t)} for n, f, t in zip(fs.filenames, fs.folds, fs.targets)],
        "audio": fs.audio,
    }
    atomic_write_text(folder / "index.json", json.dumps(index))  # written last: its presence marks a whole cache


class CacheProblem(Exception):
    """Why a feature cache that is there cannot be used (it is then rebuilt)."""


def load_cache(folder: Path, params: FeatureParams) -> FeatureSet:
    """The cached FeatureSet; FileNotFoundError when there is no cache, CacheProblem saying why one is not usable."""
    if not (folder / "index.json").is_file():
        if (folder / "features.npy").is_file():  # written first: a build killed before its index, or a loss
            raise CacheProblem("its index.json is missing")
        raise FileNotFoundError(folder / "index.json")
    try:
        index = json.loads((folder / "index.json").read_text())
    except (OSError, ValueError, RecursionError):  # unreadable, not json (or not text), nested beyond reason
        raise CacheProblem("its index.json is damaged") from None
    try:
        return _cached(folder, params, index)
    except FileNotFoundError as e:
        raise CacheProblem(f"{Path(e.filename or '').name or 'a file'} is missing") from None
    except KeyError as e:
        raise CacheProblem(f"its index.json lacks {e}") from None
    except (OSError, ValueError, TypeError, AttributeError, OverflowError, RecursionError):
        raise CacheProblem("its index.json is damaged") from None


def _cached(folder: Path, params: FeatureParams, index) -> FeatureSet:
    """load_cache's checks, once index.json is read: any of them failing is a CacheProblem or a KeyError (an entry
    missing), ValueError or TypeError (an entry of the wrong kind)."""
    if not isinstance(index, dict) or type(index.get("format")) is not int:
        raise CacheProblem("its index.json is damaged")
    if index["format"] != CACHE_FORMAT:
        raise CacheProblem(f"it was made by another version of esc (cache format {index.get('format')}, "
                           f"this one reads {CACHE_FORMAT})")
    if FeatureParams.from_dict(index["params"]) != params:
        raise CacheProblem("it holds features with other parameters")
    npy = folder / "features.npy"
    if sha256_file(npy) != index["sha256"]:
        raise CacheProblem("features.npy does not match its checksum")
    features = np.load(npy, allow_pickle=False)
    about, mods = index["modulation"], None
    if (about is None) == has_modulation(params):
        raise CacheProblem("it lacks the modulation statistics" if about is None
                           else "it holds modulation statistics these features do not have")
    if about is not None:
        if about["version"] != modulation.VERSION:
            raise CacheProblem(f"its modulation statistics are of version {about['version']}, "
                               f"this esc computes version {modulation.VERSION}")
        if sha256_file(folder / "modulation.npy") != about["sha256"]:
            raise CacheProblem("modulation.npy does not match its checksum")
        mods = np.load(folder / "modulation.npy", allow_pickle=False)
    clips = index["clips"]
    filenames = [str(c["filename"]) for c in clips]
    targets = np.array([c["target"] for c in clips], np.int64)
    folds = np.array([c["fold"] for c in clips], np.int64)
    if not isinstance(features, np.ndarray) or features.dtype != np.float16 or index["dtype"] != "float16" \
            or list(features.shape) != index["shape"] or features.shape[1:] != (params.n_mels, params.frames):
        raise CacheProblem("features.npy does not have the shape or type its index says")
    if features.shape[0] != len(filenames):
        raise CacheProblem(f"its index lists {len(filenames)} clips, features.npy holds {features.shape[0]}")
    if about is not None and (not isinstance(mods, np.ndarray) or mods.dtype != np.float32
                              or list(mods.shape) != about["shape"] or mods.shape != (len(filenames), modulation.COUNT)):
        raise CacheProblem("modulation.npy does not have the shape or type its index says")
    return FeatureSet(features, targets, folds, filenames, params, folder, audio=index.get("audio"), modulation=mods)
