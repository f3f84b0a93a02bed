"""Static figures of the report as PNG bytes: t-SNE scatter, confusion heat map, per-class accuracy, training curves.

Uses matplotlib's object API (``Figure`` + Agg canvas), never pyplot, so no global figure state or backend switch.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from similarity.curves import history_figure


def class_colours(num_classes: int) -> list[str]:
    """One hex colour per class: tab10 / tab20 when they suffice, else evenly spaced turbo."""
    if num_classes <= 10:
        cmap, values = matplotlib.colormaps["tab10"], np.arange(num_classes)
    elif num_classes <= 20:
        cmap, values = matplotlib.colormaps["tab20"], np.arange(num_classes)
    else:
        cmap, values = matplotlib.colormaps["turbo"], np.linspace(0.05, 0.95, num_classes)
    return [matplotlib.colors.to_hex(cmap(v)) for v in values]


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return buffer.getvalue()


def tsne_figure(coords: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> bytes:
    """coords: (m, 2), labels: (m,) int64 -> PNG of the scatter coloured by class, with a legend."""
    colours = class_colours(len(class_names))
    fig = Figure(figsize=(9, 7.5))
    ax = fig.add_subplot()
    size = float(np.clip(3000 / max(len(coords), 1), 2, 30))
    for label in np.unique(labels):
        points = coords[labels == label]
        ax.scatter(points[:, 0], points[:, 1], s=size, c=colours[label], label=class_names[label],
                   alpha=0.75, linewidths=0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"t-SNE of {len(coords)} embeddings")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, markerscale=max(1.0, 6 / size),
              ncol=1 if len(class_names) <= 25 else 2, frameon=False)
    return _png(fig)


def confusion_figure(confusion: np.ndarray, class_names: Sequence[str]) -> bytes:
    """(C, C) counts -> PNG heat map of row-normalised shares (row = true class), counts written in small ones."""
    num = len(class_names)
    totals = confusion.sum(axis=1, keepdims=True)
    shares = np.divide(confusion, totals, out=np.zeros(confusion.shape), where=totals > 0)
    side = float(np.clip(0.45 * num + 3, 5, 20))
    fig = Figure(figsize=(side + 1.5, side))
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ax.set_xticks(np.arange(num), labels=class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(np.arange(num), labels=class_names, fontsize=8)
    ax.set_xlabel("predicted class (kNN vote)")
    ax.set_ylabel("true class")
    if num <= 25:
        for (row, col), count in np.ndenumerate(confusion):
            if count:
                ax.text(col, row, str(count), ha="center", va="center", fontsize=7,
                        color="white" if shares[row, col] > 0.5 else "black")
    ax.set_title("Confusion matrix")
    return _png(fig)


def per_class_figure(accuracy: np.ndarray, class_names: Sequence[str], overall: float) -> bytes:
    """accuracy: (C,) shares, NaN for classes without queries -> PNG of horizontal bars, overall as a line."""
    num = len(class_names)
    fig = Figure(figsize=(8, float(np.clip(0.3 * num + 1.5, 3, 30))))
    ax = fig.add_subplot()
    rows = np.arange(num)
    values = np.nan_to_num(accuracy, nan=0.0)
    colours = ["#d62728" if v < overall else "#2ca02c" for v in values]
    ax.barh(rows, values, color=colours)
    ax.set_yticks(rows, labels=class_names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.axvline(overall, color="black", linestyle="--", linewidth=1)
    for row, value in zip(rows, accuracy):
        inside = not np.isnan(value) and value > 0.2
        ax.text(value - 0.01 if inside else np.nan_to_num(value) + 0.01, row,
                "n/a" if np.isnan(value) else f"{value:.3f}", va="center", ha="right" if inside else "left",
                fontsize=7, color="white" if inside else "black")
    ax.set_xlabel("kNN accuracy")
    ax.set_title(f"Per-class accuracy (dashed: overall {overall:.3f}; red: below it)")
    return _png(fig)


def training_figure(history: Sequence[dict]) -> bytes:
    """Per-epoch dicts -> PNG of the training curves, drawn by :func:`similarity.curves.history_figure` (the
    same figure training saves as ``curves.png``)."""
    return _png(history_figure(history))
