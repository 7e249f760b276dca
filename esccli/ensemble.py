"""Ensembles: train the members of a recipe with `members` > 1 apart, then combine them into one model file.

Member k is the recipe's single-network version `recipe.member(k)` (its k-th variant) trained with seed
`recipe.member_seed(seed, k)`, exactly as `train` would train it alone; it is written to a hidden file next to
the final model (`.<name>.member<k>.pt`, with its own resume file), so an interrupted ensemble resumed with
`resume=True` keeps the members that are done and resumes the one that was cut off. With jobs > 1 (CPU only)
members train side by side in processes, each with its share of the cores.
The combined model is an `ensemble` network (esccli/models.py) that predicts the members' mean probability
(arithmetic or geometric, as the recipe's `ensemble_mean` says); it is scored on the held-out fold like any
model, and the member files are removed once it is saved.
"""

import os
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from esccli import checkpoint
from esccli.errors import EscError, ModelError
from esccli.models import ModelConfig, build_model, count_parameters, ensemble_config, with_test_shifts
from esccli.recipes import Recipe
from esccli.workers import run_side_by_side


def member_path(path: Path, k: int) -> Path:
    """Where member k (0-based) of the ensemble saved at `path` is trained (hidden from the model store)."""
    return Path(path).with_name(_member_name(path, str(k + 1)))


def member_pattern(path: Path) -> str:
    """The glob of the member files (finished or resume) of the ensemble saved at `path`, in its folder."""
    return _member_name(path, "*")


def _member_name(path: Path, number: str) -> str:
    path = Path(path)
    return f".{path.stem}.member{number}{path.suffix}"


def member_files(path: Path) -> list[Path]:
    """Every member file (finished or resume) next to the model at `path`, whatever the number of members."""
    path = Path(path)
    return sorted(path.parent.glob(member_pattern(path)))


def member_numbers(path: Path) -> set[int]:
    """The members (1-based) with a file (finished or resume) next to the model at `path` (member_files)."""
    prefix = member_pattern(path).split("*")[0]
    found = set()
    for f in member_files(path):
        number = f.name[len(prefix):].split(".", 1)[0]
        if number.isdigit():
            found.add(int(number))
    return found


def saved_progress(path: Path) -> bool:
    """Whether a training of the model at `path` was interrupted and left work to resume: its resume file, or
    members of an ensemble (finished or started)."""
    path = Path(path)
    return path.with_suffix(".resume.pt").is_file() or bool(member_files(path))


CLOCK_SLACK = 0.1  # seconds a file system's clock may stamp a file before time.time() said it was written


def kept_work(path: Path, since: float, resumed: bool) -> bool:
    """Whether a run begun at `since` (time.time()) leaves work for `--resume` in the model at `path` (finished, or
    its resume or member files): any such file if the run resumed, else only those it wrote (a run that starts over
    leaves an earlier run's files until it replaces them)."""
    path = Path(path)
    files = [f for f in (path, path.with_suffix(".resume.pt"), *member_files(path)) if f.is_file()]
    return any(resumed or f.stat().st_mtime >= since - CLOCK_SLACK for f in files)


def check_resumable(name: str, paths: list[Path], cv: bool = False) -> None:
    """Refuse a resume of model `name`, before any work, when no model at `paths` left work to resume; with `cv`
    (one path per fold) a finished fold counts, as cross-validation goes on after it. train and run_cv check again
    as they go."""
    if not any(saved_progress(p) or (cv and Path(p).is_file()) for p in paths):
        where = Path(paths[0]).parent
        if any(Path(p).is_file() for p in paths):  # without --resume, its name is taken: a hint to that would loop
            raise EscError(f"nothing to resume: {name} finished its training in {where}",
                           "run again without --resume, with --force to train it again or --name for a new model")
        what = f"no fold of {name} was finished or started" if cv else f"no training of {name} was interrupted"
        raise EscError(f"nothing to resume: {what} in {where}", "run again without --resume")


def is_member(meta: dict, recipe: Recipe, k: int, fold: int | None, seed: int, precision: str, fs) -> bool:
    """Whether a model (or resume) file's metadata is member k of `recipe` with this fold, seed and precision,
    trained on the features `fs` (FeatureSet.made)."""
    from esccli.train import made_by

    return made_by(meta, recipe.member(k), fs, fold, recipe.member_seed(seed, k), precision)


