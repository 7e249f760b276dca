"""What a training step of a recipe's network costs: in each CPU variant (fp32, channels_last, bf16 autocast,
both), or, with --variant, in variants of the recipe itself.

    python benchmarks/step_cost.py [--preset fast] [--steps 10] [--threads N] [--frames 100]
    python benchmarks/step_cost.py --preset fast --variant crop60:crop_frames=60 \\
        --variant 'pool:arch_args={"stem_pool":[2,4]}' --variant batch64:batch_size=64
    python benchmarks/step_cost.py --preset fast --variant 'old:arch_args={}' --profile
    python benchmarks/step_cost.py --preset fast --give-back-memory   # malloc as it is, not as esc train sets it

Builds the recipe's network and times optimisation steps (a batch of the recipe, random inputs of n_mels x
--frames, the shape of a training crop) for each variant, interleaved round by round so that a machine that gets
busier or quieter affects all variants alike. Prints the median milliseconds per training clip and the ratio to
the first variant, and (with --variant) the multiply-adds of one clip's forward pass through the convolutions and
linear layers. --profile then profiles 10 steps of each variant (torch.profiler) and prints the share of the
step's CPU time of its costliest operators. Each --variant NAME:FIELD=VALUE overrides one recipe field (the value
read as JSON when it parses) in the variant NAME; repeat NAME to override several. Recipe variants run in
--precision (default fp32), with the recipe's channels_last, on inputs of their own crop_frames and batch_size.
Like `esc train`, it first makes the process keep the memory it frees (esccli/memory.py), unless
--give-back-memory; it prints the page faults and the system (kernel) time per step either way. Needs no dataset.
"""

import argparse
import resource
import time

import torch
import torch.nn.functional as F

from common import median, memory_option, parse_set, set_memory

from esccli.features import PRESETS
from esccli.models import ModelConfig, build_model, count_parameters
from esccli.recipes import get_recipe
from esccli.train import autocast, make_optimizer

PRECISIONS = ("fp32", "channels_last", "bf16", "bf16+channels_last")


class Run:
    """One variant: a network, its optimizer and a batch of random inputs, stepped in one precision and layout."""

    def __init__(self, recipe, n_mels: int, frames: int, precision: str, channels_last: bool):
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(recipe.arch, 50, n_mels, frames, dict(recipe.arch_args))).train()
        self.precision, self.channels_last, self.batch = precision, channels_last, recipe.batch_size
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(self.batch, 1, n_mels, frames, generator=g)
        self.y = torch.randint(0, 50, (self.batch,), generator=g)
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = make_optimizer(recipe, self.model)

    def step(self) -> float:
        t = time.perf_counter()
        with autocast("cpu", self.precision):
            logits = self.model(self.x).float()
        loss = F.cross_entropy(logits, self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t


def multiply_adds(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Multiply-adds of one clip's forward pass through the convolutions and linear layers of the model."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        w = module.weight
        per_output = w[0].numel() if isinstance(module, torch.nn.Conv2d) else w.shape[1]  # in/groups x kernel
        total += output[:1].numel() * per_output

    layers = [m for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    hooks = [m.register_forward_hook(count) for m in layers]
    try:
        with torch.no_grad():
            model(x[:1])
    finally:
        for h in hooks:
            h.remove()
    return total


def profile_shares(run: Run, steps: int = 10, top: int = 6) -> str:
    """The share of `steps` steps' CPU time taken by each of the costliest operators."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as p:
        for _ in range(steps):
            run.step()
    ops = sorted(p.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops)
    return ", ".join(f"{e.key.removeprefix('aten::')} {e.self_cpu_time_total / total:.0%}" for e in ops[:top]) + \
        f" (summed CPU time {total / 1000 / steps:.0f} ms per step)"


def variants(recipe, n_mels: int, frames: int, named: list[str], precision: str) -> dict[str, Run]:
    """The precision variants of the recipe, or (given NAME:FIELD=VALUE items) the recipe and its named variants."""
    if not named:
        return {v: Run(recipe, n_mels, frames, "bf16" if "bf16" in v else "fp32", "channels_last" in v)
                for v in PRECISIONS}
    overrides: dict[str, dict] = {}
    for item in named:
        name, sep, setting = item.partition(":")
        if not sep or "=" not in setting:
            raise SystemExit(f"--variant wants NAME:FIELD=VALUE, not {item!r}")
        overrides.setdefault(name, {}).update([parse_set(setting)])
    recipes = {"recipe": recipe, **{n: recipe.with_overrides(**o) for n, o in overrides.items()}}
    return {n: Run(r, n_mels, r.crop_frames or frames, precision, r.channels_last) for n, r in recipes.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--frames", type=int, default=0, help="input frames [default: the recipe's crop]")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:FIELD=VALUE")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="of recipe variants")
    ap.add_argument("--profile", action="store_true", help="then profile 10 steps of each variant")
    memory_option(ap)
    args = ap.parse_args()
    malloc = set_memory(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = get_recipe(args.preset)
    params = PRESETS[recipe.features]
    frames = args.frames or recipe.crop_frames or params.frames
    runs = variants(recipe, params.n_mels, frames, args.variant, args.precision)
    times = {v: [] for v in runs}
    for run in runs.values():  # warm-up (first-call allocations, oneDNN kernel choice)
        run.step()
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(args.steps):
        for v, run in runs.items():
            times[v].append(run.step())
    after = resource.getrusage(resource.RUSAGE_SELF)
    steps = args.steps * len(runs)
    first = next(iter(runs))
    print(f"{recipe.arch} ({count_parameters(runs[first].model) / 1e6:.2f} M parameters), batch {recipe.batch_size} "
          f"of {params.n_mels}x{frames}, {torch.get_num_threads()} threads, median of {args.steps} steps")
    base = median(times[first]) / runs[first].batch
    for v, run in runs.items():
        per_clip = median(times[v]) / run.batch
        print(f"{v:>19}: {per_clip * 1000:6.1f} ms per clip  ({per_clip / base:.2f}x {first})"
              + (f"  [{count_parameters(run.model) / 1e6:.2f} M, batch {run.batch} of {params.n_mels}x"
                 f"{run.x.shape[-1]}, {multiply_adds(run.model, run.x) / 1e6:.1f} M multiply-adds per clip]"
                 if args.variant else ""))
    print(f"{malloc}: {(after.ru_minflt - before.ru_minflt) / steps:.0f} page faults and "
          f"{(after.ru_stime - before.ru_stime) / steps * 1000:.1f} ms of system time per step (all threads; user "
          f"{(after.ru_utime - before.ru_utime) / steps * 1000:.1f} ms)")
    if args.profile:
        for v, run in runs.items():
            print(f"{v:>19}: {profile_shares(run)}")


if __name__ == "__main__":
    main()
