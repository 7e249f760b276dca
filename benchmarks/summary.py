"""What stored fold models scored and cost, from their own metadata: no training, no scoring.

    python benchmarks/summary.py /tmp/esc-bench/ablation/default-e130-f{1,2,3,4,5}.pt
    python benchmarks/summary.py /tmp/esc-bench/models/bench-default-fold{1,2,3,4,5}.pt

For each model: its held-out fold, the final epoch's accuracy there, the wall time of its training call
(`wall_seconds`, recorded by ensembles) and each training loop (an ensemble's members), and its median epoch; then
the mean ± std over the models, the median wall time, and the epoch line of crossval.py over all their epochs (one
per architecture, for ensembles of members of several).
"""

import argparse

from common import epoch_lines, epochs_by_arch, median

from esccli import checkpoint
from esccli.metrics import mean_std


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    args = ap.parse_args()
    accs, walls, metas = [], [], []
    for path in args.models:
        metas.append(checkpoint.read_meta(path))
        train, by_arch = metas[-1]["train"], epochs_by_arch(metas[-1])
        acc, wall = train["metrics"]["val_acc"], train.get("wall_seconds")
        loops = [m["seconds"] for m in train.get("members", [])] or [train["seconds"]]
        accs.append(acc)
        walls += [wall] if wall else []
        print(f"{path}: fold {train['fold']}: {acc:.2%}"
              + (f", {wall / 60:.2f} min wall" if wall else "")
              + f", loops {' + '.join(f'{s / 60:.2f}' for s in loops)} min"
              + ", epoch median " + ", ".join(f"{median([e['seconds'] for e in eps]):.2f} s"
                                              + (f" ({arch})" if len(by_arch) > 1 else "") for arch, eps in by_arch.items()))
    mean, std = mean_std(accs)
    spread = f" ({min(walls) / 60:.2f}-{max(walls) / 60:.2f})" if walls else ""
    print(f"{len(accs)} models: mean {mean:.2%} ± {std:.2%}"
          + (f"; median wall {median(walls) / 60:.2f} min{spread}" if walls else ""))
    for line in epoch_lines(metas):
        print(line)


if __name__ == "__main__":
    main()
