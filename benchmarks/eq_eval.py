"""Would averaging over copies passed through random filters pay at test time? Fold models scored with and without.

    python benchmarks/eq_eval.py                          # the default's fold models, bench-default-fold1..5
    python benchmarks/eq_eval.py --name bench-fast        # the fast preset's (with its recipe's test shifts, if any)
    python benchmarks/eq_eval.py /tmp/esc-bench/ablation/run-f{1,2,3,4,5}.pt  # any fold models

Feeds each fold model (BENCH_HOME/models/NAME-foldK.pt, as `python benchmarks/crossval.py` leaves them, or the
files given) its held-out fold of the shared 16 kHz ESC-50 copy as it is, and also through random filters as
training draws them (augment.random_curve and apply_curve, as random_eq does, at the recipe's eq_db unless --db is
given; the filters are drawn with a fixed seed, so every model sees the same ones), and prints the accuracy of the mean probability over each set of
copies, per fold and over the five. "±K" pairs each of K filters with its mirror image (the gains negated), so the
copies' colourings average to none. The model is scored as `esc eval` scores it (an ensemble's mean, a recipe's
test shifts included).
"""

import argparse

import torch
from common import fold_model_options, held_out_fold_models, print_accuracies

from esccli.augment import apply_curve, random_curve
from esccli.models import apply_net

SETS = ("none", "2", "4", "8", "±2", "±4")


def main() -> None:
    ap = argparse.ArgumentParser()
    fold_model_options(ap)
    ap.add_argument("--db", type=float, help="the filters' range, ± dB [default: the model's recipe's eq_db]")
    args = ap.parse_args()
    accs = {name: [] for name in SETS}
    for lm, k, x, y, mods in held_out_fold_models(args):
        db = args.db if args.db is not None else lm.meta["train"]["recipe"]["eq_db"]
        g = torch.Generator().manual_seed(0)
        curves = [random_curve(1, x.shape[2], db, 4, g) for _ in range(8)]
        model = lm.model.eval()

        def probs(x_):
            with torch.no_grad():
                return torch.cat([apply_net(model, x_[i:i + 100], None if mods is None else mods[i:i + 100]).softmax(-1)
                                  for i in range(0, len(x_), 100)])

        plain = probs(x)
        up = [probs(apply_curve(x, c, lm.params.top_db)) for c in curves]
        down = [probs(apply_curve(x, -c, lm.params.top_db)) for c in curves[:4]]
        views = {"none": [plain], "2": [plain] + up[:2], "4": [plain] + up[:4], "8": [plain] + up,
                 "±2": [plain] + up[:2] + down[:2], "±4": [plain] + up[:4] + down[:4]}
        for name in SETS:
            accs[name].append(float((sum(views[name]).argmax(1) == y).float().mean()))
        print(f"fold {k}: " + "  ".join(f"{name} {accs[name][-1]:.2%}" for name in SETS), flush=True)
    print_accuracies(accs)


if __name__ == "__main__":
    main()
