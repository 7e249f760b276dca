"""Labelling anyone's recordings: cut each file into model-sized windows, classify them, summarise per file.

A model sees `params.clip_seconds` of audio at a time (one window). A recording is read as a stream and cut
into windows `hop` apart (half a window by default); each window is featurised and classified like a training
clip, and the file's summary is the mean of its windows' class probabilities. Windows of every file go through
the network in shared batches, so a folder of short clips costs a few large forward passes, and an hour-long
recording never has more than a window's overlap plus one read block and one batch in memory.

How windows are placed (`window_starts`, the reference the streaming code agrees with):
- whole windows at 0, hop, 2*hop, ... as long as they fit in the recording;
- then, if at least SHORT_SECONDS of audio are left that no whole window covers, one more window that ends
  where the recording ends (not padded: only a short recording's window is); a shorter tail, briefer than any
  ESC-50 sound, is heard only as far as the windows before it reach;
- a recording shorter than one window gives one window, zero-padded at the end as training padded short clips.

Every problem with one file (missing, not audio, empty, corrupt, NaN samples, silent) becomes that file's
`error`; the other files are still classified.
"""

import fnmatch
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import numpy as np

from esccli.audio import STREAM_BLOCK_SECONDS, AudioBytes, audio_info, stream_audio
from esccli.classes import CLASS_NAMES, category_of
from esccli.errors import AudioError, EscError

DEFAULT_TOP_K = 3
DEFAULT_BATCH_SIZE = 32  # windows per forward pass (a 5 s window is 320 KB of samples)
HOP_FRACTION = 0.5  # default hop, as a fraction of the window
# a window (or a file) is silent, nothing to classify, when under SILENCE_SECONDS of its samples (in all; a window
# briefer than twice that: under half of them) stand out of its median (a DC offset is not a sound) by SILENCE_DBFS
# or more. The quietest ESC-50 clip peaks at -40 dBFS (2-110613-A-13), 30 dB above; 16-bit dither (2 LSB, -84 dBFS),
# noise at -90 dBFS RMS and a bare DC offset stay under it. The few ms allowed are the resampler's ringing at the
# ends of a recording that does not start and end at zero (a DC offset up to full scale: about 20 samples at 16 kHz
# at each end from 44.1 kHz, 45 from 8 kHz; more from lower rates); the briefest sound in ESC-50 lasts 0.32 s
# (SHORT_SECONDS)
SILENCE_DBFS = -70
SILENCE_PEAK = 10 ** (SILENCE_DBFS / 20)
SILENCE_SECONDS = 0.01
# a recording shorter than this gets a note, and audio left after a recording's last whole window gets a window of
# its own only if it lasts this long: every sound in ESC-50 lasts longer (the shortest, 0.32 s from the first to
# the last sample above 1e-4, in 1-100032-A-0), so the model has never heard anything so brief
SHORT_SECONDS = 0.25
AUDIO_GLOB = "*.{wav,flac,ogg,oga,opus,mp3,aiff,aif,au}"  # what a folder search picks up by default
STDIN_NAME = "-"


# --- what goes in and what comes out ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Unusable:
    """An input that is known to be bad before reading it (e.g. a folder that cannot be listed)."""

    name: str
    error: str


Source = Path | str | AudioBytes | Unusable


class Guess(NamedTuple):
    name: str  # the class
    category: str | None  # its ESC-50 category (None for a class ESC-50 does not have)
    probability: float


class Window(NamedTuple):
    start: float  # seconds
    end: float  # seconds; the end of the audio in it (a short recording's padded window ends with the recording)
    name: str | None  # the top class; None for a silent window (not classified)
    probability: float | None
    top: list[Guess]

    @property
    def silent(self) -> bool:
        return self.name is None


