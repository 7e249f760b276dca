"""`esc train`: train a model with one fold held out, or all five in turn (--cv)."""

import os
import shlex
import sys
from typing import Optional

import typer

from esccli.cli import common


def _fmt(x, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{x:.1%}" if pct else f"{x:.3f}"


def epoch_line(s, prefix: str = "") -> str:
    prefix += f"member {s.member} " if s.member else ""
    return (f"{prefix}epoch {s.epoch:>3}/{s.epochs}  loss {s.train_loss:.3f}  val loss {_fmt(s.val_loss)}  "
            f"val acc {_fmt(s.val_acc, True)}  lr {s.lr:.2e}  {s.seconds:.1f}s")


def train(
    preset: Optional[str] = typer.Option(None, "--preset", "--recipe", metavar="NAME", autocompletion=common.complete_recipes, help="Training recipe: default, fast, or seed (the student notebook, exactly)."),
    arch: Optional[str] = typer.Option(None, "--arch", metavar="escnet|seed", help="Architecture: escnet (default) or seed; --arch seed alone selects the seed recipe."),
    fold: Optional[int] = typer.Option(None, "--fold", min=1, max=5, show_default=False, metavar="K", help="The fold held out for validation [default: 5]."),
    cv: bool = typer.Option(False, "--cv", help="5-fold cross-validation: train five models, report mean +- std."),
    all_folds: bool = typer.Option(False, "--all", help="Train on all five folds (no held-out score; for a final model)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, metavar="N", help="Epochs [default: the recipe's]; a texture network keeps its own, or its share of fewer."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, metavar="N", help="Batch size [default: the recipe's]."),
    lr: Optional[float] = typer.Option(None, "--lr", min=0.0, metavar="RATE", help="Peak learning rate [default: the recipe's]."),
    val_every: Optional[int] = typer.Option(None, "--val-every", min=1, metavar="N", help="Score the held-out fold every N epochs and after the last (every epoch with --save-best); training is the same for any N [default: the recipe's]."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Random seed: the same seed gives the same model on the same machine."),
    device: common.Device = typer.Option(common.Device.auto, "--device", metavar=common.DEVICE_METAVAR, help="Where the networks train."),
    precision: str = typer.Option("auto", "--precision", metavar="auto|fp32|bf16", help="auto (bf16 where the hardware computes it natively, else fp32), fp32 or bf16."),
    name: Optional[str] = typer.Option(None, "--name", metavar="NAME", help="Model name in the store [default: <recipe>-fold<k>, <recipe>-cv, <recipe>-all]."),
    members: Optional[int] = typer.Option(None, "--members", min=1, max=16, metavar="N", help="Networks trained apart whose averaged probabilities are the prediction; 1 = a single network [default: the recipe's: 6 for default (three of them count as one), 2 for fast]."),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j", min=1, max=16, metavar="N", help="Parallel training processes: folds with --cv, else an ensemble's members [default: 1 with --cv; else for default one per member up to twice the CPU cores, for fast 1: its members one after the other]."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, metavar="N", help="CPU threads per training process [default: the cores / --jobs]."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run with the same settings."),
    save_best: bool = typer.Option(False, "--save-best", help="Also save the best-by-validation epoch as <name>.best (its score is not a held-out result)."),
    force: bool = typer.Option(False, "--force", help="Overwrite a model of the same name."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Train a classifier on ESC-50 (fold 5 held out by default; --cv for all five)."""
    from esccli import store
    from esccli.crossval import fold_name, run_cv
    from esccli.ensemble import check_resumable, default_jobs, saved_progress
    from esccli.errors import EscError
    from esccli.features import PRESETS
    from esccli.recipes import RECIPES, get_recipe
    from esccli.train import check_recipe, check_save_best, cpu_emulates_bf16, pick_device, resolve_precision, set_threads
    from esccli.train import train as train_model

    if cv and all_folds:
        raise EscError("--cv and --all exclude each other")
    if fold is not None and (cv or all_folds):
        raise EscError(f"--fold says which fold to hold out; {'--cv holds out each' if cv else '--all holds out none'}",
                       f"drop --fold, or {'--cv' if cv else '--all'}")
    fold = 5 if fold is None else fold
    if save_best and cv:  # --all with --save-best: the core's check_save_best
        raise EscError("--save-best picks an epoch by its score on one held-out fold; --cv has five",
                       "use --fold K with --save-best")
    if arch is not None and arch not in ("escnet", "seed"):
        raise EscError(f"unknown architecture {arch!r}", "choose escnet or seed")
    preset = preset or ("seed" if arch == "seed" else "default")
    if preset not in RECIPES:
        raise EscError(f"unknown recipe {preset!r}", f"choose one of: {', '.join(RECIPES)}")
    recipe = get_recipe(preset)
    if arch is not None:
        recipe = recipe.with_arch(arch)
    recipe = recipe.with_epochs(epochs).with_overrides(batch_size=batch_size, lr=lr, members=members,
                                                       val_every=val_every)
    check_recipe(recipe, PRESETS[recipe.features])  # before the features are built: a mistake is told at once
    check_save_best(recipe, save_best, None if all_folds else fold)
    dev = pick_device(device.value)
    asked, precision = precision, resolve_precision(precision, dev, recipe.allow_bf16)
    if asked == "bf16" and dev == "cpu" and cpu_emulates_bf16():
        common.warn_line("this CPU does not compute bf16 natively: it is emulated, several times slower than fp32 "
                         "(--precision auto picks fp32 here)")
    if cv and jobs is not None and jobs > 5:
        raise EscError(f"--jobs {jobs}: with --cv at most 5 folds can train at once")
    member_jobs = 1 if cv or dev != "cpu" else jobs or default_jobs(recipe.members, os.cpu_count() or 1,
                                                                    recipe.members_side_by_side)
    member_jobs = min(recipe.members, member_jobs)
    set_threads((jobs or 1) if cv else member_jobs, threads)
    held_out = None if all_folds else fold
    name = store.valid_name(name or (f"{preset}-cv" if cv else f"{preset}-all" if all_folds else f"{preset}-fold{fold}"))
    layout = common.layout()
    layout.models.mkdir(parents=True, exist_ok=True)  # before the first epoch, not after it: where models go
    if not os.access(layout.models, os.W_OK):
        raise EscError(f"{layout.models}: cannot write models here", "fix the folder's permissions or use --data-dir")
    command = "esc " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    targets = [fold_name(name, k) for k in range(1, 6)] if cv else [name]
    if not (force or resume):
        taken = [t for t in targets if store.model_path(layout, t).exists()]
        if taken:
            resumable = any(saved_progress(store.model_path(layout, t)) for t in targets)
            raise EscError(f"a model named {taken[0]!r} exists already",
                           "use --name, --force to overwrite" + (", or --resume" if resumable else ""))
    if resume:
        check_resumable(name, [store.model_path(layout, t) for t in targets], cv)  # before the recipe is shown
    else:
        interrupted = [t for t in targets if saved_progress(store.model_path(layout, t))]
        if interrupted:
            common.warn_line(f"an interrupted training of {interrupted[0]} saved its progress; this run starts "
                             "over and replaces it (`--resume` continues it instead)")

    from esccli.cli.featurize import build_features

    fs = build_features(PRESETS[recipe.features])
    mean = f" ({recipe.ensemble_mean} mean)" if recipe.members > 1 and recipe.ensemble_mean != "arithmetic" else ""
    common.dim_line(f"recipe {preset}: {common.arch_label(recipe.member_archs(), recipe.members)}{mean}, {common.counted(recipe.epochs, 'epoch')}, batch {recipe.batch_size}, lr {recipe.lr:g}, "
                    f"device {dev} ({precision})" + ("" if cv else f", {'all folds' if held_out is None else f'fold {held_out} held out'}"))
    weights = recipe.member_weights()
    for k in range(recipe.members):  # members with settings of their own (the default's texture networks)
        m = recipe.member(k)
        if m.arch != recipe.arch:
            heard = " + modulation statistics" if m.arch_args.get("modulation") else ""
            offset = recipe.member_seed(seed, k) - seed
            common.dim_line(f"member {k + 1}: {m.arch}{heard}, {common.counted(m.epochs, 'epoch')}, batch {m.batch_size}, "
                            f"lr {m.lr:g}" + (f", seed +{offset}" if offset else "")
                            + (f", weight {weights[k]:.3g}" if weights[k] != 1 else ""))
    if member_jobs > 1:
        common.dim_line(f"up to {member_jobs} networks train side by side, each in its own process, without per-epoch "
                        "lines (--jobs 1 trains them one at a time and shows each epoch)")

    with common.progress_bar(transient=True) as bar:
        task = bar.add_task("epoch", total=None)

        def on_step(step: int, steps: int) -> None:
            bar.update(task, completed=step, total=steps)

        def on_epoch(s, prefix: str = "") -> None:
            bar.console.print(epoch_line(s, prefix), highlight=False)
            bar.update(task, completed=0, description=f"{prefix}epoch {s.epoch + 1}" if s.epoch < s.epochs else "done")

        if cv:
            result = run_cv(fs, recipe, layout.models, name, seed=seed, device=dev, jobs=jobs or 1, resume=resume, threads=threads,
                            command=command, precision=precision, overwrite=force,
                            on_epoch=lambda k, s: on_epoch(s, f"fold {k} "), on_step=on_step,
                            on_fold=lambda k, acc, secs: bar.console.print(
                                f"[bold]fold {k}: {acc:.1%}[/] ({common.duration(secs)})"))
        else:
            result = train_model(fs, recipe, store.model_path(layout, name), fold=held_out, seed=seed, device=dev,
                                 resume=resume, save_best=save_best, name=name, command=command,
                                 on_epoch=on_epoch, on_step=on_step, precision=precision,
                                 member_jobs=member_jobs, member_threads=threads)

    if cv:
        render_cv(result, as_json)
    else:
        render_run(result, as_json)


def render_cv(result, as_json: bool) -> None:
    from rich.table import Table

    mean, std = result.mean_std
    if as_json:
        d = result.to_dict()
        common.print_json({**d, "folds": {k: common.stored_float(v) for k, v in d["folds"].items()},
                           "mean": common.stored_float(d["mean"]), "std": common.stored_float(d["std"])})
        return
    t = Table(title=f"5-fold cross-validation: {result.name}")
    t.add_column("fold", justify="right")
    t.add_column("accuracy", justify="right")
    t.add_column("minutes", justify="right")
    for k in sorted(result.folds):
        t.add_row(str(k), f"{result.folds[k]:.2%}", f"{result.seconds[k] / 60:.1f}")
    t.add_row("mean", f"{mean:.2%} ± {std:.2%}", f"{sum(result.seconds.values()) / 60 / len(result.seconds):.1f}",
              style="bold")
    common.err.print(t)
    common.out.print(f"{mean:.4f} {std:.4f}")


def render_run(result, as_json: bool) -> None:
    from rich.table import Table

    t_meta = result.meta["train"]
    metrics = t_meta["metrics"]
    if as_json:
        members = {"member_epochs": [m.get("epochs") for m in t_meta["members"]]} if t_meta.get("members") else {}
        common.print_json({"name": result.meta["name"], "path": str(result.path), "fold": t_meta["fold"],
                           "epochs": t_meta["epochs_done"], **members, "seconds": t_meta["seconds"], **metrics,
                           "val_acc": common.stored_float(metrics.get("val_acc"))})
        return
    t = Table(title=f"trained {result.meta['name']}")
    t.add_column("")
    t.add_column("")
    t.add_row("model file", str(result.path))
    t.add_row("held-out fold", str(t_meta["fold"]) if t_meta["fold"] else "none (trained on all folds)")
    epochs = [m.get("epochs", t_meta["epochs_done"]) for m in t_meta.get("members", [])]
    # an ensemble whose members trained for different numbers of epochs shows each one's
    shown = " + ".join(map(str, epochs)) if len(set(epochs)) > 1 else str(t_meta["epochs_done"])
    t.add_row("epochs", shown + (f" (resumed after {result.resumed_from})" if result.resumed_from else ""))
    if t_meta.get("members"):  # an ensemble: the wall time of this run, and each member's own training
        loops = " + ".join(common.duration(m["seconds"]) for m in t_meta["members"])
        t.add_row("time", f"{common.duration(t_meta['wall_seconds'])} (networks: {loops})")
    else:
        t.add_row("time", common.duration(t_meta["seconds"]))
    if metrics.get("val_acc") is not None:
        t.add_row("final-epoch accuracy", f"{metrics['val_acc']:.2%}")
    common.err.print(t)
    common.out.print(str(result.path))
