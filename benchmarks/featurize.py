"""Cold-cache featurizing of all 2000 ESC-50 clips (target: under 30 s wall on 2 cores).

    python benchmarks/featurize.py [--runs 3] [--archive]

With --archive, the dataset is installed the way a user gets it: a zip built by
../shared/tools/make-esc50-archive (16 kHz WAV, always from the shared copy) and `esc fetch --from` it. Each run
deletes the feature cache first and times the whole `esc featurize` process; the median is printed.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCH_HOME, REPO, esc, median, prepare

from esccli.fetch import read_marker


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--archive", action="store_true")
    ap.add_argument("--preset", default="default")
    args = ap.parse_args()
    home = BENCH_HOME
    if args.archive:
        home = Path(tempfile.mkdtemp(prefix="esc-bench-archive-"))
        zip_path = home / "ESC-50-master.zip"
        subprocess.run([sys.executable, str(REPO.parent / "shared" / "tools" / "make-esc50-archive"), str(zip_path)], check=True)
        esc("fetch", "--from", str(zip_path), home=home)
    else:
        prepare(home)
    times = []
    for _ in range(args.runs):
        shutil.rmtree(home / "features", ignore_errors=True)
        t = time.perf_counter()
        esc("featurize", "--preset", args.preset, home=home, capture=True)
        times.append(time.perf_counter() - t)
        print(f"run: {times[-1]:.1f} s", flush=True)
    clips = (read_marker(home / "ESC-50") or {}).get("clips", "?")
    print(f"featurize --preset {args.preset}, {clips} clips, cold cache: median {median(times):.1f} s over "
          f"{len(times)} runs (min {min(times):.1f}, max {max(times):.1f})")
    if args.archive:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
