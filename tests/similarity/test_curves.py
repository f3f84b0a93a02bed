"""Training curves: one figure, saved by training (curves.png) and embedded by the report."""

from __future__ import annotations

import io

from PIL import Image

from report.figures import training_figure
from similarity.curves import history_figure, plot_history

HISTORY = [{"epoch": e, "train_loss": 1.0 / e, "lr": 1e-3 * 0.5 ** e, "seconds": 30.0, "images_per_second": 900.0,
            "val_precision_at_1": 0.5 + 0.05 * e, "val_knn_accuracy": 0.6 + 0.04 * e} for e in range(1, 5)]


def test_panels_and_plotted_keys():
    axes = history_figure(HISTORY).axes
    assert [ax.get_title() for ax in axes] == ["Loss", "Learning rate", "Validation metrics"]
    plotted = [[line.get_label() for line in ax.lines] for ax in axes]
    assert plotted == [["train_loss"], ["lr"], ["val_precision_at_1", "val_knn_accuracy"]]  # no throughput
    assert axes[1].get_yscale() == "log"
    # a history without validation (fixed schedule) has no metrics panel
    assert len(history_figure([{k: row[k] for k in ("epoch", "train_loss", "lr")} for row in HISTORY]).axes) == 2


def test_training_and_report_write_the_same_figure(tmp_path):
    plot_history(HISTORY, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as saved, Image.open(io.BytesIO(training_figure(HISTORY))) as embedded:
        assert saved.format == embedded.format == "PNG"
        ratio = (saved.width / saved.height, embedded.width / embedded.height)
        assert abs(ratio[0] - ratio[1]) < 0.05 and saved.width > 500
