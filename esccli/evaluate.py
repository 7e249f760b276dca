"""Scoring a trained model on a held-out ESC-50 fold, with the feature parameters the model records."""

import csv
import io
from pathlib import Path

import numpy as np

from esccli.checkpoint import LoadedModel
from esccli.classes import CATEGORIES, CLASS_NAMES
from esccli.errors import EscError
from esccli.featurize import FeatureSet
from esccli.fsutil import atomic_write_text
from esccli.metrics import Report, report


def check_fold(lm: LoadedModel, fold: int | None, builtin: bool, allow_seen: bool) -> tuple[int, bool, str | None]:
    """The fold to score, whether it is a genuine held-out score, and a note when it is not."""
    trained_fold = lm.fold
    t = lm.meta["train"]
    if fold is None:
        if trained_fold is None:
            who = "the built-in model" if builtin else f"model {lm.name}"
            raise EscError(f"{who} was trained on all five folds: there is no held-out fold to score it on",
                           "train a model of your own with `esc train`, or pass --fold N --allow-seen "
                           "for a score that is not held out")
        fold = trained_fold
    seen = trained_fold is None or fold != trained_fold
    if seen and not allow_seen:
        what = "the built-in model was trained on all five folds" if builtin else \
            f"model {lm.name} was trained on fold {fold} (it held out fold {trained_fold})"
        raise EscError(f"{what}: its score on fold {fold} would not be a held-out result",
                       "pass --allow-seen to compute it anyway")
    note = None
    if seen:
        note = f"fold {fold} was in this model's training data: this is NOT a held-out score"
    elif t.get("selected_on_fold"):
        note = (f"this model's epoch was picked by its accuracy on fold {fold}: the score is optimistic, "
                "not a clean held-out result")
    return fold, not seen and not t.get("selected_on_fold"), note


def evaluate(lm: LoadedModel, fs: FeatureSet, fold: int, device: str = "cpu") -> Report:
    import torch

    from esccli.models import needs_modulation
    from esccli.train import predict_logits

    if fs.params != lm.params:
        raise EscError("the features do not match the model's feature parameters")
    idx = np.flatnonzero(fs.folds == fold)
    if idx.size == 0:
        raise EscError(f"fold {fold} has no clips in this dataset")
    x = torch.from_numpy(fs.features[idx].astype(np.float32)).unsqueeze(1)
    mods = fs.modulation_rows(idx) if needs_modulation(lm.model) else None
    logits = predict_logits(lm.model, x, device, modulation=mods)
    return report(fs.targets[idx], logits.argmax(1).numpy())


# the files write_outputs writes, in the order it writes them
OUTPUT_FILES = ("confusion.csv", "categories.csv", "per_class.csv", "confusion.png")


def check_out_dir(out_dir: Path, force: bool) -> None:
    """Refuse, before any work, an --out that is not a folder or that holds reports write_outputs would replace
    (unless `force`)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise EscError(f"{out_dir}: exists and is not a folder", "give --out a folder (it is created if missing)")
    taken = [name for name in OUTPUT_FILES if (out_dir / name).exists()]
    if taken and not force:
        raise EscError(f"{out_dir} already holds {', '.join(taken)}",
                       "use --force to overwrite, or --out to choose another folder")


def write_outputs(rep: Report, out_dir: Path) -> list[Path]:
    """OUTPUT_FILES in out_dir (each written atomically)."""
    from esccli.plotting import confusion_heatmap

    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EscError(f"cannot create {out_dir}: {e.strerror}") from None
    written = []

    def table(name: str, header: list, rows: list) -> None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)
        try:
            atomic_write_text(out_dir / name, buf.getvalue())
        except OSError as e:  # a full disk: say which file, and that those before it are whole
            raise EscError(f"cannot write {out_dir / name}: {e.strerror or e}{_written(written)}") from None
        written.append(out_dir / name)

    table("confusion.csv", ["true\\predicted", *CLASS_NAMES],
          [[CLASS_NAMES[i], *rep.matrix[i].tolist()] for i in range(len(CLASS_NAMES))])
    table("categories.csv", ["true\\predicted", *CATEGORIES],
          [[CATEGORIES[i], *rep.category_matrix[i].tolist()] for i in range(len(CATEGORIES))])
    table("per_class.csv", ["class", "support", "recall", "precision", "f1", "most_confused_with", "count"],
          [[c.name, c.support, f"{c.recall:.4f}", f"{c.precision:.4f}", f"{c.f1:.4f}", c.confused_with or "",
            c.confused_count] for c in rep.per_class])
    png = out_dir / OUTPUT_FILES[-1]
    try:
        confusion_heatmap(rep.matrix, list(CLASS_NAMES), png,
                          title=f"confusion ({rep.clips} clips, accuracy {rep.accuracy:.1%})")
    except EscError as e:
        raise EscError(f"{e.message}{_written(written)}") from None
    written.append(png)
    return written


def _written(written: list[Path]) -> str:
    """What a failed write_outputs leaves, for its message."""
    return f"; {', '.join(p.name for p in written)} written (use --force to replace them)" if written else ""
