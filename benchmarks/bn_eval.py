"""Would recomputing BatchNorm statistics on whole clips help? Stored fold models, scored before and after.

    python benchmarks/bn_eval.py /tmp/esc-bench/models/bench-fast-fold{1,2,3,4,5}.pt

The networks learn on 2 s crops (mixed, masked, filtered) and are scored on whole 5 s clips. For each model this
scores its held-out fold of the shared 16 kHz ESC-50 copy (see common.py) as stored, then again after every
BatchNorm layer's running statistics were recomputed from the four training folds' whole, unaugmented clips (a
plain average over batches of 100). A model whose recipe has test_shifts is scored by its network alone.
Nothing is written: the models on disk are not changed.
"""

import argparse

import numpy as np
import torch
from common import clips, feature_set, fold_model

from esccli.models import apply_net, needs_modulation, without_test_shifts


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, mods=None) -> float:
    model.eval()
    with torch.no_grad():
        return float((apply_net(model, x, mods).argmax(1) == y).float().mean())


def recalibrate(model: torch.nn.Module, x: torch.Tensor, mods=None, batch: int = 100) -> None:
    """Replace the BatchNorm running statistics by those of x (whole clips, in order, no augmentation)."""
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the batches
    model.train()  # BatchNorm updates its statistics; dropout acts after the last one and changes none of them
    with torch.no_grad():
        for i in range(0, len(x), batch):
            apply_net(model, x[i:i + batch], None if mods is None else mods[i:i + batch])
    model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    before, after = [], []
    for p in args.models:
        lm, fold = fold_model(p)
        x, y, folds = clips(lm)
        mods = feature_set(lm).modulation_rows() if needs_modulation(lm.model) else None
        part = lambda held: None if mods is None else mods[held]  # noqa: E731
        held = folds == fold
        net = without_test_shifts(lm.model)  # the network alone, as round 4 measured it
        before.append(accuracy(net, x[held], y[held], part(held)))
        recalibrate(net, x[~held], part(~held))
        after.append(accuracy(net, x[held], y[held], part(held)))
        print(f"{p} (fold {fold}): {before[-1]:.2%} -> recalibrated {after[-1]:.2%}", flush=True)
    print(f"mean: {np.mean(before):.2%} -> {np.mean(after):.2%}")


if __name__ == "__main__":
    main()
