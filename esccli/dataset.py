"""ESC-50 on disk: its metadata, where each clip's audio is, and the checks that say a copy is complete.

A dataset folder is laid out like the official archive's `ESC-50-master`: `meta/esc50.csv` and
`audio/<filename>`. A clip listed as `x.wav` may also be stored as `x.flac` (the 16 kHz development copy).
"""

import csv
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from esccli.classes import CLASS_NAMES, NUM_CLASSES
from esccli.errors import DatasetError

META_CSV = Path("meta") / "esc50.csv"
AUDIO_DIR = "audio"
CSV_COLUMNS = ("filename", "fold", "target", "category", "esc10", "src_file", "take")
NUM_FOLDS = 5
CLIPS_PER_CLASS_PER_FOLD = 8
NUM_CLIPS = NUM_FOLDS * NUM_CLASSES * CLIPS_PER_CLASS_PER_FOLD  # 2000
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


@dataclass(frozen=True)
class Clip:
    filename: str
    fold: int
    target: int
    src_file: str
    take: str

    @property
    def category(self) -> str:
        return CLASS_NAMES[self.target]


def read_metadata(root: Path) -> list[Clip]:
    """Parse meta/esc50.csv, checking columns and values; raise DatasetError saying what is wrong."""
    path = Path(root) / META_CSV
    if not path.is_file():
        raise DatasetError(f"no {META_CSV} in {root}", "run `esc fetch` to install ESC-50")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in CSV_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(f"{path}: missing columns {', '.join(missing)}")
            rows = list(reader)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: not a text csv file") from None
    clips = []
    for i, r in enumerate(rows, start=2):
        try:
            clip = Clip(r["filename"], int(r["fold"]), int(r["target"]), r["src_file"], r["take"])
        except (TypeError, ValueError):
            raise DatasetError(f"{path}:{i}: bad fold or target value") from None
        name = clip.filename
        if not name or "/" in name or "\\" in name or name.startswith("."):
            raise DatasetError(f"{path}:{i}: bad file name {name!r}")
        if not 1 <= clip.fold <= NUM_FOLDS or not 0 <= clip.target < NUM_CLASSES:
            raise DatasetError(f"{path}:{i}: fold {clip.fold} or target {clip.target} out of range")
        if r["category"] != CLASS_NAMES[clip.target]:
            raise DatasetError(f"{path}:{i}: target {clip.target} is {CLASS_NAMES[clip.target]}, not {r['category']}")
        clips.append(clip)
    return clips


def audio_path(root: Path, filename: str) -> Path | None:
    """Where the audio of a listed clip is stored, trying the listed name then the same stem as FLAC/OGG."""
    base = Path(root) / AUDIO_DIR / filename
    if base.is_file():
        return base
    for suffix in AUDIO_SUFFIXES:
        alt = base.with_suffix(suffix)
        if alt.is_file():
            return alt
    return None


def check_balance(clips: list[Clip], allow_subset: bool = False) -> list[str]:
    """Problems with the fold x class counts: ESC-50 has 8 clips of each class in each fold."""
    problems = []
    names = Counter(c.filename for c in clips)
    dupes = [n for n, k in names.items() if k > 1]
    if dupes:
        problems.append(f"{len(dupes)} file names listed twice (e.g. {dupes[0]})")
    counts = Counter((c.fold, c.target) for c in clips)
    if allow_subset:
        per = set(counts.get((f, t), 0) for f in range(1, NUM_FOLDS + 1) for t in range(NUM_CLASSES))
        if len(per) != 1 or 0 in per:
            problems.append("the csv is not a balanced subset (each class needs the same number of clips in each fold)")
        return problems
    if len(clips) != NUM_CLIPS:
        problems.append(f"meta/esc50.csv lists {len(clips)} clips, expected {NUM_CLIPS}")
    short = [(f, t, counts.get((f, t), 0)) for f in range(1, NUM_FOLDS + 1) for t in range(NUM_CLASSES)
             if counts.get((f, t), 0) != CLIPS_PER_CLASS_PER_FOLD]
    for f, t, n in short[:5]:
        problems.append(f"fold {f}, class {CLASS_NAMES[t]}: {n} clips, expected {CLIPS_PER_CLASS_PER_FOLD}")
    if len(short) > 5:
        problems.append(f"... and {len(short) - 5} more fold/class cells with the wrong count")
    return problems


def verify_dataset(
    root: Path,
    decode: bool = True,
    allow_subset: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> list[Clip]:
    """Check a dataset folder completely; return its clips or raise DatasetError listing every problem.

    decode=True opens every clip's audio header and reads its samples, so a garbled file, or one cut short (shorter
    than CLIP_SECONDS), is found now and not half way through training.
    """
    root = Path(root)
    clips = read_metadata(root)
    problems = check_balance(clips, allow_subset)
    missing, broken = [], []
    for i, clip in enumerate(clips):
        path = audio_path(root, clip.filename)
        if path is None:
            missing.append(clip.filename)
        elif decode:
            err = _decode_problem(path)
            if err:
                broken.append(f"{clip.filename}: {err}")
        if progress:
            progress(i + 1, len(clips))
    if missing:
        problems.append(f"{len(missing)} listed clip{'s are' if len(missing) > 1 else ' is'} missing from audio/: "
                        f"{', '.join(missing[:5])}"
                        + (" ..." if len(missing) > 5 else ""))
    if broken:
        problems.append(f"{len(broken)} clip{'s are' if len(broken) > 1 else ' is'} unreadable or cut short: "
                        + "; ".join(broken[:5]) + (" ..." if len(broken) > 5 else ""))
    if problems:
        raise DatasetError(f"ESC-50 in {root} is incomplete or damaged:\n  " + "\n  ".join(problems))
    return clips


CLIP_SECONDS = 5.0  # every ESC-50 clip lasts exactly this long (the dataset pads shorter sounds with silence)
CLIP_TOLERANCE = 0.01  # seconds a clip may fall short of it (resampling rounds); shorter means a truncated file


def length_problem(samples: int, sample_rate: int) -> str | None:
    """What is wrong with a dataset clip of `samples` samples at `sample_rate`, if it is shorter than an ESC-50
    clip: a file cut short (a copy or download stopped part way) that still decodes."""
    seconds = samples / sample_rate
    if seconds < CLIP_SECONDS - CLIP_TOLERANCE:
        return f"it lasts {seconds:.2f} s, not {CLIP_SECONDS:g} s as every ESC-50 clip does"
    return None


def _decode_problem(path: Path) -> str | None:
    import numpy as np
    import soundfile as sf

    try:
        with sf.SoundFile(str(path)) as f:
            if f.frames <= 0:
                return "no samples"
            x = f.read(dtype="float32")
    except Exception as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    if x.size == 0:
        return "no samples"
    if not np.all(np.isfinite(x)):
        return "NaN or infinite samples"
    return length_problem(len(x), f.samplerate)


def folds_of(clips: list[Clip]) -> list[int]:
    return sorted({c.fold for c in clips})
