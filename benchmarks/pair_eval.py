"""Would averaging these models pay? Stored models with the same held-out fold, scored alone and averaged.

    python benchmarks/pair_eval.py /tmp/esc-bench/models/bench-default-fold1.pt /tmp/esc-bench/ablation/R3a.pt

Feeds each model its held-out fold of the shared 16 kHz ESC-50 copy (see common.py) and prints each model's
accuracy, how often each pair agrees, and the accuracy of their mean probability (what an `ensemble` model
predicts, esccli/models.py), then how many clips every model misses and how many at least one gets right (the
most that choosing, clip by clip, one of these models' answers could score). Each model is scored as it predicts:
with its recipe's test_shifts, if any.
"""

import argparse
import itertools

import torch
from common import fold_model, held_out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    probs, folds = [], set()
    for p in args.models:
        lm, fold = fold_model(p)
        folds.add(fold)
        if len(folds) > 1:
            raise SystemExit(f"the models hold out different folds ({sorted(folds)}): nothing to average")
        x, y = held_out(lm, fold)
        with torch.no_grad():
            probs.append(lm.model(x).softmax(-1))
        print(f"{p}: {float((probs[-1].argmax(1) == y).float().mean()):.2%}")
    for (i, a), (j, b) in itertools.combinations(enumerate(probs), 2):
        agree = float((a.argmax(1) == b.argmax(1)).float().mean())
        both = float(((a + b).argmax(1) == y).float().mean())
        print(f"models {i + 1} and {j + 1}: agree on {agree:.2%} of the clips; averaged {both:.2%}")
    if len(probs) > 2:
        print(f"all {len(probs)} averaged: {float((sum(probs).argmax(1) == y).float().mean()):.2%}")
    right = torch.stack([p.argmax(1) == y for p in probs])  # [models, clips]
    print(f"missed by every model: {float((~right.any(0)).float().mean()):.2%} of the clips; "
          f"right by at least one: {float(right.any(0).float().mean()):.2%}")


if __name__ == "__main__":
    main()
