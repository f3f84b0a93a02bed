"""The training loop: it learns, records curves, keeps the best epoch, honours samplers and limits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from similarity.checkpoint import load_checkpoint
from similarity.config import SamplerConfig, LossConfig
from similarity.schedule import FLOOR
from similarity.train import train
from tests.conftest import tiny_config


def test_training_learns_and_writes_curves(trained):
    out = Path(trained.checkpoint_path).parent
    assert [row["epoch"] for row in trained.history] == [1, 2]
    assert trained.history[-1]["train_loss"] < trained.history[0]["train_loss"]
    # 120 validation images, 10 classes: chance is 0.1; two epochs on 480 images reach well above it
    assert trained.val_metrics["knn_accuracy@10"] > 0.3
    assert trained.images_per_second > 0
    assert json.loads((out / "history.json").read_text()) == trained.history
    with Image.open(out / "curves.png") as curves:
        assert curves.size[0] > 500
    ckpt = load_checkpoint(trained.checkpoint_path)
    assert ckpt.metrics["best_epoch"] == trained.best_epoch
    split = ckpt.extra["split"]
    assert len(split["train"]) == 480 and len(split["val"]) == 120
    assert not set(split["train"]) & set(split["val"])


def test_siamese_pairs_training_runs_and_is_reproducible(fmnist_small, tmp_path):
    config = tiny_config(epochs=1, loss=LossConfig(name="contrastive"), sampler=SamplerConfig(kind="pairs"))
    one = train(fmnist_small, config, tmp_path / "a", progress=False)
    two = train(fmnist_small, config, tmp_path / "b", progress=False)
    assert one.history[0]["train_loss"] == two.history[0]["train_loss"]
    a = load_checkpoint(one.checkpoint_path).embedder().embed_data(fmnist_small, progress=False).embeddings
    b = load_checkpoint(two.checkpoint_path).embedder().embed_data(fmnist_small, progress=False).embeddings
    assert np.array_equal(a, b)


def test_early_stopping_and_time_budget(fmnist_small, tmp_path):
    stopped = train(fmnist_small, tiny_config(epochs=30, patience=1, lr=1e-7), tmp_path / "es", progress=False)
    assert len(stopped.history) < 30 and stopped.stopped_because.startswith("early stop")
    # no time at all (max_minutes: the deprecated name of budget_minutes): one epoch, cut short, LR annealed
    config = tiny_config(epochs=30, max_minutes=1e-6)
    timed = train(fmnist_small, config, tmp_path / "t", progress=False)
    assert len(timed.history) == 1 and timed.stopped_because.startswith("time budget")
    assert timed.history[0]["lr"] == pytest.approx(config.lr * FLOOR)


def test_file_backed_training_with_workers(fmnist_folder, tmp_path):
    config = replace(tiny_config(epochs=1, num_workers=1), sampler=SamplerConfig(kind="m_per_class", m_per_class=4))
    result = train(fmnist_folder, config, tmp_path / "files", progress=False)
    assert result.history[0]["train_loss"] > 0 and Path(result.checkpoint_path).exists()
