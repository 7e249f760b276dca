"""Scores from predictions: confusion matrices, accuracy, per-class precision/recall, macro F1, worst confusions.

Pure numpy functions of (true targets, predicted targets); rows of a confusion matrix are true classes,
columns predicted ones.
"""

from dataclasses import asdict, dataclass

import numpy as np

from esccli.classes import CATEGORIES, CLASS_NAMES, category_index


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(CLASS_NAMES)) -> np.ndarray:
    m = np.zeros((n, n), np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def category_confusion(matrix: np.ndarray) -> np.ndarray:
    """Fold a 50x50 class matrix into the 5x5 matrix of ESC-50's categories."""
    k = len(CATEGORIES)
    cats = np.array([category_index(i) for i in range(matrix.shape[0])])
    out = np.zeros((k, k), np.int64)
    np.add.at(out, (cats[:, None].repeat(matrix.shape[1], 1), cats[None, :].repeat(matrix.shape[0], 0)), matrix)
    return out


@dataclass
class ClassScore:
    name: str
    support: int
    recall: float  # = the class's accuracy
    precision: float
    f1: float
    confused_with: str | None  # the class it is most often mistaken for
    confused_count: int


@dataclass
class Report:
    clips: int
    accuracy: float
    macro_f1: float
    per_class: list[ClassScore]  # worst recall first
    top_confusions: list[tuple[str, str, int]]  # (true, predicted, count), most frequent first
    matrix: np.ndarray
    category_matrix: np.ndarray
    category_accuracy: float

    def to_dict(self) -> dict:
        return {
            "clips": self.clips, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
            "category_accuracy": self.category_accuracy,
            "per_class": [asdict(c) for c in self.per_class],
            "top_confusions": [{"true": t, "predicted": p, "count": n} for t, p, n in self.top_confusions],
            "confusion_matrix": self.matrix.tolist(), "category_matrix": self.category_matrix.tolist(),
            "classes": list(CLASS_NAMES), "categories": list(CATEGORIES),
        }


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(a.shape, float), where=b > 0)


def report(y_true: np.ndarray, y_pred: np.ndarray, top: int = 10) -> Report:
    m = confusion(y_true, y_pred)
    tp = np.diag(m).astype(float)
    support = m.sum(1)
    predicted = m.sum(0)
    recall = _safe_div(tp, support.astype(float))
    precision = _safe_div(tp, predicted.astype(float))
    f1 = _safe_div(2 * precision * recall, precision + recall)
    present = support > 0
    off = m.copy()
    np.fill_diagonal(off, 0)
    per_class = []
    for i in np.flatnonzero(present):
        j = int(off[i].argmax())
        per_class.append(ClassScore(CLASS_NAMES[i], int(support[i]), float(recall[i]), float(precision[i]), float(f1[i]),
                                    CLASS_NAMES[j] if off[i, j] else None, int(off[i, j])))
    per_class.sort(key=lambda c: (c.recall, c.f1, c.name))
    pairs = np.argwhere(off > 0)
    confusions = sorted(((CLASS_NAMES[i], CLASS_NAMES[j], int(off[i, j])) for i, j in pairs), key=lambda t: (-t[2], t[0], t[1]))
    cm = category_confusion(m)
    n = int(m.sum())
    return Report(
        clips=n,
        accuracy=float(tp.sum() / n) if n else 0.0,
        macro_f1=float(f1[present].mean()) if present.any() else 0.0,
        per_class=per_class,
        top_confusions=confusions[:top],
        matrix=m,
        category_matrix=cm,
        category_accuracy=float(np.trace(cm) / n) if n else 0.0,
    )


def mean_std(values: list[float]) -> tuple[float, float]:
    a = np.asarray(values, float)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0
