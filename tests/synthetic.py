"""A small ESC-50-shaped dataset made of separable synthetic sounds, for tests.

Class k is a tone whose frequency rises with k (log-spaced 150 Hz - 6 kHz), switched on and off at a
class-specific rate, over quiet noise; a tiny model tells the classes apart in a few epochs.
"""

import csv
import io
import zipfile
from pathlib import Path

import numpy as np
import soundfile as sf

from esccli.classes import CLASS_NAMES
from esccli.dataset import CSV_COLUMNS, NUM_FOLDS

FIELDS = list(CSV_COLUMNS)


def class_frequency(target: int) -> float:
    return float(150.0 * (6000.0 / 150.0) ** (target / 49.0))


def class_signal(target: int, seconds: float, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f = class_frequency(target) * (1 + 0.01 * rng.standard_normal())
    gate = (np.sin(2 * np.pi * (0.5 + (target % 5)) * t + rng.uniform(0, 6.28)) > -0.3).astype(np.float32)
    x = 0.5 * np.sin(2 * np.pi * f * t + rng.uniform(0, 6.28)) * gate
    x += 0.02 * rng.standard_normal(t.size)
    return x.astype(np.float32)


def rows(per_class: int, classes=range(len(CLASS_NAMES))):
    out = []
    for fold in range(1, NUM_FOLDS + 1):
        for target in classes:
            for i in range(per_class):
                src = f"{fold}{target:02d}{i:03d}"
                out.append({
                    "filename": f"{fold}-{src}-A-{target}.wav", "fold": fold, "target": target,
                    "category": CLASS_NAMES[target], "esc10": "False", "src_file": src, "take": "A",
                })
    return out


def write_csv(path: Path, rs) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rs)


def make_dataset(root: Path, per_class: int = 1, sr: int = 16000, seconds: float = 5.0) -> Path:
    """ESC-50-master-like folder: meta/esc50.csv and audio/*.wav. Returns root."""
    root = Path(root)
    rs = rows(per_class)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    for i, r in enumerate(rs):
        sf.write(root / "audio" / r["filename"], class_signal(r["target"], seconds, sr, seed=i), sr, subtype="PCM_16")
    write_csv(root / "meta" / "esc50.csv", rs)
    return root


def make_archive(path: Path, dataset_root: Path, top: str = "ESC-50-master") -> Path:
    """Zip a dataset folder the way the real download is zipped."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for f in sorted(Path(dataset_root).rglob("*")):
            if f.is_file():
                z.write(f, f"{top}/{f.relative_to(dataset_root).as_posix()}")
    return path


def wav_bytes(x: np.ndarray, sr: int, subtype: str = "PCM_16", fmt: str = "WAV") -> bytes:
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=fmt, subtype=subtype)
    return buf.getvalue()


def assert_one_line_error(r, *words):
    """A CliRunner result that failed with exactly one error line on stderr, naming `words`, no traceback and
    nothing on stdout."""
    assert r.exit_code not in (0, None), r.output
    assert "Traceback" not in r.output
    assert isinstance(r.exception, SystemExit)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    assert r.stdout == ""


def install(dataset: Path, home: Path) -> None:
    """Make the synthetic `dataset` the installed one in the data dir `home` (a link: tests never change it)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "ESC-50").symlink_to(dataset, target_is_directory=True)


def read_cache(folder, params):
    """The feature cache in `folder` as esc would use it, or None when it is missing or would be rebuilt."""
    from esccli.featurize import CacheProblem, load_cache

    try:
        return load_cache(Path(folder), params)
    except (CacheProblem, FileNotFoundError):
        return None
