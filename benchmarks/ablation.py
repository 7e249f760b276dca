"""One fold of one recipe variant: the runner behind the rows of docs/ablation.md.

    python benchmarks/ablation.py --preset default --fold 1 --set epochs=30 --set mixup_alpha=0.2
    python benchmarks/ablation.py --set 'arch_args={"channels": [32, 64, 128, 256]}' --threads 1
    python benchmarks/ablation.py --feature n_mels=128 --set 'arch_args={"stem_pool": [4, 2]}'
    python benchmarks/ablation.py --jobs 2 --set 'arch_args={"stem_order": "relu-pool-bn"}'  # members side by side

Each --set overrides one field of the recipe (esccli/recipes.py); the value is read as JSON when it parses,
else as a string. It sets that field alone: `--set epochs=N` leaves a texture member's own epochs as they are,
where `esc train --epochs N` (and crossval.py --epochs) shortens them too (Recipe.with_epochs). Each --feature overrides one feature parameter of the recipe's feature preset
(esccli/features.py) the same way. Trains on the shared 16 kHz ESC-50 copy with `fold` held out, and prints the
held-out accuracy of the final epoch (no epoch picking) and the wall time of the training loop. The model is
written to BENCH_HOME/ablation/ and is not part of the `esc models` list.
"""

import argparse
import dataclasses
import json
import time

from common import BENCH_HOME, parse_set, peak_rss_gb, prepare

from esccli import paths
from esccli.featurize import load_or_build
from esccli.features import PRESETS
from esccli.recipes import get_recipe
from esccli.train import set_threads, train


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--fold", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--feature", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--threads", type=int, help="threads per training process [default: the cores / --jobs]")
    ap.add_argument("--jobs", type=int, default=1,
                    help="an ensemble's members trained side by side, each in its own process, as esc train does "
                         "(--jobs 2 for the default on two cores) [default: 1, one after the other]")
    ap.add_argument("--name", help="name of the run (default: made from the overrides)")
    args = ap.parse_args()
    overrides = dict(parse_set(s) for s in args.set)
    recipe = get_recipe(args.preset).with_overrides(**overrides)
    member_jobs = min(recipe.members, args.jobs)
    set_threads(member_jobs, args.threads)
    layout = paths.layout(prepare())
    feature_overrides = dict(parse_set(s) for s in args.feature)
    fs = load_or_build(layout, dataclasses.replace(PRESETS[recipe.features], **feature_overrides).validate())
    name = args.name or "-".join([args.preset, f"f{args.fold}", f"s{args.seed}"] +
                                 [f"{k}={json.dumps(v, separators=(',', ':'))}"
                                  for k, v in {**feature_overrides, **overrides}.items()])
    out = BENCH_HOME / "ablation" / (name.replace("/", "_")[:200] + ".pt")
    out.parent.mkdir(parents=True, exist_ok=True)

    def on_epoch(s):
        if s.val_acc is not None:  # the epochs the recipe validates (val_every)
            print(f"  {name} epoch {s.epoch}/{s.epochs}: loss {s.train_loss:.3f} acc {s.val_acc:.2%} "
                  f"{s.seconds:.1f} s (data {s.data_seconds:.1f} s)", flush=True)

    t = time.perf_counter()
    result = train(fs, recipe, out, fold=args.fold, seed=args.seed, on_epoch=on_epoch,
                   member_jobs=member_jobs, member_threads=args.threads)
    wall = time.perf_counter() - t
    acc = result.meta["train"]["metrics"]["val_acc"]  # an ensemble's, not its last member's
    last_step = result.meta["train"]["metrics"].get("last_step_val_acc")  # with ema_decay: without the average
    # peak memory: this process (a single network's training, or with --jobs > 1 the one that starts the members),
    # and the largest child process (an ensemble's member, or esc fetch when prepare() installed the data)
    memory = {"peak_gb": round(peak_rss_gb(), 2)} | ({"peak_member_gb": round(peak_rss_gb(children=True), 2)}
                                                     if member_jobs > 1 else {})
    print(json.dumps({"name": name, "fold": args.fold, "val_acc": acc, "minutes": round(wall / 60, 2), **memory,
                      **({"last_step_val_acc": last_step} if last_step is not None else {}),
                      "parameters": result.meta["train"]["parameters"], "overrides": overrides, "features": feature_overrides}), flush=True)


if __name__ == "__main__":
    main()
