"""Ensembles: train the members of a recipe with `members` > 1 apart, then combine them into one model file.

Member k is the recipe's single-network version `recipe.member(k)` (its k-th variant) trained with seed
`recipe.member_seed(seed, k)`, exactly as `train` would train it alone; it is written to a hidden file next to
the final model (`.<name>.member<k>.pt`, with its own resume file), so an interrupted ensemble resumed with
`resume=True` keeps the members that are done and resumes the one that was cut off. With jobs > 1 (CPU only)
members train side by side in processes, each with its share of the cores.
The combined model is an `ensemble` network (esccli/models.py) that predicts the members' mean probability; it
is scored on the held-out fold like any model, and the member files are removed once it is saved.
"""

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from esccli import checkpoint
from esccli.errors import EscError
from esccli.models import ModelConfig, build_model, count_parameters, ensemble_config
from esccli.recipes import Recipe


def member_path(path: Path, k: int) -> Path:
    """Where member k (0-based) of the ensemble saved at `path` is trained (hidden from the model store)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.member{k + 1}{path.suffix}")


def train_ensemble(fs, recipe: Recipe, path: Path, fold: int | None, seed: int, device: str, resume: bool,
                   name: str | None, command: str, precision: str, jobs: int = 1, threads: int | None = None,
                   on_epoch: Callable | None = None, on_step: Callable | None = None):
    from esccli.train import TrainingInterrupted, TrainResult, resolve_precision, set_threads, train

    path = Path(path)
    precision = resolve_precision(precision, device, recipe.allow_bf16)
    members = [(recipe.member(k), recipe.member_seed(seed, k)) for k in range(recipe.members)]
    paths = [member_path(path, k) for k in range(recipe.members)]
    finished = [resume and p.is_file() and one.made(checkpoint.read_meta(p)["train"], fold, s, precision)
                for p, (one, s) in zip(paths, members)]
    started = [p.with_suffix(".resume.pt").is_file() for p in paths]
    if resume and not any(finished) and not any(started):
        raise EscError(f"nothing to resume: no member of {path.name} was started in {path.parent}")
    todo = [k for k in range(recipe.members) if not finished[k]]
    t0 = time.perf_counter()
    if device == "cpu" and jobs > 1 and len(todo) == 1 and threads is None:
        set_threads(1)  # the cores kept for members side by side all go to the one left to train
    jobs = min(jobs, len(todo)) if device == "cpu" else 1
    if jobs <= 1:
        for k in todo:
            train(fs, members[k][0], paths[k], fold=fold, seed=members[k][1], device=device, resume=resume and started[k],
                  name=f"{name or path.stem} member {k + 1}", command=command, precision=precision,
                  on_epoch=(lambda s, k=k: on_epoch(replace(s, member=k + 1))) if on_epoch else None,
                  on_step=on_step)
    else:
        ctx = multiprocessing.get_context("spawn")
        try:
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                futures = [pool.submit(_train_member_worker, fs, members[k][0], str(paths[k]), fold, members[k][1],
                                       device, resume and started[k], f"{name or path.stem} member {k + 1}", command,
                                       precision, jobs, threads) for k in todo]
                for f in futures:
                    f.result()
        except KeyboardInterrupt:  # each member saved its last finished epoch
            raise TrainingInterrupted(f"training interrupted; each member's progress is saved next to {path}",
                                      "run the same command with --resume to continue") from None
    meta = combine(fs, recipe, paths, path, fold=fold, seed=seed, name=name or path.stem, command=command,
                   precision=precision, device=device, wall_seconds=time.perf_counter() - t0)
    for p in paths:
        p.unlink(missing_ok=True)
    return TrainResult(path, meta, meta["train"]["history"])


def _train_member_worker(fs, recipe, path, fold, seed, device, resume, name, command, precision, jobs, threads):
    from esccli.train import set_threads, train

    set_threads(jobs, threads)
    train(fs, recipe, Path(path), fold=fold, seed=seed, device=device, resume=resume, name=name, command=command,
          precision=precision)


def combine(fs, recipe: Recipe, member_paths: list[Path], out: Path, fold: int | None, seed: int, name: str,
            command: str, precision: str, device: str = "cpu", wall_seconds: float | None = None) -> dict:
    """Join finished member models (member k made by `recipe.member(k)` with seed `recipe.member_seed(seed, k)`)
    into one ensemble model file at `out`, scored on the held-out fold; returns its metadata."""
    from esccli.train import predict_logits, split

    blobs = [checkpoint.read(p) for p in member_paths]
    for k, (p, b) in enumerate(zip(member_paths, blobs)):
        made = recipe.member(k).made(b["train"], fold, recipe.member_seed(seed, k), precision)
        if not made or b["features"] != fs.params.to_dict():
            raise EscError(f"{p} is not member {k + 1} of this ensemble (other recipe, fold, seed, precision or features)")
    config = ensemble_config(ModelConfig.from_dict(blobs[0]["model"]), len(blobs))
    model = build_model(config)
    model.load_state_dict({f"members.{k}.{key}": v for k, b in enumerate(blobs) for key, v in b["state_dict"].items()})
    model.to(device)

    metrics = {"val_acc": None, "val_loss": None, "epoch": recipe.epochs}
    _, val_idx = split(fs, fold)
    if len(val_idx):
        x_val = torch.from_numpy(fs.features[val_idx]).unsqueeze(1)
        y_val = torch.from_numpy(fs.targets[val_idx])
        logits = predict_logits(model, x_val, device, recipe.channels_last)
        metrics.update(val_acc=float((logits.argmax(1) == y_val).float().mean()),
                       val_loss=float(F.nll_loss(logits, y_val)))
    members = [{"seed": recipe.member_seed(seed, k), "variant": recipe.member_variants[k % len(recipe.member_variants)],
                "metrics": b["train"]["metrics"], "seconds": b["train"]["seconds"]} for k, b in enumerate(blobs)]
    train_meta = {
        "recipe": recipe.to_dict(), "fold": fold, "seed": seed, "clips": blobs[0]["train"]["clips"],
        "parameters": count_parameters(model), "command": command, "precision": precision,
        # every epoch of every member, in member order (member k's entries carry "member": k + 1)
        "history": [{**h, "member": k + 1} for k, b in enumerate(blobs) for h in b["train"]["history"]],
        "members": members, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "epochs_done": recipe.epochs, "seconds": sum(m["seconds"] for m in members), "wall_seconds": wall_seconds,
        "selected_on_fold": False, "metrics": metrics,
    }
    meta = {"name": name, "model": config.to_dict(), "features": blobs[0]["features"], "classes": blobs[0]["classes"],
            "mel_basis": blobs[0]["mel_basis"], "train": train_meta}
    checkpoint.save(out, meta, model.state_dict())
    return meta
