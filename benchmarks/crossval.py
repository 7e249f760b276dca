"""The standard ESC-50 protocol for a recipe: train with each fold held out, print accuracy and wall time.

    python benchmarks/crossval.py --preset default              # all five folds, one process per fold
    python benchmarks/crossval.py --preset fast --folds 1 2     # some folds
    python benchmarks/crossval.py --preset default --epochs 10  # a shorter variant (named accordingly)

Each fold is a separate `esc train --fold K` on the shared 16 kHz ESC-50 copy (see common.py). A fold whose model
exists already is not retrained: its stored accuracy and training time are reported, so an interrupted
benchmark picks up where it stopped. Wall time is the whole `esc train` process (start-up, loading the
cached features, training, per-epoch validation, saving).
"""

import argparse
import json
import time

from common import BENCH_HOME, esc, prepare

from esccli.metrics import mean_std


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="passed to esc train (e.g. 1 when two benchmarks share 2 cores)")
    args = ap.parse_args()
    prepare()
    esc("featurize", "--preset", "seed" if args.preset == "seed" else "default")  # outside the timed part

    tag = f"bench-{args.preset}" + (f"-e{args.epochs}" if args.epochs else "") + (f"-s{args.seed}" if args.seed else "")
    stored = {m["name"]: m for m in json.loads(esc("models", "--json", capture=True).stdout)}
    results = {}
    for k in args.folds:
        name = f"{tag}-fold{k}"
        if name in stored and stored[name]["val_acc"] is not None:
            results[k] = (stored[name]["val_acc"], None)
            print(f"fold {k}: {results[k][0]:.2%} (stored model {name})", flush=True)
            continue
        cmd = ["train", "--preset", args.preset, "--fold", str(k), "--name", name, "--seed", str(args.seed), "--json"]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        t = time.perf_counter()
        out = json.loads(esc(*cmd, capture=True).stdout)
        wall = time.perf_counter() - t
        results[k] = (out["val_acc"], wall)
        print(f"fold {k}: {out['val_acc']:.2%} in {wall / 60:.1f} min wall ({out['seconds'] / 60:.1f} min training loop)",
              flush=True)
    mean, std = mean_std([a for a, _ in results.values()])
    walls = [w for _, w in results.values() if w]
    print(f"{tag}: folds {sorted(results)}: mean {mean:.2%} ± {std:.2%}"
          + (f"; median wall time per fold {sorted(walls)[len(walls) // 2] / 60:.1f} min" if walls else ""))
    print(f"(models in {BENCH_HOME}/models)")


if __name__ == "__main__":
    main()