@dataclass
class FileResult:
    file: str
    duration: float | None = None  # seconds, from the header
    sample_rate: int | None = None  # the file's own rate
    channels: int | None = None
    top: list[Guess] = field(default_factory=list)
    windows: list[Window] = field(default_factory=list)  # filled when asked for (with_windows)
    n_windows: int = 0
    error: str | None = None
    note: str | None = None  # something to know about a result that is given (a recording too short to mean much)
    silent: bool = False  # every window silent: the error says so

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Segment:
    """Consecutive windows with the same top class, as one stretch of the timeline."""

    start: float
    end: float
    name: str | None  # the top class; None for a stretch of silent or of unsure windows
    probability: float | None  # the mean top-class probability over its windows (None when name is None)
    windows: int
    silent: bool = False


# --- model-free steps --------------------------------------------------------------------------------------------

def is_silent(samples: np.ndarray, sample_rate: int) -> bool:
    """Whether a window holds nothing to classify (see SILENCE_SECONDS). The zero padding of a short window is left
    out: an offset there would be heard as a step into silence. The offset is the median of every few samples (a
    mean would be dragged by a short loud pop, and all the quiet around it would then stand out)."""
    if not samples.size:
        return True
    offset = np.median(samples[:: max(1, samples.size // 4096)])
    loud = int(np.count_nonzero(np.abs(samples - offset) >= SILENCE_PEAK))
    return loud < min(SILENCE_SECONDS * sample_rate, samples.size / 2)


def window_starts(n: int, window: int, hop: int, min_tail: int = 1) -> list[tuple[int, int]]:
    """(start, end) sample positions of the windows of an n-sample recording (see the module docstring)."""
    if window <= 0 or hop <= 0:
        raise ValueError("window and hop must be positive")
    if n <= 0:
        return []
    if n <= window:
        return [(0, n)]
    spans = []
    start = 0
    while start + window <= n:
        spans.append((start, start + window))
        start += hop
    if n - spans[-1][1] >= min_tail:  # audio left after the last whole window: one more, ending with the recording
        spans.append((n - window, n))
    return spans


def iter_windows(blocks: Iterable[np.ndarray], window: int, hop: int,
                 min_tail: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """(start sample, samples) of each window of a stream of blocks, placed as `window_starts` places them.

    Holds at most one block plus a window of samples: what is before both the next window's start and the last
    window's worth of samples is dropped. A recording shorter than a window is yielded short; the caller pads it.
    """
    buf = np.zeros(0, np.float32)
    buf_start = 0  # the sample position of buf[0] in the recording
    next_start = 0
    covered = 0  # the end of the last whole window
    n = 0
    for block in blocks:
        n += block.size
        buf = np.concatenate([buf, block]) if buf.size else block
        while next_start + window <= n:
            off = next_start - buf_start
            yield next_start, buf[off:off + window]
            covered = next_start + window
            next_start += hop
        drop = min(next_start, n - window) - buf_start  # kept: the next window's start, and the last window
        if drop > 0:
            buf = buf[drop:]
            buf_start += drop
    if n == 0:
        return
    if covered == 0:  # shorter than one window
        yield 0, buf
    elif n - covered >= min_tail:
        yield n - window, buf[n - window - buf_start:]


def category_for(name: str) -> str | None:
    try:
        return category_of(CLASS_NAMES.index(name))
    except ValueError:
        return None


def top_classes(probs: np.ndarray, classes: list[str], k: int, min_probability: float = 0.0) -> list[Guess]:
    """The k most probable classes, most probable first, leaving out those under min_probability."""
    order = np.argsort(-probs, kind="stable")[: max(0, k)]
    return [Guess(classes[i], category_for(classes[i]), float(probs[i])) for i in order
            if probs[i] >= min_probability]


def timeline(windows: list[Window], duration: float, min_probability: float = 0.0) -> list[Segment]:
    """Merge consecutive windows with the same top class into segments that tile [0, duration].

    A boundary between two segments lies halfway between the centres of the windows on either side of it,
    so overlapping windows do not make segments overlap. Silent windows make silent segments; a window
    whose top class is under min_probability is unsure, and merges with the unsure windows next to it.
    """
    groups: list[list[Window]] = []
    for w in windows:
        if groups and _key(groups[-1][0], min_probability) == _key(w, min_probability):
            groups[-1].append(w)
        else:
            groups.append([w])
    segments = []
    for i, g in enumerate(groups):
        start = 0.0 if i == 0 else (_centre(groups[i - 1][-1]) + _centre(g[0])) / 2
        end = duration if i == len(groups) - 1 else (_centre(g[-1]) + _centre(groups[i + 1][0])) / 2
        kind, name = _key(g[0], min_probability)
        probability = float(np.mean([w.probability for w in g])) if kind == "class" else None
        segments.append(Segment(start, max(start, end), name, probability, len(g), silent=kind == "silent"))
    return segments


def _key(w: Window, min_probability: float) -> tuple[str, str | None]:
    if w.silent:
        return "silent", None
    if w.probability < min_probability:
        return "unsure", None
    return "class", w.name


def _centre(w: Window) -> float:
    return (w.start + w.end) / 2


# --- which files -------------------------------------------------------------------------------------------------

def expand_braces(pattern: str) -> list[str]:
    """'*.{wav,flac}' -> ['*.wav', '*.flac'] (as a shell does; nested and repeated braces too)."""
    close = pattern.find("}")
    open_ = pattern.rfind("{", 0, close) if close >= 0 else -1
    if open_ < 0:
        return [pattern]
    head, body, tail = pattern[:open_], pattern[open_ + 1:close], pattern[close + 1:]
    return [p for alt in body.split(",") for p in expand_braces(head + alt + tail)]


def gather(items: Iterable[str | Path], pattern: str = AUDIO_GLOB) -> list[Source]:
    """The files to classify: files as given, folders searched recursively for names matching `pattern`.

    Matching ignores case; a pattern with a '/' is matched against the path below the folder ('**/' at its start
    matches no folder too, as in a shell: '**/*.ogg' finds the folder's own ogg files). Hidden files and folders
    are skipped. A folder with no match, or one that cannot be read, becomes an Unusable entry. Paths that do not
    exist are kept, so that they get their own error. A pipe (`<(ffmpeg ...)`, a named pipe) is read once, here, as
    stdin is: it has no size, and reading its header and then its samples would open it twice.
    """
    patterns = [p.lower() for p in expand_braces(pattern)]
    patterns += [p[3:] for p in patterns if p.startswith("**/")]
    found: list[Source] = []
    for item in items:
        path = Path(item)
        if path.is_fifo():
            try:
                found.append(AudioBytes(str(path), path.read_bytes()))
            except OSError as e:
                found.append(Unusable(str(path), f"cannot read this pipe ({e.strerror or e})"))
            continue
        if not path.is_dir():
            found.append(path)
            continue
        problems: list[OSError] = []
        matches = []
        for folder, dirs, files in os.walk(path, onerror=problems.append):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                rel = (Path(folder) / name).relative_to(path).as_posix().lower()
                if not name.startswith(".") and any(
                        fnmatch.fnmatchcase(rel if "/" in p else name.lower(), p) for p in patterns):
                    matches.append(Path(folder) / name)
        found.extend(matches)
        for e in problems:
            found.append(Unusable(str(e.filename or path), f"cannot read this folder ({e.strerror or e})"))
        if not matches and not problems:
            found.append(Unusable(str(path), f"no files matching {pattern} in this folder"))
    return found


# --- reading ------------------------------------------------------------------------------------------------------

def _name(source: Source) -> str:
    return source.name if isinstance(source, (AudioBytes, Unusable)) else str(Path(source))


def _reason(e: Exception, name: str) -> str:
    """An error's message without the file name the audio module puts in front (the result names the file)."""
    msg = str(e)
    return msg[len(name) + 2:] if msg.startswith(f"{name}: ") else msg


def _info(source: Source) -> tuple[int, int, float]:
    if isinstance(source, AudioBytes):
        return audio_info(source)
    path = Path(source)
    if path.is_dir():  # given directly, not through gather
        if not os.access(path, os.R_OK | os.X_OK):
            raise AudioError(f"{path}: cannot read this folder (permission denied)")
        raise AudioError(f"{path}: is a folder, not an audio file")
    return audio_info(path)


# --- classifying ---------------------------------------------------------------------------------------------------

class _File:
    """One file in flight: its windows' results as they come back from the batches."""

    def __init__(self, source: Source, n_classes: int):
        self.result = FileResult(_name(source))
        self.sum = np.zeros(n_classes, np.float64)
        self.classified = 0
        self.pending = 0  # windows sent to the batch, not back yet
        self.slots: list[Window | None] = []
        self.read = False  # every window has been cut
        self.samples = 0  # decoded samples, at the model's rate

    @property
    def done(self) -> bool:
        return self.read and (self.pending == 0 or self.result.error is not None)


class _Batcher:
    """Windows of any files, featurised and classified `size` at a time."""

    def __init__(self, loaded, size: int, device, k: int, min_probability: float, keep_windows: bool):
        from esccli.models import needs_modulation

        self.loaded = loaded
        self.params = loaded.params
        self.classes = loaded.classes
        self.device = device
        self.k, self.min_probability, self.keep_windows = k, min_probability, keep_windows
        self.waves = np.zeros((size, self.params.clip_samples), np.float32)
        self.hears_modulation = needs_modulation(loaded.model)  # computed per window (flush), as featurize per clip
        self.owners: list[tuple[_File, int, float, float]] = []  # file, slot, start, end

    def add(self, f: _File, slot: int, start: float, end: float, samples: np.ndarray) -> None:
        row = len(self.owners)
        self.waves[row, : samples.size] = samples
        self.waves[row, samples.size:] = 0.0  # the zero padding log_mel gives a short clip
        self.owners.append((f, slot, start, end))
        f.pending += 1
        if len(self.owners) == len(self.waves):
            self.flush()

    def flush(self) -> None:
        if not self.owners:
            return
        import torch

        from esccli import modulation
        from esccli.features import log_mel
        from esccli.models import apply_net

        n = len(self.owners)
        feats = torch.from_numpy(log_mel(self.waves[:n], self.params)).unsqueeze(1).to(self.device)
        mods = None
        if self.hears_modulation:
            mods = modulation.statistics(torch.from_numpy(self.waves[:n]), self.params.sample_rate).to(self.device)
        with torch.inference_mode():
            probs = torch.softmax(apply_net(self.loaded.model, feats, mods).float(), dim=1).cpu().numpy()
        for (f, slot, start, end), p in zip(self.owners, probs):
            f.pending -= 1
            if f.result.error is not None:
                continue
            if not np.all(np.isfinite(p)):  # a bug's or a damaged model's symptom; never a NaN in the output
                f.result.error = "the model's output for this file is not a number"
                continue
            f.sum += p
            f.classified += 1
            if self.keep_windows:
                best = int(np.argmax(p))
                f.slots[slot] = Window(start, end, self.classes[best], float(p[best]),
                                       top_classes(p, self.classes, self.k, self.min_probability))
        self.owners.clear()


def predict_files(sources: Iterable[Source], loaded, top_k: int = DEFAULT_TOP_K, hop_seconds: float | None = None,
                  batch_size: int = DEFAULT_BATCH_SIZE, device=None, with_windows: bool = False,
                  progress: Callable[[int, int | None], None] | None = None, min_probability: float = 0.0,
                  block_seconds: float = STREAM_BLOCK_SECONDS) -> Iterator[FileResult]:
    """Classify recordings with a LoadedModel; yield one FileResult per source, in order, as each is done.

    top_k classes (those under min_probability left out) summarise each file; with_windows also keeps every
    window's top class and top_k. progress(files done, files in all or None) is called after each file.

    Decoding stays in this thread. Measured with the default escnet on two (busy) cores: decoding and
    resampling 44.1 kHz stereo is 10-20% of the time (about 1 s of 10 s for a 10-minute file, 1 s of 5 s
    for a hundred 5-second clips), the forward passes most of the rest; a decoding thread beside torch's
    two did not measurably speed that up.
    """
    if hop_seconds is not None and hop_seconds <= 0:
        raise ValueError("hop_seconds must be positive")
    params = loaded.params
    window = params.clip_samples
    sr = params.sample_rate
    hop = max(1, int(round((hop_seconds if hop_seconds is not None else HOP_FRACTION * params.clip_seconds) * sr)))
    if hop > window:
        raise EscError(f"a hop of {hop_seconds:g} s is longer than the model's {params.clip_seconds:g} s windows: "
                       "the audio between them would never be heard", f"use --hop {params.clip_seconds:g} or less")
    if device is None:
        device = next(loaded.model.parameters()).device
    sources = sources if isinstance(sources, list) else list(sources)
    classes = loaded.classes
    batcher = _Batcher(loaded, max(1, batch_size), device, top_k, min_probability, with_windows)
    in_flight: deque[_File] = deque()
    done = 0

    def finished() -> Iterator[FileResult]:
        nonlocal done
        while in_flight and in_flight[0].done:
            result = _finish(in_flight.popleft(), classes, top_k, min_probability, with_windows)
            done += 1
            if progress:
                progress(done, len(sources))
            yield result

    events = _cut(sources, len(classes), window, hop, sr, block_seconds)
    for kind, f, item in events:
        if kind == "file":
            in_flight.append(f)
        elif kind == "window":
            t0, t1, samples = item
            slot = len(f.slots)
            if samples is None:  # silent
                f.slots.append(Window(t0, t1, None, None, []))
            else:
                f.slots.append(None)
                batcher.add(f, slot, t0, t1, samples)
        else:  # "end"
            f.read = True
            yield from finished()
    batcher.flush()
    yield from finished()


def _cut(sources: list[Source], n_classes: int, window: int, hop: int, sr: int, block_seconds: float):
    """Events ("file", f, None), ("window", f, (start s, end s, samples or None when silent)), ("end", f, None)."""
    for source in sources:
        f = _File(source, n_classes)
        yield "file", f, None
        try:
            for start, samples in _windows_of(f, source, window, hop, sr, block_seconds):
                silent = is_silent(samples, sr)
                yield "window", f, (start / sr, (start + samples.size) / sr, None if silent else samples)
        except (AudioError, OSError) as e:
            f.result.error = _reason(e, f.result.file)
        except Exception as e:  # noqa: BLE001  a decoder's surprise must not end the batch
            f.result.error = f"could not be read ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
        yield "end", f, None


def _windows_of(f: _File, source: Source, window: int, hop: int, sr: int, block_seconds: float):
    if isinstance(source, Unusable):
        raise AudioError(source.error)
    r = f.result
    r.sample_rate, r.channels, r.duration = _info(source)

    def counted(blocks):
        for b in blocks:
            f.samples += b.size
            yield b

    yield from iter_windows(counted(stream_audio(source, sr, block_seconds)), window, hop,
                            min_tail=max(1, round(SHORT_SECONDS * sr)))
    if f.samples == 0:
        raise AudioError(f"too short: no samples left at {sr} Hz")
    if f.samples < SHORT_SECONDS * sr:
        r.note = (f"only {f.samples / sr:.3f} s long: shorter than any sound in ESC-50 (the shortest lasts 0.32 s), "
                  "so its classes mean little")


def _finish(f: _File, classes: list[str], k: int, min_probability: float, with_windows: bool) -> FileResult:
    r = f.result
    r.n_windows = len(f.slots)
    if r.error is None and f.classified == 0:
        r.silent = True
        r.error = (f"silent (nothing louder than {SILENCE_DBFS} dBFS for {SILENCE_SECONDS * 1000:g} ms or more): "
                   "nothing to classify; amplify it if it holds a sound")
    if r.error is None:
        r.top = top_classes(f.sum / f.classified, classes, k, min_probability)
        r.windows = [w for w in f.slots if w is not None] if with_windows else []
    return r
