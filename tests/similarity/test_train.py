"""The training loop: it learns, records curves, keeps the best epoch, honours samplers and limits."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from similarity.checkpoint import load_checkpoint
from similarity.config import SamplerConfig, LossConfig
from similarity.schedule import FLOOR
from similarity.batches import decode_into_memory
from similarity.train import train
from similarity.transforms import eval_transform, pixels_to_tensor
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
    stopped = train(fmnist_small, tiny_config(epochs=12, patience=1, lr=1e-7), tmp_path / "es", progress=False)
    assert stopped.stopped_because.startswith("early stop")
    # epochs without improvement count only in the last quarter of the schedule (epoch 9 of 12 on)
    assert 9 <= len(stopped.history) < 12
    # no time at all (max_minutes: the deprecated name of budget_minutes): one epoch, cut short, LR annealed
    config = tiny_config(epochs=30, max_minutes=1e-6)
    timed = train(fmnist_small, config, tmp_path / "t", progress=False)
    assert len(timed.history) == 1 and timed.stopped_because.startswith("time budget")
    assert timed.history[0]["lr"] == pytest.approx(config.lr * FLOOR)


def test_file_backed_colour_training_with_workers(fmnist_folder, tmp_path):
    """Colour input is decoded per image in DataLoader workers (grayscale is decoded into memory first)."""
    config = replace(tiny_config(epochs=1, num_workers=1), sampler=SamplerConfig(kind="m_per_class", m_per_class=4))
    config = replace(config, preprocess=replace(config.preprocess, channels=3, mean=(0.286,) * 3, std=(0.353,) * 3))
    assert decode_into_memory(fmnist_folder, config.preprocess) is fmnist_folder
    result = train(fmnist_folder, config, tmp_path / "files", progress=False)
    assert result.history[0]["train_loss"] > 0 and Path(result.checkpoint_path).exists()


def test_file_backed_grayscale_is_decoded_into_memory_as_embedding_sees_it(fmnist_folder, fmnist_small):
    spec = tiny_config().preprocess
    decoded = decode_into_memory(fmnist_folder, spec)
    assert decoded.in_memory and decoded.paths is None
    assert decoded.ids == fmnist_folder.ids and np.array_equal(decoded.labels, fmnist_folder.labels)
    assert np.array_equal(decoded.pixels, fmnist_small.pixels)  # PNG is lossless: the IDX pixels come back
    # the in-memory tensors are exactly what the per-image eval transform gives
    from_files = torch.stack([eval_transform(spec)(fmnist_folder.load(i)) for i in range(8)])
    assert torch.equal(pixels_to_tensor(decoded.pixels[:8], spec), from_files)
    # another input size: resized and centre-cropped as eval_transform does, still exactly
    small = replace(spec, image_size=20)
    resized = decode_into_memory(fmnist_folder, small)
    assert resized.pixels.shape[1:] == (20, 20)
    assert torch.equal(pixels_to_tensor(resized.pixels[:4], small),
                       torch.stack([eval_transform(small)(fmnist_folder.load(i)) for i in range(4)]))


def test_bf16_training_learns(fmnist_small, tmp_path):
    result = train(fmnist_small, tiny_config(precision="bf16"), tmp_path / "bf16", progress=False)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    assert result.val_metrics["knn_accuracy@10"] > 0.3
    with pytest.raises(ValueError, match="precision"):
        tiny_config(precision="fp8")
