"""`esc eval`: score a stored model on its held-out fold and show where it fails."""

from pathlib import Path
from typing import Optional

import typer

from esccli.cli import common


def evaluate(
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="NAME|PATH", help="Model name or file [default: the default model]."),
    fold: Optional[int] = typer.Option(None, "--fold", min=1, max=5, metavar="K", help="Fold to score [default: the model's held-out fold]."),
    allow_seen: bool = typer.Option(False, "--allow-seen", help="Score a fold the model was trained on (not a held-out result)."),
    full: bool = typer.Option(False, "--full", help="Also print the 50x50 confusion matrix."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR", help="Write confusion.csv/.png, categories.csv and per_class.csv in this folder."),
    force: bool = typer.Option(False, "--force", help="Overwrite reports already in the --out folder."),
    device: common.Device = typer.Option(common.Device.auto, "--device", metavar=common.DEVICE_METAVAR, help="Where the network runs."),
    as_json: bool = typer.Option(False, "--json", help="Print all metrics as JSON on stdout."),
) -> None:
    """Evaluate a trained model: accuracy, F1, per-class and category confusions."""
    from esccli import store
    from esccli.cli.featurize import build_features
    from esccli.evaluate import check_fold, check_out_dir, evaluate as run_eval, write_outputs
    from esccli.train import pick_device

    if out:
        check_out_dir(out, force)  # before the work, not after it
    layout = common.layout()
    dev = pick_device(device.value)
    lm, builtin = store.load(layout, model, dev)
    if not model:
        common.warn_if_default_lost(layout, lm.name)
    fold, held_out, note = check_fold(lm, fold, builtin, allow_seen)
    fs = build_features(lm.params)
    rep = run_eval(lm, fs, fold, dev)
    written = write_outputs(rep, out) if out else []
    if as_json:
        common.print_json({"model": lm.name, "path": str(lm.path), "fold": fold, "held_out": held_out, "note": note,
                           **rep.to_dict(), "files": [str(p) for p in written]})
        return
    if note:
        common.note_line(note)
    render(lm.name, fold, rep, full)
    for p in written:
        common.dim_line(f"wrote {p}")


def render(name: str, fold: int, rep, full: bool) -> None:
    from rich.table import Table

    from esccli.classes import CATEGORIES, CLASS_NAMES

    con = common.out
    con.print(f"[bold]{name}[/] on fold {fold}: accuracy [bold]{rep.accuracy:.2%}[/] "
              f"({int(rep.matrix.trace())}/{rep.clips}), macro F1 {rep.macro_f1:.3f}, category accuracy {rep.category_accuracy:.2%}")

    cats = Table(title="categories (rows: true, columns: predicted)")
    cats.add_column("")
    short = [c.split()[0].split("/")[0] for c in CATEGORIES]
    for s in short:
        cats.add_column(s, justify="right")
    for i, c in enumerate(CATEGORIES):
        cats.add_row(c, *[f"[bold]{v}[/]" if i == j else (str(v) if v else "·") for j, v in enumerate(rep.category_matrix[i])])
    con.print(cats)

    pc = Table(title="per class, worst first")
    for col, just in (("class", "left"), ("recall", "right"), ("precision", "right"), ("F1", "right"),
                      ("most confused with", "left")):
        pc.add_column(col, justify=just)
    for c in rep.per_class:
        pc.add_row(c.name, f"{c.recall:.0%}", f"{c.precision:.0%}", f"{c.f1:.2f}",
                   f"{c.confused_with} ({c.confused_count})" if c.confused_with else "")
    con.print(pc)

    if rep.top_confusions:
        tc = Table(title="most confused pairs")
        tc.add_column("true")
        tc.add_column("predicted as")
        tc.add_column("clips", justify="right")
        for t, p, n in rep.top_confusions:
            tc.add_row(t, p, str(n))
        con.print(tc)

    if full:
        # 50 columns of 2-character counts fit in ~160 columns; classes are numbered, names listed once
        lines = ["     " + " ".join(f"{j:>2}" for j in range(len(CLASS_NAMES)))]
        for i, row in enumerate(rep.matrix):
            cells = " ".join((f"{v:>2}" if v else " ·") for v in row)
            lines.append(f"{i:>2}   {cells}  {CLASS_NAMES[i]}")
        con.print("confusion matrix (rows: true, columns: predicted, numbered as the rows)")
        con.print("\n".join(lines), highlight=False, markup=False)
