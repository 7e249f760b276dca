"""`esc predict` speed: cold start on one 5 s clip, and throughput on the 400 clips of fold 1.

    python benchmarks/predict.py [--model builtin|NAME|PATH] [--runs 5]

Cold start is the wall time of a whole `esc predict CLIP --json` process (interpreter start, imports, model
load, decoding, features, forward pass, output), median of --runs. Throughput runs `esc predict` once on a
folder holding the 400 clips of fold 1 (links into the shared copy) and divides by the wall time after
subtracting the median cold start. `esc --version` shows what start-up costs without torch.
"""

import argparse
import tempfile
import time
from pathlib import Path

from common import SHARED, esc, median

from esccli.dataset import read_metadata
from esccli.featurize import audio_paths


def timed(*args: str) -> float:
    t = time.perf_counter()
    esc(*args, capture=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    fold1 = audio_paths(SHARED, [c for c in read_metadata(SHARED) if c.fold == 1])  # as FLAC or under the csv names
    home = Path(tempfile.mkdtemp(prefix="esc-bench-predict-"))

    version = median([timed("--version") for _ in range(args.runs)])
    cold = median([timed("predict", str(fold1[0]), "--model", args.model, "--json") for _ in range(args.runs)])
    print(f"esc --version: {version:.2f} s (median of {args.runs})")
    print(f"esc predict on one clip ({fold1[0].name}), cold: {cold:.2f} s (median of {args.runs})")

    folder = home / "fold1"
    folder.mkdir()
    for p in fold1:
        (folder / p.name).symlink_to(p)
    t = timed("predict", str(folder), "--model", args.model, "--json")
    print(f"esc predict on the {len(fold1)} clips of fold 1: {t:.1f} s wall, "
          f"{len(fold1) / max(1e-9, t - cold):.0f} clips/s after start-up ({len(fold1) / t:.0f} clips/s overall)")


if __name__ == "__main__":
    main()
