"""Training one model on ESC-50 features: config, data, model, optimizer, schedule, loop, evaluation, checkpoint.

Reads top to bottom. Every epoch starts from a seed derived from (seed, epoch), and a resume file is written
atomically at the end of every epoch, so an interrupted run resumed with `resume=True` ends bit-identical to an
uninterrupted one on the same machine.
"""

import contextlib
import math
import os
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from esccli import augment, checkpoint
from esccli.classes import CLASS_NAMES
from esccli.errors import EscError, Interrupted, ModelError
from esccli.features import FeatureParams, params_basis
from esccli.featurize import FeatureSet
from esccli.fsutil import remove_stale_temporaries
from esccli.memory import keep_freed_memory
from esccli.models import ModelConfig, apply_net, build_model, count_parameters, with_test_shifts
from esccli.recipes import READS_DB, Recipe
from esccli.store import BEST, RESUME, SUFFIX

# clips per forward pass when scoring (whole clips): 16 holds a quarter of 64's memory at a time. In a training,
# which keeps the memory it frees (esccli/memory.py), both take the same time; without that (esc eval), 16 took
# 0.82 of 64's time for the fast preset on two threads, as fewer fresh pages come from the kernel (round 11)
EVAL_BATCH = 16
# fp32, or bf16 autocast for the training forward pass. Measured (python benchmarks/step_cost.py): on a CPU with
# native bf16 (AVX-512 BF16) bf16 + channels_last takes 0.47x the time of fp32; on one without, bf16 was 4.5x
# slower. "auto" therefore picks bf16 only where the hardware has it.
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class EpochStats:
    epoch: int  # 1-based
    epochs: int
    train_loss: float
    val_loss: float | None
    val_acc: float | None
    lr: float
    seconds: float
    data_seconds: float  # time spent outside forward/backward/step (batching, augmentation)
    member: int = 0  # which member of an ensemble this is (1-based; 0: a single network)


@dataclass
class TrainResult:
    path: Path
    meta: dict
    history: list[dict] = field(default_factory=list)
    resumed_from: int = 0


class TrainingInterrupted(Interrupted):
    """A training stopped by Ctrl-C or SIGTERM; its last finished epoch is in its resume file."""


def interrupted(what: str, part: str, kept: list[int], total: int | None, where: Path | str,
                signum: int | None = None) -> TrainingInterrupted:
    """The TrainingInterrupted of work made of parts (an ensemble's members, a cross-validation's folds) stopped
    part way: `kept`, the parts (numbered from 1, of `total` if given) whose work is saved in `where` (finished, or
    with a resume file), and how to go on. `signum`: the signal that stopped it, if known."""
    if not kept:
        e = TrainingInterrupted(f"{what} interrupted before any {part} finished an epoch; nothing was saved",
                                "run the same command to start again")
    else:
        which = f"{part}{'s' if len(kept) > 1 else ''} {', '.join(map(str, kept))}" + (f" of {total}" if total else "")
        e = TrainingInterrupted(f"{what} interrupted; the work of {which} is saved in {where}",
                                "run the same command with --resume to continue")
    e.signum = signum
    return e


class TrainingDiverged(EscError):
    """The loss became inf or NaN: the weights are lost, and saving them would make a model that predicts nothing."""


DEVICES = ("auto", "cpu", "cuda", "mps")


def pick_device(name: str = "auto") -> str:
    if name not in DEVICES:
        raise EscError(f"unknown device {name!r}", f"choose one of: {', '.join(DEVICES)}")
    if name != "auto":
        if name == "cuda" and not torch.cuda.is_available():
            raise EscError("--device cuda: no CUDA device is available", "use --device cpu or auto")
        if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise EscError("--device mps: no Apple GPU is available", "use --device cpu or auto")
        return name
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def split(fs: FeatureSet, fold: int | None):
    """(train indices, validation indices) for a held-out fold; fold None trains on every clip."""
    idx = np.arange(len(fs))
    if fold is None:
        return idx, idx[:0]
    if fold not in set(fs.folds.tolist()):
        raise EscError(f"fold {fold} is not in the dataset (folds: {sorted(set(fs.folds.tolist()))})")
    return idx[fs.folds != fold], idx[fs.folds == fold]


