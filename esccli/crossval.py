"""The standard ESC-50 protocol: train with each of the five folds held out in turn, report mean +- std.

Fold models are stored as `<name>-fold<k>`; the summary `<name>.cv.json` is rewritten after each fold, so an
interrupted cross-validation resumed with `resume=True` skips the folds that are done. With jobs > 1, folds
train in parallel processes, each with its share of the cores (esccli/workers.py).
"""

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from esccli import checkpoint
from esccli.dataset import NUM_FOLDS
from esccli.errors import ModelError
from esccli.fsutil import atomic_write_text
from esccli.metrics import mean_std
from esccli.recipes import Recipe


@dataclass
class CVResult:
    name: str
    folds: dict[int, float] = field(default_factory=dict)  # fold -> final-epoch accuracy on that fold
    seconds: dict[int, float] = field(default_factory=dict)

    @property
    def mean_std(self) -> tuple[float, float]:
        return mean_std(list(self.folds.values()))

    def to_dict(self) -> dict:
        mean, std = self.mean_std if self.folds else (None, None)
        return {"name": self.name, "folds": {str(k): v for k, v in sorted(self.folds.items())},
                "seconds": {str(k): v for k, v in sorted(self.seconds.items())}, "mean": mean, "std": std}


def fold_name(name: str, fold: int) -> str:
    return f"{name}-fold{fold}"


def summary_path(models_dir: Path, name: str) -> Path:
    return Path(models_dir) / f"{name}.cv.json"


def _done(path: Path, fs, recipe: Recipe, seed: int, fold: int, precision: str) -> tuple[float, float] | None:
    """(accuracy, seconds) of a finished fold model made with these settings (and precision) on the features `fs`,
    else None."""
    if not path.is_file():
        return None
    from esccli.train import made_by

    meta = checkpoint.read_meta(path)
    if not made_by(meta, recipe, fs, fold, seed, precision):
        return None
    return meta["train"]["metrics"]["val_acc"], meta["train"].get("seconds", 0.0)


def run_cv(fs, recipe: Recipe, models_dir: Path, name: str, seed: int = 0, device: str = "cpu", jobs: int = 1,
           resume: bool = False, command: str = "", folds: list[int] | None = None, threads: int | None = None,
           on_epoch: Callable | None = None, on_step: Callable | None = None,
           on_fold: Callable[[int, float, float], None] | None = None, precision: str = "auto",
           overwrite: bool = False) -> CVResult:
    """Train one model per fold, each with that fold held out, and write the summary. With `resume`, a fold model
    these settings made is kept and its score reused, an interrupted fold continues and a fold not started is
    trained; a finished fold model made with other settings is refused unless `overwrite` (it is trained again)."""
    from esccli.ensemble import check_resumable, kept_work, saved_progress
    from esccli.train import TrainingInterrupted, check_recipe, interrupted, other_settings, resolve_precision, train

    check_recipe(recipe, fs.params)  # before any fold starts, in this process or another
    precision = resolve_precision(precision, device, recipe.allow_bf16)
    folds = folds or list(range(1, NUM_FOLDS + 1))
    if resume:
        check_resumable(name, [Path(models_dir) / f"{fold_name(name, k)}.pt" for k in folds], cv=True)
    result = CVResult(name)
    todo = []
    for k in folds:
        path = Path(models_dir) / f"{fold_name(name, k)}.pt"
        done = _done(path, fs, recipe, seed, k, precision) if resume else None
        if done:
            result.folds[k], result.seconds[k] = done
            if on_fold:
                on_fold(k, *done)
        elif resume and path.is_file() and not saved_progress(path) and not overwrite:
            raise ModelError(f"{path.name} in {models_dir} was made with other settings: "
                             f"{other_settings(checkpoint.read_meta(path), recipe, fs, k, seed, precision)}",
                             "use --force to train it again with these, or another --name")
        else:
            todo.append((k, path))

    def record(k: int, acc: float, secs: float) -> None:
        result.folds[k], result.seconds[k] = acc, secs
        atomic_write_text(summary_path(models_dir, name), json.dumps(result.to_dict(), indent=2))
        if on_fold:
            on_fold(k, acc, secs)

    since = time.time()
    try:
        if jobs <= 1:
            for k, path in todo:
                r = train(fs, recipe, path, fold=k, seed=seed, device=device, resume=resume and saved_progress(path),
                          name=fold_name(name, k), command=command, precision=precision,
                          on_epoch=(lambda s, k=k: on_epoch(k, s)) if on_epoch else None, on_step=on_step)
                record(k, r.meta["train"]["metrics"]["val_acc"], r.meta["train"]["seconds"])
        else:
            from esccli.workers import run_side_by_side

            run_side_by_side(_train_fold_worker,
                             [(fs, recipe, str(path), k, seed, device, resume, name, command, jobs, threads, precision)
                              for k, path in todo],
                             jobs, TrainingInterrupted("cross-validation interrupted"),
                             on_result=lambda i, r: record(todo[i][0], *r))
    except (KeyboardInterrupt, TrainingInterrupted) as e:  # a fold's own message is not the whole story
        kept = [k for k in folds if kept_work(Path(models_dir) / f"{fold_name(name, k)}.pt", since, resume)]
        raise interrupted("cross-validation", "fold", kept, None, Path(models_dir),
                          getattr(e, "signum", None)) from None
    atomic_write_text(summary_path(models_dir, name), json.dumps(result.to_dict(), indent=2))
    return result


def _train_fold_worker(fs, recipe, path, fold, seed, device, resume, name, command, jobs, threads, precision):
    from esccli.ensemble import saved_progress
    from esccli.train import set_threads, train

    set_threads(jobs, threads)
    path = Path(path)
    r = train(fs, recipe, path, fold=fold, seed=seed, device=device,
              resume=resume and saved_progress(path), name=fold_name(name, fold), command=command,
              precision=precision)
    return r.meta["train"]["metrics"]["val_acc"], r.meta["train"]["seconds"]
