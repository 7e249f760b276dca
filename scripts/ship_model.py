"""Build the model that ships inside esc (esccli/assets/esc-default.pt).

    python scripts/ship_model.py [--preset default] [--seed 0]

1. trains the recipe on all 2000 clips of the shared 16 kHz ESC-50 copy (`esc train --all`), in the benchmark
   data dir (see benchmarks/common.py);
2. reads the 5-fold cross-validation of the same recipe and seed from the fold models that
   `python benchmarks/crossval.py --preset P` left there (it refuses to ship without all five, and refuses fold
   or final models that today's recipe, seed and precision did not make, or made on other features);
3. writes the model with that cross-validation, the date and the commands into its metadata, without the
   optimizer state, its floating-point weights stored as float16 (half the size; loading copies them into the
   network's float32 weights), to esccli/assets/esc-default.pt (atomically). Before it does, it scores all 2000
   clips with the weights as trained and as stored, refuses if any clip's top class changes, and records the largest
   change of a probability in the metadata (`float16_check`).
"""

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from common import BENCH_HOME, esc, prepare, resumable  # noqa: E402

from esccli import checkpoint  # noqa: E402
from esccli.metrics import mean_std  # noqa: E402
from esccli.recipes import get_recipe  # noqa: E402
from esccli.store import BUILTIN_PATH  # noqa: E402
from esccli.train import pick_device, resolve_precision  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="default")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    prepare()
    tag = f"bench-{args.preset}" + (f"-s{args.seed}" if args.seed else "")
    models = BENCH_HOME / "models"
    recipe = get_recipe(args.preset)
    precision = resolve_precision("auto", pick_device("auto"), recipe.allow_bf16)  # what esc train will use

    def made_here(p: Path, fold: int | None) -> bool:
        """Whether the model at p was made by today's recipe with this fold, seed and precision."""
        return p.is_file() and recipe.made(checkpoint.read_meta(p)["train"], fold, args.seed, precision)

    folds = {}
    for k in range(1, 6):
        p = models / f"{tag}-fold{k}.pt"
        if not made_here(p, k):
            sys.exit(f"no fold-{k} model of today's {args.preset} recipe at {p}: "
                     f"run `python benchmarks/crossval.py --preset {args.preset}` first")
        folds[k] = checkpoint.read_meta(p)["train"]["metrics"]["val_acc"]
    mean, std = mean_std(list(folds.values()))

    name = f"ship-{args.preset}-all"
    final = models / f"{name}.pt"
    if not made_here(final, None):  # absent, or made by another recipe: (re)train it
        esc("train", "--preset", args.preset, "--all", "--seed", str(args.seed), "--name", name, "--force",
            *(["--resume"] if resumable(name) else []))
    if not made_here(final, None):
        sys.exit(f"{final} was not made by today's {args.preset} recipe with seed {args.seed} in {precision}")
    blob = checkpoint.read(final)
    if any(checkpoint.read_meta(models / f"{tag}-fold{k}.pt")["features"] != blob["features"] for k in folds):
        sys.exit(f"the fold models and {final} were trained on different features: their figures would not apply")
    meta = {k: v for k, v in blob.items() if k not in ("state_dict", "optimizer", "state_sha256", "format",
                                                       "format_version", "esc_version")}
    meta["name"] = f"esc-{args.preset}"
    meta["train"]["cross_validation"] = {
        "folds": {str(k): v for k, v in folds.items()}, "mean": mean, "std": std,
        "command": f"python benchmarks/crossval.py --preset {args.preset}",
        "note": "5-fold accuracy of this recipe and seed; this model itself is trained on all 2000 clips",
    }
    meta["train"]["command"] = f"python scripts/ship_model.py --preset {args.preset} --seed {args.seed}"
    meta["license"] = "CC BY-NC 3.0 (trained on ESC-50, K. J. Piczak): non-commercial use only"
    stored = half(blob["state_dict"])
    meta["train"]["float16_check"] = float16_check(final, stored)
    checkpoint.save(BUILTIN_PATH, meta, stored)
    print(json.dumps({"path": str(BUILTIN_PATH), "bytes": BUILTIN_PATH.stat().st_size, "cv_mean": mean, "cv_std": std,
                      "folds": folds}, indent=2))


def float16_check(path: Path, stored: dict) -> dict:
    """The model at `path` scored on every clip with its own weights and with `stored` (float16): exits if a top class
    changes; else how many clips, and the largest change of a class probability."""
    import torch

    from esccli.featurize import load_or_build
    from esccli.models import needs_modulation, without_test_shifts
    from esccli.paths import layout
    from esccli.train import predict_logits

    lm = checkpoint.load(path)
    fs = load_or_build(layout(BENCH_HOME), lm.params)
    x = torch.from_numpy(fs.features).float().unsqueeze(1)
    mods = fs.modulation_rows() if needs_modulation(lm.model) else None
    before = predict_logits(lm.model, x, "cpu", modulation=mods).softmax(-1)
    without_test_shifts(lm.model).load_state_dict(stored)  # copied into its float32 weights, as loading the file does
    after = predict_logits(lm.model, x, "cpu", modulation=mods).softmax(-1)
    changed = int((before.argmax(1) != after.argmax(1)).sum())
    if changed:
        sys.exit(f"with its weights stored as float16, {changed} of {len(x)} clips change their top class")
    return {"clips": len(x), "top_class_changed": 0, "max_probability_change": float((before - after).abs().max())}


def half(state_dict: dict) -> dict:
    """The weights with every floating-point tensor stored as float16 (counts stay integers). Refused if one would
    not fit (float16 overflows at 65504) or would move by more than float16's rounding."""
    import torch

    out = {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}
    for k, v in state_dict.items():
        if v.is_floating_point() and not torch.allclose(out[k].float(), v.float(), rtol=1e-3, atol=1e-6):
            sys.exit(f"{k} does not fit float16: ship it as it is")
    return out


if __name__ == "__main__":
    main()
