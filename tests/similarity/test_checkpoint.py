"""Checkpoints: identical embeddings after a round trip, clear errors for bad files."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from similarity.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from similarity.config import PreprocessSpec, TrainConfig


def test_round_trip_gives_identical_embeddings(checkpoint_path, fmnist_small, tmp_path):
    first = load_checkpoint(checkpoint_path)
    copy = tmp_path / "copy.pt"
    sha = save_checkpoint(copy, first.model, first.config, first.class_names, history=first.history,
                          metrics=first.metrics, extra=first.extra)
    second = load_checkpoint(copy)
    assert second.sha256 == sha
    assert second.config == first.config and second.class_names == first.class_names
    assert second.preprocess == PreprocessSpec(**{**second.preprocess.__dict__})
    images = [fmnist_small.load(i) for i in range(32)]
    a = first.embedder().embed_images(images)
    b = second.embedder().embed_images(images)
    assert a.shape == (32, first.config.model.embedding_dim) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_checkpoint_carries_what_the_embedder_needs(checkpoint_path):
    ckpt = load_checkpoint(checkpoint_path)
    assert ckpt.class_names[0] == "T-shirt/top" and len(ckpt.class_names) == 10
    assert ckpt.preprocess.image_size == 28 and ckpt.preprocess.channels == 1
    assert {"torch", "torchvision", "simsearch"} <= set(ckpt.versions)
    assert ckpt.versions["simsearch"] == importlib.metadata.version("simsearch")  # the installed package's
    assert ckpt.history and "val_knn_accuracy" in ckpt.history[0]
    assert ckpt.extra["split"]["val"] and ckpt.model_info()["embedding_dim"] == 128
    assert len(ckpt.sha256) == 64


def test_bad_files_give_clear_errors(checkpoint_path, tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(Path(checkpoint_path).read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, other)
    with pytest.raises(CheckpointError, match="not a simsearch checkpoint"):
        load_checkpoint(other)


def test_incompatible_checkpoint_is_refused(checkpoint_path, tmp_path):
    payload = torch.load(checkpoint_path, weights_only=True)
    payload["format_version"] = 99
    future = tmp_path / "future.pt"
    torch.save(payload, future)
    with pytest.raises(CheckpointError, match="format version 99"):
        load_checkpoint(future)
    payload = torch.load(checkpoint_path, weights_only=True)
    payload["config"]["model"]["embedding_dim"] = 64  # weights are 128-d
    mismatch = tmp_path / "mismatch.pt"
    torch.save(payload, mismatch)
    with pytest.raises(CheckpointError, match="does not match"):
        load_checkpoint(mismatch)


def test_failed_save_keeps_the_previous_file(checkpoint_path, tmp_path):
    target = tmp_path / "model.pt"
    shutil.copyfile(checkpoint_path, target)
    before = target.read_bytes()
    ckpt = load_checkpoint(target)
    with pytest.raises(TypeError):
        save_checkpoint(target, ckpt.model, ckpt.config, ckpt.class_names, extra={"bad": object()})
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
