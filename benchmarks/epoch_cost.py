"""What an epoch of a recipe is made of: the training steps, and scoring the held-out fold.

    python benchmarks/epoch_cost.py [--preset default] [--rounds 3] [--threads N]
    python benchmarks/epoch_cost.py --preset fast --threads 2 --eval-batch 8 --eval-batch 16 --eval-batch 64

Builds the recipe's network and times, round by round, one epoch of training steps (1600 clips of ESC-50's four
training folds, in batches of the recipe, random inputs the shape of a training crop, in the precision
`--precision auto` picks here) and one validation as `esc train` does it (400 whole clips, fp32, in eval mode,
over the recipe's test shifts, in batches of train.EVAL_BATCH clips, or of each --eval-batch). Prints the medians
and the share of an epoch that scoring the fold after every epoch would take (the reason recipes score it every
`val_every` epochs). Like `esc train`, the process keeps the memory it frees (esccli/memory.py), unless
--give-back-memory. Needs no dataset.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from common import median, memory_option, set_memory

from esccli.features import PRESETS
from esccli.models import ModelConfig, build_model, with_test_shifts
from esccli.recipes import get_recipe
from esccli.train import EVAL_BATCH, autocast, make_optimizer, predict_logits, resolve_precision

TRAIN_CLIPS, VAL_CLIPS = 1600, 400


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--eval-batch", type=int, action="append", metavar="CLIPS",
                    help=f"time validation in batches of this many clips [default: {EVAL_BATCH}]")
    memory_option(ap)
    args = ap.parse_args()
    malloc = set_memory(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.preset).member(0)  # an ensemble's networks are trained (and timed) one by one
    params = PRESETS[recipe.features]
    batches = args.eval_batch or [EVAL_BATCH]
    precision = resolve_precision("auto", "cpu", recipe.allow_bf16)
    torch.manual_seed(0)
    model = build_model(ModelConfig(recipe.arch, 50, params.n_mels, params.frames, dict(recipe.arch_args)))
    model = model.to(memory_format=torch.channels_last)
    opt = make_optimizer(recipe, model)
    x_val = torch.rand(VAL_CLIPS, 1, params.n_mels, params.frames) * 2 - 1

    def train_epoch() -> float:
        model.train()
        t = time.perf_counter()
        for _ in range(TRAIN_CLIPS // recipe.batch_size):
            x = (torch.rand(recipe.batch_size, 1, params.n_mels, recipe.crop_frames or params.frames) * 2 - 1)
            x = x.contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, 50, (recipe.batch_size,))
            with autocast("cpu", precision):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - t

    scored = with_test_shifts(model, recipe.test_shifts)

    def validate(batch: int) -> float:
        t = time.perf_counter()
        predict_logits(scored, x_val, "cpu", channels_last=True, batch=batch)
        return time.perf_counter() - t

    train_s, val_s = [], {b: [] for b in batches}
    for r in range(args.rounds):
        train_s.append(train_epoch())
        for b in batches:
            val_s[b].append(validate(b))
        print(f"round {r + 1}: training {train_s[-1]:.2f} s, validation "
              + ", ".join(f"{val_s[b][-1]:.2f} s" + (f" (batches of {b})" if len(batches) > 1 else "") for b in batches),
              flush=True)
    t = median(train_s)
    print(f"{args.preset}: {torch.get_num_threads()} threads, {precision} training, {malloc}: "
          f"epoch of training {t:.2f} s")
    for b in batches:
        v = median(val_s[b])
        print(f"validation in batches of {b} clips: {v:.2f} s ({v / t:.2f} of a training epoch"
              + (f", {v / median(val_s[batches[0]]):.2f}x batches of {batches[0]}" if b != batches[0] else "")
              + f"); scored every epoch, validation is {v / (t + v):.0%} of the time, every {recipe.val_every} "
              f"epochs {v / (recipe.val_every * t + v):.0%}")


if __name__ == "__main__":
    main()
