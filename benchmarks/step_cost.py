"""What a training step of the default network costs in each CPU variant: fp32, channels_last, bf16 autocast, both.

    python benchmarks/step_cost.py [--steps 10] [--threads N] [--frames 100]

Builds the default recipe's network and times optimisation steps (batch of the recipe, random inputs of
n_mels x --frames, the shape of a training crop) for each variant, interleaved round by round so that a
machine that gets busier or quieter affects all variants alike. Prints the median milliseconds per training
clip and the ratio to fp32. Needs no dataset.
"""

import argparse
import time

import torch
import torch.nn.functional as F

from common import median

from esccli.features import PRESETS
from esccli.models import ModelConfig, build_model, count_parameters
from esccli.recipes import get_recipe
from esccli.train import autocast, make_optimizer

VARIANTS = ("fp32", "channels_last", "bf16", "bf16+channels_last")


def make(variant: str, recipe, n_mels: int, frames: int):
    torch.manual_seed(0)
    model = build_model(ModelConfig(recipe.arch, 50, n_mels, frames, dict(recipe.arch_args))).train()
    if "channels_last" in variant:
        model = model.to(memory_format=torch.channels_last)
    return model, make_optimizer(recipe, model)


def step(variant: str, model, opt, x, y) -> float:
    if "channels_last" in variant:
        x = x.contiguous(memory_format=torch.channels_last)
    t = time.perf_counter()
    with autocast("cpu", "bf16" if "bf16" in variant else "fp32"):
        logits = model(x).float()
    loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--frames", type=int, default=0, help="input frames [default: the recipe's crop]")
    ap.add_argument("--preset", default="default")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.preset)
    params = PRESETS[recipe.features]
    frames = args.frames or recipe.crop_frames or params.frames
    g = torch.Generator().manual_seed(0)
    x = torch.randn(recipe.batch_size, 1, params.n_mels, frames, generator=g)
    y = torch.randint(0, 50, (recipe.batch_size,), generator=g)
    runs = {v: make(v, recipe, params.n_mels, frames) for v in VARIANTS}
    times = {v: [] for v in VARIANTS}
    for v in VARIANTS:  # warm-up (first-call allocations, oneDNN kernel choice)
        step(v, *runs[v], x, y)
    for _ in range(args.steps):
        for v in VARIANTS:
            times[v].append(step(v, *runs[v], x, y))
    model = runs["fp32"][0]
    print(f"{recipe.arch} ({count_parameters(model) / 1e6:.2f} M parameters), batch {recipe.batch_size} of "
          f"{params.n_mels}x{frames}, {torch.get_num_threads()} threads, median of {args.steps} steps")
    base = median(times["fp32"])
    for v in VARIANTS:
        m = median(times[v])
        print(f"{v:>19}: {m / recipe.batch_size * 1000:6.1f} ms per clip  ({m / base:.2f}x fp32)")


if __name__ == "__main__":
    main()
