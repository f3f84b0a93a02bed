"""Training curves as a PNG (loss and validation metrics per epoch).

Uses matplotlib's object API with the Agg canvas, so it never changes the caller's backend (a notebook
keeps showing its inline figures after training).
"""

from __future__ import annotations

import os


def plot_history(history: list[dict], path: str | os.PathLike) -> None:
    """Two panels: training loss, and validation precision@1 / kNN accuracy, against the epoch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    epochs = [row["epoch"] for row in history]
    fig = Figure(figsize=(10, 3.6))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.plot(epochs, [row["train_loss"] for row in history], marker="o")
    left.set(title="training loss", xlabel="epoch", ylabel="loss")
    for key, name in (("val_precision_at_1", "precision@1"), ("val_knn_accuracy", "kNN accuracy")):
        if history and key in history[0]:
            right.plot(epochs, [row[key] for row in history], marker="o", label=name)
    right.set(title="validation", xlabel="epoch", ylabel="fraction")
    if right.lines:
        right.legend()
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
