"""Does test-time averaging over windows beat classifying the whole clip? One stored model, its held-out fold.

    python benchmarks/window_eval.py /tmp/esc-bench/models/bench-default-fold1.pt

Feeds the model the fold's cached features (the shared 16 kHz ESC-50 copy, see common.py) whole, and in
windows of W frames every H frames, combined by mean probability, by loudness-weighted mean probability, and
by mean probability plus the whole clip's. Prints one accuracy per way. A model with test_shifts is scored as it
predicts, each window averaged over its shifted copies too.
"""

import argparse

import torch
from common import held_out

from esccli import checkpoint
from esccli.models import needs_modulation


def accuracy(probs: torch.Tensor, y: torch.Tensor) -> float:
    return float((probs.argmax(1) == y).float().mean())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    lm = checkpoint.load(args.model)
    if needs_modulation(lm.model):
        raise SystemExit(f"{args.model} hears each whole clip's modulation statistics: its windows cannot be scored apart")
    fold = lm.meta["train"]["fold"]
    if fold is None:
        raise SystemExit("this model was trained on every fold: there is nothing held out to score")
    x, y = held_out(lm, fold)
    frames = x.shape[-1]
    with torch.no_grad():
        whole = lm.model(x).softmax(-1)
        print(f"fold {fold}, {len(y)} clips: whole clip {accuracy(whole, y):.2%}")
        for w, h in [(100, 25), (100, 50), (150, 25), (150, 50)]:
            starts = range(0, frames - w + 1, h)
            probs = torch.stack([lm.model(x[..., s:s + w]).softmax(-1) for s in starts], 1)  # [clips, windows, classes]
            loud = torch.stack([x[..., s:s + w].mean(dim=(1, 2, 3)) + 1.0 for s in starts], 1).clamp_min(1e-6)
            weighted = (probs * (loud / loud.sum(1, keepdim=True))[..., None]).sum(1)
            print(f"windows {w}/{h}: mean {accuracy(probs.mean(1), y):.2%}, loudness-weighted {accuracy(weighted, y):.2%}, "
                  f"mean + whole {accuracy(probs.mean(1) + whole, y):.2%}")


if __name__ == "__main__":
    main()
