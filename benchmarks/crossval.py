"""The standard ESC-50 protocol for a recipe: train with each fold held out, print accuracy and wall time.

    python benchmarks/crossval.py --preset default              # all five folds, one process per fold
    python benchmarks/crossval.py --preset fast --folds 1 2     # some folds
    python benchmarks/crossval.py --preset default --epochs 10  # a shorter variant (named accordingly)
    python benchmarks/crossval.py --preset default --jobs 2     # two folds at a time, one thread each

Each fold is a separate `esc train --fold K` on the shared 16 kHz ESC-50 copy (see common.py). A fold whose model
exists already is not retrained: its stored accuracy and training time are reported, so an interrupted
benchmark picks up where it stopped. After a fold fails or is interrupted, no other fold starts. Wall time is
the whole `esc train` process (start-up, loading the cached features, training, scoring the fold every
`val_every` epochs, saving). An interrupted fold (a resume file, or some members of an ensemble recipe done) is
resumed, not started over; its wall time then covers only what was left.
"""

import argparse
import json
import os
import subprocess
import sys
import time

from common import BENCH_HOME, epoch_lines, esc, median, peak_rss_gb, prepare, resumable, run_each

from esccli import checkpoint, paths
from esccli.features import PRESETS
from esccli.featurize import load_or_build
from esccli.metrics import mean_std
from esccli.recipes import get_recipe
from esccli.train import pick_device, resolve_precision


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--folds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, help="passed to esc train [default: the cores / --jobs]")
    ap.add_argument("--jobs", type=int, default=1, help="folds trained at the same time, each its own process")
    args = ap.parse_args()
    threads = args.threads or (max(1, (os.cpu_count() or 1) // args.jobs) if args.jobs > 1 else None)
    recipe = get_recipe(args.preset).with_epochs(args.epochs)  # as esc train --epochs makes it
    home = prepare()
    esc("featurize", "--preset", recipe.features)  # outside the timed part
    # the clips and features the folds train on (the cache esc featurize just checked or built)
    features = load_or_build(paths.layout(home), PRESETS[recipe.features])

    tag = f"bench-{args.preset}" + (f"-e{args.epochs}" if args.epochs else "") + (f"-s{args.seed}" if args.seed else "")
    stored = {m["name"]: m for m in json.loads(esc("models", "--json", capture=True).stdout)}
    precision = resolve_precision("auto", pick_device("auto"), recipe.allow_bf16)  # what esc train will use

    def model_meta(name: str) -> dict:
        return checkpoint.read_meta(BENCH_HOME / "models" / f"{name}.pt")

    before_training = peak_rss_gb(children=True)
    results = {}
    todo = []
    for k in args.folds:
        name = f"{tag}-fold{k}"
        # a stored fold model counts only if this very recipe made it, with the same seed and precision, on
        # features with these parameters of these clips (names, classes and folds: another csv trains it again)
        meta = model_meta(name) if name in stored else None
        if meta and stored[name]["val_acc"] is not None and recipe.made(meta["train"], k, args.seed, precision) \
                and features.made(meta):
            results[k] = (stored[name]["val_acc"], None)
            print(f"fold {k}: {results[k][0]:.2%} (stored model {name})", flush=True)
        else:
            todo.append((k, name))

    def run(k: int, name: str) -> None:
        cmd = ["train", "--preset", args.preset, "--fold", str(k), "--name", name, "--seed", str(args.seed), "--json",
               "--force"]
        if args.epochs:
            cmd += ["--epochs", str(args.epochs)]
        if resumable(name):  # an interrupted fold, or ensemble members already trained: keep what is done
            cmd.append("--resume")
        if threads:
            cmd += ["--threads", str(threads)]
        if args.jobs > 1:  # folds side by side: each trains its ensemble members one after the other
            cmd += ["--jobs", "1"]
        t = time.perf_counter()
        out = json.loads(esc(*cmd, capture=True).stdout)
        wall = time.perf_counter() - t
        results[k] = (out["val_acc"], wall)
        members = model_meta(name)["train"].get("members", [])  # an ensemble: each member's own training loop
        loops = " + ".join(f"{m['seconds'] / 60:.1f}" for m in members) if members else f"{out['seconds'] / 60:.1f}"
        print(f"fold {k}: {out['val_acc']:.2%} in {wall / 60:.1f} min wall ({loops} min training loop"
              + (f", {args.jobs} folds at a time" if args.jobs > 1 else "") + ")", flush=True)

    try:
        run_each(run, todo, args.jobs)
    except KeyboardInterrupt:
        print(f"interrupted: finished folds, and each started fold's last finished epoch, are kept in "
              f"{BENCH_HOME}/models; run the same command to resume", file=sys.stderr)
        sys.exit(130)
    except subprocess.CalledProcessError as e:  # esc train's own message, then which fold it was
        if (e.stderr or "").strip():
            print(e.stderr.rstrip()[-2000:], file=sys.stderr)
        sys.exit(f"a fold failed (esc {' '.join(e.cmd[3:])}: exit status {e.returncode}); no fold was started after it")
    mean, std = mean_std([a for a, _ in results.values()])
    walls = [w for _, w in results.values() if w]
    print("per fold: " + ", ".join(f"{k}: {results[k][0]:.2%}" for k in sorted(results)))
    # the epochs of every fold, from the models' own history: what an epoch costs and the data pipeline's share
    for line in epoch_lines([model_meta(f"{tag}-fold{k}") for k in sorted(results)]):
        print(line)
    print(f"{tag}: folds {sorted(results)}: mean {mean:.2%} ± {std:.2%}"
          + (f"; median wall time per fold {median(walls) / 60:.1f} min" if walls else ""))
    if walls:  # the largest process this run trained in (an esc train, or one of its ensemble's members), unless
        # esc fetch, featurize or models, run before them, took more
        peak = peak_rss_gb(children=True)
        print(f"peak memory of the largest training process: {peak:.2f} GB" if peak > before_training else
              f"peak memory of the largest training process: at most {peak:.2f} GB (another esc command's, run before)")
    print(f"(models in {BENCH_HOME}/models)")


if __name__ == "__main__":
    main()
