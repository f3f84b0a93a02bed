"""Classification quality of the kNN vote: per-class accuracy, confusion matrix, most confused pairs."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix


def class_confusion(true_labels: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Confusion counts (num_classes, num_classes) int64: row = true class, column = predicted class."""
    return confusion_matrix(true_labels, predicted, labels=np.arange(num_classes)).astype(np.int64)


def per_class_accuracy(confusion: np.ndarray) -> np.ndarray:
    """Accuracy per true class (C,) float64 from a (C, C) confusion matrix; NaN for classes with no query."""
    totals = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, np.diag(confusion) / totals, np.nan)


def most_confused_pairs(confusion: np.ndarray, class_names: list[str], top: int) -> list[dict]:
    """The ``top`` off-diagonal cells of a (C, C) confusion matrix with the most queries, largest first.

    Each entry: true/predicted class index and name, count, and share of the true class's queries.
    """
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    flat = np.argsort(-off_diagonal, axis=None, kind="stable")[:top]
    totals = confusion.sum(axis=1)
    pairs = []
    for true, pred in zip(*np.unravel_index(flat, confusion.shape)):
        count = int(off_diagonal[true, pred])
        if count == 0:
            break
        pairs.append({"true": int(true), "predicted": int(pred), "true_name": class_names[true],
                      "predicted_name": class_names[pred], "count": count,
                      "share_of_true": count / int(totals[true])})
    return pairs
