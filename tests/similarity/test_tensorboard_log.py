"""TensorBoard event files beside curves.png when tensorboard is installed; without it, training runs as before."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.tensorboard_log import TensorBoardLog, event_files, scalar_tag, thumbnail_array
from similarity.train import train
from tests.conftest import tiny_config


def test_training_writes_scalars_and_a_projector_sample(trained):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = Path(trained.checkpoint_path).parent / "tensorboard"
    assert trained.tensorboard_dir == str(log_dir) and event_files(log_dir)
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "lr", "val/knn_accuracy", "val/precision_at_1"} <= tags
    assert [event.step for event in events.Scalars("loss/train")] == [1, 2]
    assert events.Scalars("lr")[-1].value == pytest.approx(trained.history[-1]["lr"])
    projector = (log_dir / "projector_config.pbtxt").read_text()
    assert "metadata.tsv" in projector and "sprite.png" in projector
    metadata = next(log_dir.rglob("metadata.tsv")).read_text().split("\n")
    assert len([line for line in metadata if line]) == 120  # the whole (120-image) validation set, labelled
    with Image.open(next(log_dir.rglob("sprite.png"))) as sprite:
        assert sprite.size[0] >= 32 * 10


def test_without_tensorboard_training_runs_as_before(fmnist_small, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    caplog.set_level("INFO", logger="similarity.tensorboard_log")
    config = tiny_config(epochs=1, threads=1)
    config = replace(config, model=replace(config.model, width=8))
    result = train(fmnist_small.subset(np.arange(0, 600, 3)), config, tmp_path / "run", progress=False)
    assert result.tensorboard_dir is None and not (tmp_path / "run" / "tensorboard").exists()
    assert (tmp_path / "run" / "curves.png").is_file()
    assert "tensorboard is not installed" in caplog.text


def test_a_disabled_log_accepts_everything():
    board = TensorBoardLog(None)
    board.log_epoch({"epoch": 1, "train_loss": 0.5})
    board.log_embeddings(np.zeros((2, 4), np.float32), ["a", "b"], None, 1)
    board.close()
    assert not board.enabled and board.log_dir is None


def test_tags_and_thumbnails():
    assert [scalar_tag(k) for k in ("train_loss", "val_knn_accuracy", "lr", "other")] == [
        "loss/train", "val/knn_accuracy", "lr", "other/other"]
    thumbs = thumbnail_array([Image.new("L", (28, 28), 0), Image.new("RGB", (300, 100), (255, 0, 0))], size=32)
    assert thumbs.shape == (2, 3, 32, 32) and thumbs.dtype == np.float32
    assert thumbs[0, :, 2:30, 2:30].max() == 0.0  # the grey image, centred on white
    assert thumbs[1, 0, 16, 16] == 1.0 and thumbs[1, 1, 16, 16] == 0.0 and thumbs[1, 1, 0, 16] == 1.0