def default_jobs(members: int, cores: int, side_by_side: bool = True) -> int:
    """How many members train side by side on a CPU unless told: all of them, up to twice the cores (one, each on
    all the cores, for a recipe whose `members_side_by_side` is False). Members run one thread each once they
    outnumber the cores, and time-sharing costs nothing measurable: three one-thread trainings on two cores took
    7.2 s per epoch where two took 4.8 (1.5x, docs/ablation.md round 4), so a third member waiting for a free core
    would only add its whole training time to the wall time."""
    return max(1, min(members, 2 * max(1, cores))) if side_by_side else 1


def train_ensemble(fs, recipe: Recipe, path: Path, fold: int | None, seed: int, device: str, resume: bool,
                   name: str | None, command: str, precision: str, jobs: int = 1, threads: int | None = None,
                   on_epoch: Callable | None = None, on_step: Callable | None = None):
    """Train the members that are not done (one at a time, or `jobs` side by side on a CPU, each in a process of
    `threads` threads, default its share of the cores), then combine them. Every member trains with the same
    thread count whether or not the run was resumed, so a resumed ensemble ends as an uninterrupted one would."""
    from esccli.train import TrainingInterrupted, TrainResult, interrupted, other_settings, resolve_precision, train

    path = Path(path)
    precision = resolve_precision(precision, device, recipe.allow_bf16)
    members = [(recipe.member(k), recipe.member_seed(seed, k)) for k in range(recipe.members)]
    paths = [member_path(path, k) for k in range(recipe.members)]
    finished, started = [False] * recipe.members, [False] * recipe.members
    if resume:  # check every member's files before training anything
        for k, p in enumerate(paths):
            for f, flag in ((p, finished), (p.with_suffix(".resume.pt"), started)):
                if f.is_file():
                    meta = checkpoint.read_meta(f)
                    if not is_member(meta, recipe, k, fold, seed, precision, fs):
                        why = other_settings(meta, recipe.member(k), fs, fold, recipe.member_seed(seed, k), precision)
                        raise ModelError(f"{f} was made with other settings: {why}",
                                         "run again without --resume to start over")
                    flag[k] = True
        if not any(finished) and not any(started):
            raise EscError(f"nothing to resume: no member of {path.name} was started in {path.parent}")
        beyond = sorted(member_numbers(path) - set(range(1, recipe.members + 1)))
        if beyond:  # their work would be dropped when this ensemble is joined
            raise ModelError(f"{path.name} was started with more members: member {beyond[-1]} has work saved in "
                             f"{path.parent} (now {recipe.members} members)",
                             "resume with the same --members, or run again without --resume to start over")
    todo = [k for k in range(recipe.members) if not finished[k]]
    t0, since = time.perf_counter(), time.time()
    side_by_side = device == "cpu" and jobs > 1
    if side_by_side:  # each member's thread count follows from the jobs asked for, not from how many are left
        threads = threads or max(1, (os.cpu_count() or 1) // jobs)
    jobs = min(jobs, len(todo)) if side_by_side else 1
    try:
        if jobs <= 1:
            before = torch.get_num_threads()
            try:
                if side_by_side:  # the one member left trains here, with the threads it would have had beside others
                    torch.set_num_threads(threads)
                for k in todo:
                    train(fs, members[k][0], paths[k], fold=fold, seed=members[k][1], device=device, resume=started[k],
                          name=f"{name or path.stem} member {k + 1}", command=command, precision=precision,
                          on_epoch=(lambda s, k=k: on_epoch(replace(s, member=k + 1))) if on_epoch else None,
                          on_step=on_step)
            finally:
                torch.set_num_threads(before)
        else:
            run_side_by_side(_train_member_worker,
                             [(fs, members[k][0], str(paths[k]), fold, members[k][1], device, started[k],
                               f"{name or path.stem} member {k + 1}", command, precision, threads) for k in todo],
                             jobs, TrainingInterrupted("training interrupted"))
        meta = combine(fs, recipe, paths, path, fold=fold, seed=seed, name=name or path.stem, command=command,
                       precision=precision, device=device, wall_seconds=time.perf_counter() - t0)
    except (KeyboardInterrupt, TrainingInterrupted) as e:  # what one member's message says is not the whole story
        kept = [k + 1 for k, p in enumerate(paths) if kept_work(p, since, resume)]
        where = f"{path.parent}, as hidden files {member_pattern(path)}"
        raise interrupted("training", "member", kept, len(paths), where, getattr(e, "signum", None)) from None
    for p in member_files(path):  # this run's members, and any left by an earlier run with more members
        p.unlink(missing_ok=True)
    return TrainResult(path, meta, meta["train"]["history"])


def _train_member_worker(fs, recipe, path, fold, seed, device, resume, name, command, precision, threads):
    from esccli.train import set_threads, train

    set_threads(threads=threads)
    train(fs, recipe, Path(path), fold=fold, seed=seed, device=device, resume=resume, name=name, command=command,
          precision=precision)


def combine(fs, recipe: Recipe, member_paths: list[Path], out: Path, fold: int | None, seed: int, name: str,
            command: str, precision: str, device: str = "cpu", wall_seconds: float | None = None) -> dict:
    """Join finished member models (member k made by `recipe.member(k)` with seed `recipe.member_seed(seed, k)`)
    into one ensemble model file at `out`, scored on the held-out fold; returns its metadata."""
    from esccli.train import cpu_name, modulation_of, predict_logits, split

    blobs = [checkpoint.read(p) for p in member_paths]
    for k, (p, b) in enumerate(zip(member_paths, blobs)):
        if not is_member(b, recipe, k, fold, seed, precision, fs):
            raise ModelError(f"{p} is not member {k + 1} of this ensemble (other recipe, fold, seed, precision, "
                             "features or clips)", "run again without --resume to start over")
    config = ensemble_config([ModelConfig.from_dict(b["model"]) for b in blobs], recipe.ensemble_mean,
                             recipe.member_weights())
    model = build_model(config)
    model.load_state_dict({f"members.{k}.{key}": v for k, b in enumerate(blobs) for key, v in b["state_dict"].items()})
    model.to(device)

    metrics = {"val_acc": None, "val_loss": None, "epoch": recipe.epochs}
    _, val_idx = split(fs, fold)
    if len(val_idx):
        x_val = torch.from_numpy(fs.features[val_idx]).unsqueeze(1)
        y_val = torch.from_numpy(fs.targets[val_idx])
        m_all = modulation_of(fs, recipe)
        logits = predict_logits(with_test_shifts(model, recipe.test_shifts), x_val, device, recipe.channels_last,
                                modulation=None if m_all is None else m_all[val_idx])
        metrics.update(val_acc=float((logits.argmax(1) == y_val).float().mean()),
                       val_loss=float(F.nll_loss(logits, y_val)))
    members = [{"seed": recipe.member_seed(seed, k), "variant": recipe.member_variant(k),
                "metrics": b["train"]["metrics"], "seconds": b["train"]["seconds"],
                "epochs": b["train"]["epochs_done"], "threads": b["train"].get("threads"), "cpu": b["train"].get("cpu")}
               for k, b in enumerate(blobs)]
    train_meta = {
        "recipe": recipe.to_dict(), "fold": fold, "seed": seed, "clips": blobs[0]["train"]["clips"],
        "clips_digest": fs.digest(),
        "parameters": count_parameters(model), "command": command, "precision": precision,
        # every epoch of every member, in member order (member k's entries carry "member": k + 1)
        "history": [{**h, "member": k + 1} for k, b in enumerate(blobs) for h in b["train"]["history"]],
        "members": members, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # the recipe's epochs: each member's own are in `members` (the texture network's differ)
        "epochs_done": recipe.epochs, "seconds": sum(m["seconds"] for m in members), "wall_seconds": wall_seconds,
        "selected_on_fold": False, "metrics": metrics,
        # where it was joined (each member's CPU and thread count are in `members`: a resumed ensemble's members may
        # have trained on other machines)
        "device": device, "cpu": cpu_name(),
    }
    meta = {"name": name, "model": config.to_dict(), "features": blobs[0]["features"], "classes": blobs[0]["classes"],
            "mel_basis": blobs[0]["mel_basis"], "train": train_meta}
    checkpoint.save(out, meta, model.state_dict())
    return meta