def lr_at(recipe: Recipe, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate at a step (epoch 0-based)."""
    if recipe.schedule == "step":
        return recipe.lr * recipe.step_gamma ** (epoch // recipe.step_every)
    t = epoch + step / steps_per_epoch  # progress in epochs
    if t < recipe.warmup_epochs:
        return recipe.lr * (t + 1.0 / steps_per_epoch) / recipe.warmup_epochs
    rest = (t - recipe.warmup_epochs) / max(1e-9, recipe.epochs - recipe.warmup_epochs)
    return recipe.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, rest)))


def make_optimizer(recipe: Recipe, model: torch.nn.Module) -> torch.optim.Optimizer:
    if recipe.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    # no weight decay on BN and biases
    groups = [{"params": [p for p in model.parameters() if p.ndim > 1], "weight_decay": recipe.weight_decay},
              {"params": [p for p in model.parameters() if p.ndim <= 1], "weight_decay": 0.0}]
    if recipe.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=recipe.lr)
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, nesterov=True)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r}")


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (Linux: the avx512_bf16 or amx_bf16 flag)."""
    flags = cpuinfo_field("flags").split()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def cpu_emulates_bf16() -> bool:
    """Whether this is an x86 CPU without native bf16 (where PyTorch emulates it, several times slower than fp32:
    docs/ablation.md, round 6). Elsewhere (ARM) esc cannot tell, and says nothing."""
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686") and not cpu_has_bf16()


def cpuinfo_field(name: str, cpuinfo: str = "/proc/cpuinfo") -> str:
    """The value of the first `name` line of /proc/cpuinfo (the first CPU's), stripped; "" where there is none."""
    try:
        with open(cpuinfo) as f:
            return next((line.split(":", 1)[1].strip() for line in f
                         if line.split(":", 1)[0].strip() == name and ":" in line), "")
    except OSError:
        return ""


def cpu_name(cpuinfo: str = "/proc/cpuinfo") -> str:
    """What this CPU calls itself (Linux: the model name in /proc/cpuinfo), else what the platform says ("" if
    nothing). Recorded with a model: its training times mean little without it."""
    return " ".join(cpuinfo_field("model name", cpuinfo).split()) or platform.processor() or platform.machine()


def resolve_precision(precision: str, device: str, allow_bf16: bool = True) -> str:
    """"auto" -> bf16 where the device computes it natively (CUDA with bf16, CPUs with AVX-512 BF16/AMX) and the
    recipe allows it (the seed recipe stays fp32, as the notebook), else fp32."""
    if precision not in PRECISIONS:
        raise EscError(f"unknown precision {precision!r}", f"choose one of: {', '.join(PRECISIONS)}")
    kind = device.split(":")[0]
    if precision == "bf16" and not (kind == "cpu" or (kind == "cuda" and torch.cuda.is_bf16_supported())):
        raise EscError(f"bf16 training is not supported on {device}", "use --precision fp32 (or auto)")
    if precision != "auto":
        return precision
    if not allow_bf16:
        return "fp32"
    if kind == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if kind == "cpu":
        return "bf16" if cpu_has_bf16() else "fp32"
    return "fp32"


def autocast(device: str, precision: str):
    """The autocast context of a training step: bf16 autocast, or nothing at all for fp32 (older torch refuses
    to build an autocast context for some devices, mps among them, even a disabled one)."""
    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def make_ema(model: torch.nn.Module, decay: float):
    """A moving average of `model`'s weights and BatchNorm statistics (torch's AveragedModel; None when decay is
    0): `.update_parameters(model)` after each step, `.module` is the averaged network."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def check_recipe(recipe: Recipe, params: FeatureParams | None = None) -> None:
    """Refuse, in one line, a recipe that cannot train or has a setting that would do nothing (and, given the
    features it will train on, augmentations that read them as dB when they are not)."""
    problems = recipe.problems()
    if problems:
        raise EscError(f"recipe: {'; '.join(problems)}")
    reads_db = [k for k in READS_DB if getattr(recipe, k)]
    if params is not None and reads_db and params.scale != "db":
        raise EscError(f"{', '.join(reads_db)} need features scaled in dB (scale 'db'), not {params.scale!r}")
    if params is not None and params.scale != "db" and any(recipe.member(k).arch == "texture"
                                                            for k in range(recipe.members)):
        raise EscError(f"the texture network reads features scaled in dB (scale 'db'), not {params.scale!r}")


def modulation_of(fs: FeatureSet, recipe: Recipe) -> torch.Tensor | None:
    """The clips' modulation statistics [clips, modulation.COUNT] when a network of `recipe` hears them, else None;
    a feature set without them (not from esc's cache) is refused for such a recipe."""
    if not any(recipe.member(k).arch_args.get("modulation") for k in range(recipe.members)):
        return None
    return fs.modulation_rows()


def check_save_best(recipe: Recipe, save_best: bool, fold: int | None) -> None:
    if save_best and fold is None:
        raise EscError("--save-best picks an epoch by its score on the held-out fold; training on all folds has none",
                       "use --fold K with --save-best")
    if save_best and recipe.members > 1:
        raise EscError("--save-best picks one epoch of one network; an ensemble has several",
                       "use --members 1 with --save-best")


def epoch_seed(seed: int, epoch: int) -> int:
    return seed * 1_000_003 + epoch


def recipe_of_epoch(recipe: Recipe, epoch: int) -> Recipe:
    """The recipe as epoch `epoch` (0-based) applies it: within the first early_crop_share of the epochs, crops
    of early_crop_frames and time masks narrowed in proportion; the recipe itself after them."""
    if not recipe.early_crop_frames or epoch >= round(recipe.early_crop_share * recipe.epochs):
        return recipe
    ratio = recipe.early_crop_frames / recipe.crop_frames
    return replace(recipe, crop_frames=recipe.early_crop_frames,
                   time_mask_width=max(1, round(recipe.time_mask_width * ratio)))


def augment_batch(x: torch.Tensor, recipe: Recipe, g: torch.Generator, params: FeatureParams) -> torch.Tensor:
    """A training batch's augmentations, in order, on features made with `params`."""
    db_range = params.top_db
    if recipe.crop_frames:
        x = augment.random_crop(x, recipe.crop_frames, g, recipe.crop_energy, recipe.stretch)
    x = augment.freq_shift(x, recipe.freq_shift, g)
    x = augment.random_eq(x, recipe.eq_db, db_range, g)
    x = augment.noise_floor(x, recipe.noise_db, db_range, g)
    x = augment.reverb(x, recipe.reverb_s, db_range, params.hop_length / params.sample_rate, g)
    if recipe.time_roll:
        x = augment.random_roll(x, g)
    x = augment.mask_bands(x, recipe.freq_masks, recipe.freq_mask_width, 2, g)
    x = augment.mask_bands(x, recipe.time_masks, recipe.time_mask_width, 3, g)
    return x


@torch.no_grad()
def front_end_outputs(model: torch.nn.Module, x: torch.Tensor, device: str,
                      modulation: torch.Tensor | None = None) -> torch.Tensor | None:
    """What the fixed front end of `model` (a `front_end` method with no weights, followed by its `head`) makes of
    each clip of x [n, 1, n_mels, frames] (and of its modulation statistics [n, modulation.COUNT], for a network
    that hears them), in float32 on `device`; None for a network without one."""
    if not hasattr(model, "front_end"):
        return None
    return torch.cat([model.front_end(x[i:i + EVAL_BATCH].to(device, torch.float32),
                                      None if modulation is None else modulation[i:i + EVAL_BATCH])
                      for i in range(0, x.shape[0], EVAL_BATCH)])


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, device: str, channels_last: bool = False,
                   batch: int = EVAL_BATCH, modulation: torch.Tensor | None = None) -> torch.Tensor:
    """Logits for whole clips, [n, 1, n_mels, frames] -> [n, classes], in eval mode, `batch` clips at a time; a
    network that hears the clips' modulation statistics is given them from `modulation` [n, modulation.COUNT]."""
    model.eval()
    out = []
    for i in range(0, x.shape[0], batch):
        xb = x[i:i + batch].to(device, torch.float32)
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        mb = None if modulation is None else modulation[i:i + batch].to(device, torch.float32)
        out.append(apply_net(model, xb, mb).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, len(CLASS_NAMES))


def train(
    fs: FeatureSet,
    recipe: Recipe,
    path: Path,
    fold: int | None = 5,
    seed: int = 0,
    device: str = "cpu",
    resume: bool = False,
    save_best: bool = False,
    name: str | None = None,
    command: str = "",
    on_epoch: Callable[[EpochStats], None] | None = None,
    on_step: Callable[[int, int], None] | None = None,
    precision: str = "auto",
    member_jobs: int = 1,
    member_threads: int | None = None,
) -> TrainResult:
    """Train `recipe` on every fold but `fold` (all clips when fold is None) and save the model at `path`.

    A recipe with several members trains them apart and saves their ensemble (esccli/ensemble.py), `member_jobs`
    of them side by side in processes of `member_threads` threads each. The process keeps the memory it frees
    (memory.keep_freed_memory)."""
    path = Path(path)
    check_recipe(recipe, fs.params)
    check_save_best(recipe, save_best, fold)
    keep_freed_memory()  # each step reuses the memory the last one freed (esccli/memory.py)
    resume_path = path.with_suffix(RESUME + SUFFIX)
    best_path = path.with_suffix(BEST + SUFFIX)
    # what a training of this model killed while saving left (each member of an ensemble clears its own)
    remove_stale_temporaries(path.parent, [path.name, resume_path.name, best_path.name])
    if recipe.members > 1:
        from esccli.ensemble import train_ensemble

        result = train_ensemble(fs, recipe, path, fold, seed, device, resume, name, command, precision,
                                jobs=member_jobs, threads=member_threads, on_epoch=on_epoch, on_step=on_step)
        _drop_stale_best(path, result.history)
        return result
    train_idx, val_idx = split(fs, fold)
    precision = resolve_precision(precision, device, recipe.allow_bf16)
    mix_db = fs.params.top_db if recipe.mixup_power else 0.0  # augment.mixup mixes powers when > 0

    # data: all features in memory as one compact tensor [clips, 1, n_mels, frames] in the cache's dtype (float16:
    # 64 MB for ESC-50 at the default parameters); each batch is converted to float32 (exactly) when it is drawn
    x_all = torch.from_numpy(np.ascontiguousarray(fs.features)).unsqueeze(1)
    y_all = torch.from_numpy(fs.targets)
    x_val, y_val = x_all[val_idx], y_all[val_idx]
    m_all = modulation_of(fs, recipe)  # None unless the network hears them
    m_val = None if m_all is None else m_all[val_idx]

    # model
    args = dict(recipe.arch_args)
    if recipe.arch == "texture":  # its statistics need the features' frame rate and dB range
        args = {"frame_rate": fs.params.sample_rate / fs.params.hop_length, "top_db": fs.params.top_db, **args}
    config = ModelConfig(recipe.arch, len(CLASS_NAMES), fs.params.n_mels, fs.params.frames, args)
    torch.manual_seed(seed)
    model = build_model(config).to(device)
    if recipe.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(recipe, model)
    ema = make_ema(model, recipe.ema_decay)
    saved = ema.module if ema else model  # the network that is saved
    scored = with_test_shifts(saved, recipe.test_shifts)  # and scored as it will predict
    meta = {
        "name": name or path.stem,
        "model": config.to_dict(),
        "features": fs.params.to_dict(),
        "classes": list(CLASS_NAMES),
        "mel_basis": torch.from_numpy(params_basis(fs.params).copy()),
        "train": {
            "recipe": recipe.to_dict(), "fold": fold, "seed": seed, "clips": len(train_idx),
            "clips_digest": fs.digest(),
            "parameters": count_parameters(model), "command": command, "precision": precision, "history": [],
            "created": None, "metrics": {},
            # where it trained (the process that finished it, if resumed): the thread count changes the order of
            # floating-point sums, so the weights bit for bit, and the CPU its times (`made` compares neither)
            "device": device, "threads": torch.get_num_threads(), "cpu": cpu_name(),
        },
    }

    # resume: continue from the last finished epoch of an interrupted run with the same settings
    start, history, best_acc = 0, [], -1.0
    if resume and resume_path.exists():
        blob = checkpoint.read(resume_path)
        if not made_by(blob, recipe, fs, fold, seed, precision):
            raise ModelError(f"{resume_path} was made with other settings: "
                             f"{other_settings(blob, recipe, fs, fold, seed, precision)}",
                             "run again without --resume to start over")
        model.load_state_dict(blob["state_dict"])
        optimizer.load_state_dict(blob["optimizer"])
        if ema:
            if "ema" not in blob:
                raise ModelError(f"{resume_path} lacks the moving average of its weights", "run again without --resume")
            ema.load_state_dict(blob["ema"])
        history = list(blob["train"]["history"])
        start = len(history)
        best_acc = max((h["val_acc"] or 0.0 for h in history), default=-1.0)
    elif resume:
        raise EscError(f"nothing to resume: no {resume_path.name} in {path.parent}")

    # a network with a fixed front end (TextureNet's statistics) trained on clips as they are: what its front end
    # makes of each clip is computed once here, not in each epoch, and the steps train what follows it
    cached = front_end_outputs(model, x_all, device, m_all) if recipe.sees_clips_as_they_are() else None
    stepped = model.head if cached is not None else model
    steps = max(1, len(train_idx) // recipe.batch_size)  # the last partial batch is dropped
    kept = len(history)  # the epochs the resume file holds (none before the first is saved)
    try:
        for epoch in range(start, recipe.epochs):
            t0 = time.perf_counter()
            torch.manual_seed(epoch_seed(seed, epoch))  # dropout
            g = torch.Generator().manual_seed(epoch_seed(seed, epoch))  # order and augmentation
            order = torch.from_numpy(train_idx)[torch.randperm(len(train_idx), generator=g)]
            model.train()
            this_epoch = recipe_of_epoch(recipe, epoch)
            loss_sum, data_time, lr = 0.0, 0.0, recipe.lr
            for step in range(steps):
                td = time.perf_counter()
                idx = order[step * recipe.batch_size:(step + 1) * recipe.batch_size]
                if cached is not None:
                    xb = cached[idx]
                else:
                    xb = augment_batch(x_all[idx].float(), this_epoch, g, fs.params)
                xb, ya, yb, lam = augment.mixup(xb, y_all[idx], recipe.mixup_alpha, g, mix_db)
                xb, ya, yb = xb.to(device), ya.to(device), yb.to(device)
                if recipe.channels_last and cached is None:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                lr = lr_at(recipe, epoch, step, steps)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                data_time += time.perf_counter() - td
                with autocast(device, precision):
                    logits = stepped(xb).float()
                loss = lam * F.cross_entropy(logits, ya, label_smoothing=recipe.label_smoothing)
                if lam < 1.0:
                    loss = loss + (1 - lam) * F.cross_entropy(logits, yb, label_smoothing=recipe.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if ema:
                    ema.update_parameters(model)
                loss_sum += loss.item()
                if not math.isfinite(loss_sum):
                    raise TrainingDiverged(
                        f"training diverged in epoch {epoch + 1}: the loss is no longer a finite number, so no model "
                        f"was saved (learning rate {lr:.2g} at that step)", "train again with a lower --lr")
                if on_step:
                    on_step(step + 1, steps)
            val_loss = val_acc = last_step_acc = None
            if len(val_idx) and (save_best or (epoch + 1) % recipe.val_every == 0 or epoch + 1 == recipe.epochs):
                logits = predict_logits(scored, x_val, device, recipe.channels_last, modulation=m_val)
                val_loss = float(F.cross_entropy(logits, y_val))
                val_acc = float((logits.argmax(1) == y_val).float().mean())
                if ema and epoch + 1 == recipe.epochs:  # what the average gained over the last step's weights
                    last_step = predict_logits(with_test_shifts(model, recipe.test_shifts), x_val, device,
                                               recipe.channels_last, modulation=m_val)
                    last_step_acc = float((last_step.argmax(1) == y_val).float().mean())
            stats = EpochStats(epoch + 1, recipe.epochs, loss_sum / steps, val_loss, val_acc, lr,
                               time.perf_counter() - t0, data_time)
            history.append({k: v for k, v in stats.__dict__.items() if k not in ("epochs", "member")})
            if last_step_acc is not None:
                history[-1]["last_step_val_acc"] = last_step_acc
            meta["train"]["history"] = history
            checkpoint.save(resume_path, meta, model.state_dict(), optimizer.state_dict(),
                            ema.state_dict() if ema else None)
            kept = len(history)
            if save_best and val_acc is not None and val_acc > best_acc:
                best_acc = val_acc
                best = _final_meta(meta, history, selected_on_fold=True)
                checkpoint.save(best_path, best, saved.state_dict())
            if on_epoch:
                on_epoch(stats)
    except KeyboardInterrupt:  # (an interrupt while the resume file is written leaves the one before: `kept`)
        if not kept:
            raise TrainingInterrupted("training interrupted before its first epoch ended; nothing was saved",
                                      "run the same command to start again") from None
        raise TrainingInterrupted(
            f"training interrupted after {kept} of {recipe.epochs} epochs; progress saved in {resume_path}",
            "run the same command with --resume to continue") from None

    meta = _final_meta(meta, history)
    checkpoint.save(path, meta, saved.state_dict())
    resume_path.unlink(missing_ok=True)
    if not save_best:
        _drop_stale_best(path, history)
    return TrainResult(path, meta, history, resumed_from=start)


def made_by(meta: dict, recipe: Recipe, fs: FeatureSet, fold: int | None, seed: int, precision: str) -> bool:
    """Whether a model (or resume) file's metadata says `recipe` made it with this held-out fold, seed and
    precision, on the features and clips of `fs`: what resuming it, reusing it as a finished fold or joining it
    as an ensemble member requires."""
    return recipe.made(meta["train"], fold, seed, precision) and fs.made(meta)


def other_settings(meta: dict, recipe: Recipe, fs: FeatureSet, fold: int | None, seed: int, precision: str) -> str:
    """What differs between the settings a file was made with and these (made_by false), for a refusal to say."""
    found = recipe.made_differences(meta["train"], fold, seed, precision) + ([] if fs.made(meta) else ["features or clips"])
    return "; ".join(found[:4]) + (f"; and {len(found) - 4} more" if len(found) > 4 else "")


def _drop_stale_best(path: Path, history: list[dict]) -> None:
    """Delete <name>.best.pt next to a model just saved at `path` when it is the --save-best epoch of another
    training (the model this one replaced with --force), which `esc models` would list as this model's. This
    training's own best epoch, saved before an interruption, recorded the start of `history`, and is kept."""
    best_path = path.with_suffix(BEST + SUFFIX)
    if not best_path.is_file():
        return
    try:
        theirs = checkpoint.read_meta(best_path)["train"]["history"]
    except (ModelError, KeyError, TypeError):
        return  # not a model file esc can read: not ours to delete
    if theirs != history[:len(theirs)]:
        best_path.unlink()


def _final_meta(meta: dict, history: list[dict], selected_on_fold: bool = False) -> dict:
    meta = {**meta, "train": dict(meta["train"])}
    last = history[-1] if history else {}
    meta["train"]["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    meta["train"]["epochs_done"] = len(history)
    meta["train"]["seconds"] = sum(h["seconds"] for h in history)
    meta["train"]["selected_on_fold"] = selected_on_fold  # True: the epoch was picked by its score on `fold`
    if selected_on_fold:
        best = max(history, key=lambda h: h["val_acc"] or 0.0)
        meta["train"]["metrics"] = {"val_acc": best["val_acc"], "val_loss": best["val_loss"], "epoch": best["epoch"]}
    else:
        meta["train"]["metrics"] = {"val_acc": last.get("val_acc"), "val_loss": last.get("val_loss"),
                                    "epoch": last.get("epoch")}
        if last.get("last_step_val_acc") is not None:  # with a moving average of the weights, the last step's own
            meta["train"]["metrics"]["last_step_val_acc"] = last["last_step_val_acc"]
    return meta


def set_threads(jobs: int = 1, threads: int | None = None) -> None:
    """Use `threads` CPU threads, or share the cores between `jobs` parallel trainings."""
    torch.set_num_threads(threads or max(1, (os.cpu_count() or 1) // max(1, jobs)))
