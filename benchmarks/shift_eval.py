"""Would averaging over pitch-shifted copies pay at test time? Fold models scored with and without it.

    python benchmarks/shift_eval.py                     # the default's fold models, bench-default-fold1..5
    python benchmarks/shift_eval.py --name bench-fast   # the fast preset's
    python benchmarks/shift_eval.py /tmp/esc-bench/ablation/run-f{1,2,3,4,5}.pt  # any fold models

Feeds each fold model (BENCH_HOME/models/NAME-foldK.pt, as `python benchmarks/crossval.py` leaves them, or the
files given) its held-out fold of the shared 16 kHz ESC-50 copy, also moved up and down the mel axis by whole
bins (augment.shift_mel: the bins left empty set to the clip's floor, as in training), and prints the accuracy of
the mean probability over each set of shifts, per fold and over the five. A model whose recipe has test_shifts is
scored by its network alone, as if it had none.
"""

import argparse

import torch
from common import fold_model_options, held_out_fold_models, print_accuracies

from esccli.augment import shift_mel
from esccli.models import apply_net, without_test_shifts

SHIFT_SETS = {"none": [0], "±1": [-1, 0, 1], "±2": [-2, -1, 0, 1, 2], "±3": list(range(-3, 4)), "-2, 0, 2": [-2, 0, 2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    fold_model_options(ap)
    args = ap.parse_args()
    accs = {name: [] for name in SHIFT_SETS}
    for lm, k, x, y, mods in held_out_fold_models(args):
        net = without_test_shifts(lm.model)  # the network alone, also for a model that averages over shifts
        with torch.no_grad():
            probs = {b: apply_net(net, shift_mel(x, torch.full((len(x),), b)), mods).softmax(-1) for b in range(-3, 4)}
        for name, bins in SHIFT_SETS.items():
            accs[name].append(float((sum(probs[b] for b in bins).argmax(1) == y).float().mean()))
    print_accuracies(accs)


if __name__ == "__main__":
    main()
