"""Would averaging these models pay? Stored models with the same held-out fold, scored alone and averaged.

    python benchmarks/pair_eval.py /tmp/esc-bench/models/bench-default-fold1.pt /tmp/esc-bench/ablation/R3a.pt

Feeds each model its held-out fold of the shared 16 kHz ESC-50 copy (see common.py) and prints each model's
accuracy, how often each pair agrees, and the accuracy of their mean probability (what an `ensemble` model with
the arithmetic mean predicts, esccli/models.py), then how many clips every model misses and how many at least one gets right (the
most that choosing, clip by clip, one of these models' answers could score). Each model is scored as it predicts:
with its recipe's test_shifts, if any. With --classes, the clips every model misses are also counted by their
class, each with the (wrong) classes the models answered for them, most often first.
"""

import argparse
import itertools
from collections import Counter

import torch
from common import fold_model, held_out, held_out_modulation

from esccli.classes import CLASS_NAMES
from esccli.models import apply_net


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--classes", action="store_true", help="count the clips every model misses by class")
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
            probs.append(apply_net(lm.model, x, held_out_modulation(lm, fold)).softmax(-1))
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
    if args.classes:
        print_missed_by_class(y, torch.stack([p.argmax(1) for p in probs]), ~right.any(0))


def print_missed_by_class(targets, answers, missed, top: int = 3) -> None:
    """One line per class with clips that every model missed, most missed first (then in class order): how many of
    the class's clips, and the (wrong) classes the models answered for them, most often first (ties in class
    order), up to `top` of them, with how many of the models' answers each was."""
    missed_clips: Counter = Counter()
    answered: dict[int, Counter] = {}
    for clip in missed.nonzero().flatten().tolist():
        t = int(targets[clip])
        missed_clips[t] += 1
        answered.setdefault(t, Counter()).update(answers[:, clip].tolist())
    totals = Counter(targets.tolist())
    for t, n in sorted(missed_clips.items(), key=lambda kv: (-kv[1], kv[0])):
        ranked = sorted(answered[t].items(), key=lambda kv: (-kv[1], kv[0]))
        shown = ", ".join(f"{CLASS_NAMES[g]} {k}" for g, k in ranked[:top]) + (", …" if len(ranked) > top else "")
        print(f"  {CLASS_NAMES[t]}: {n} of {totals[t]} missed by every model; "
              f"answered {shown} (of {len(answers) * n} answers)")


if __name__ == "__main__":
    main()
