"""Training curves: the one figure of a training history, saved by training and embedded by the report.

Uses matplotlib's object API (``Figure``, never pyplot), so it never changes the caller's backend (a notebook
keeps showing its inline figures after training). matplotlib is imported on first use only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# bookkeeping columns of a history row, not curves
NOT_PLOTTED = ("epoch", "seconds", "images_per_second")
TITLES = {"loss": "Loss", "metrics": "Validation metrics", "lr": "Learning rate"}


def history_figure(history: Sequence[dict]) -> Figure:
    """Per-epoch dicts ({"epoch": 1, "train_loss": ..., "val_...": ..., "lr": ...}) -> a figure with up to 3
    panels against the epoch: losses, validation metrics, learning rate (log scale). Other numeric keys go
    with the metrics; ``epoch``, ``seconds`` and ``images_per_second`` are not plotted."""
    from matplotlib.figure import Figure

    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]
    keys = [key for key in dict.fromkeys(k for row in history for k in row)
            if key not in NOT_PLOTTED and any(_is_number(r.get(key)) for r in history)]
    panels = {"loss": [k for k in keys if "loss" in k], "lr": [k for k in keys if k in ("lr", "learning_rate")]}
    panels["metrics"] = [k for k in keys if k not in panels["loss"] and k not in panels["lr"]]
    panels = {name: ks for name, ks in panels.items() if ks}
    fig = Figure(figsize=(5 * max(len(panels), 1), 4))
    for i, (name, panel_keys) in enumerate(panels.items()):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for key in panel_keys:
            xs = [e for e, row in zip(epochs, history) if _is_number(row.get(key))]
            ys = [float(row[key]) for row in history if _is_number(row.get(key))]
            ax.plot(xs, ys, marker="o", markersize=3, label=key)
        if name == "lr" and all(float(r[k]) > 0 for k in panel_keys for r in history if _is_number(r.get(k))):
            ax.set_yscale("log")
        ax.set_xlabel("epoch")
        ax.set_title(TITLES[name])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return fig


def plot_history(history: Sequence[dict], path: str | os.PathLike) -> None:
    """Save :func:`history_figure` of ``history`` as a PNG at ``path``."""
    history_figure(history).savefig(path, format="png", dpi=110, bbox_inches="tight")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
        and bool(np.isfinite(value))
