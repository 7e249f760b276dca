"""What one training epoch of the student notebook's CNN (`--arch seed`, its recipe) costs on this machine.

    python benchmarks/seed_cost.py [--batches 20] [--threads N]

Times `--batches` optimisation steps (batch 16, Adam, 44.1 kHz 128 x 431 features) after one warm-up step and
extrapolates to an epoch of 1600 clips (100 steps) and to the recipe's 60 epochs. Prints the median step time.
"""

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F

from common import BENCH_HOME, median, prepare


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--threads", type=int, default=0)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from esccli.features import PRESETS
    from esccli.featurize import load_or_build
    from esccli.models import ModelConfig, build_model, count_parameters
    from esccli.paths import layout
    from esccli.recipes import get_recipe
    from esccli.train import make_optimizer

    fs = load_or_build(layout(prepare()), PRESETS["seed"])
    recipe = get_recipe("seed")
    config = ModelConfig("seed", 50, fs.params.n_mels, fs.params.frames)
    torch.manual_seed(0)
    model = build_model(config).train()
    opt = make_optimizer(recipe, model)
    x = torch.from_numpy(fs.features[: recipe.batch_size * (args.batches + 1)].astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(fs.targets[: recipe.batch_size * (args.batches + 1)])
    times = []
    for i in range(args.batches + 1):
        xb, yb = x[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]
        t = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:
            times.append(time.perf_counter() - t)
    step = median(times)
    steps_per_epoch = 1600 // recipe.batch_size
    print(f"seed CNN: {count_parameters(model) / 1e6:.1f} M parameters, input {fs.params.n_mels}x{fs.params.frames}, "
          f"{torch.get_num_threads()} threads")
    print(f"median step (batch {recipe.batch_size}) over {len(times)} steps: {step:.2f} s "
          f"(min {min(times):.2f}, max {max(times):.2f})")
    print(f"=> {step * steps_per_epoch / 60:.1f} min per epoch of 1600 clips, "
          f"{step * steps_per_epoch * recipe.epochs / 3600:.1f} h for the recipe's {recipe.epochs} epochs "
          f"(plus validation)")


if __name__ == "__main__":
    main()
