"""Shared fixtures: tiny real data (Fashion-MNIST subsets, written as real PNG files), a really
trained small model and a real FAISS index built from it. Session-scoped: built once per run."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")

from similarity.config import TrainConfig  # noqa: E402
from similarity.data import LabelledImages, export_to_folder, load_fashion_mnist  # noqa: E402
from similarity.presets import fashion_mnist_full  # noqa: E402


def tiny_config(**changes) -> TrainConfig:
    base = replace(fashion_mnist_full(), epochs=2, batch_size=64, val_fraction=0.2, max_minutes=0.0,
                   patience=0, threads=2, compile=False)
    return replace(base, **changes)


@pytest.fixture(scope="session")
def fmnist_train() -> LabelledImages:
    return load_fashion_mnist(None, "train")


@pytest.fixture(scope="session")
def fmnist_small(fmnist_train) -> LabelledImages:
    """600 training images, 60 per class, seeded."""
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(fmnist_train.labels == c), 60, replace=False)
                          for c in range(10)])
    return fmnist_train.subset(np.sort(idx))


@pytest.fixture(scope="session")
def fmnist_folder(fmnist_small, tmp_path_factory) -> LabelledImages:
    """The same 600 images as real PNG files in one folder per class."""
    return export_to_folder(fmnist_small, tmp_path_factory.mktemp("fmnist_png"))


@pytest.fixture(scope="session")
def trained(fmnist_small, tmp_path_factory):
    """A small CNN really trained for 2 epochs on 480 images (a few seconds on 2 cores)."""
    from similarity.train import train

    out = tmp_path_factory.mktemp("run")
    return train(fmnist_small, tiny_config(), out, progress=False)


@pytest.fixture(scope="session")
def checkpoint_path(trained) -> str:
    return trained.checkpoint_path


@pytest.fixture(scope="session")
def built_index(checkpoint_path, fmnist_folder, tmp_path_factory) -> str:
    """A Flat index of the 600 PNGs built with the trained checkpoint (read-only: copy before writing)."""
    from engine.build import build_index

    out = tmp_path_factory.mktemp("idx") / "index"
    build_index(checkpoint_path, fmnist_folder, out, progress=False)
    return str(out)


@pytest.fixture
def index_copy(built_index, tmp_path) -> str:
    """A private, writable copy of ``built_index``."""
    import shutil

    target = tmp_path / "index"
    shutil.copytree(built_index, target)
    return str(target)


@pytest.fixture
def sample_png(fmnist_folder) -> Path:
    return Path(fmnist_folder.paths[0])
