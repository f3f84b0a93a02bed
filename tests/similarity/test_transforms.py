"""Transforms survive pickling, so DataLoader workers started with ``spawn`` (macOS, Windows, Python 3.14) work."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from similarity.checkpoint import load_checkpoint
from similarity.config import PreprocessSpec
from similarity.transforms import eval_transform, train_transform

RGB_SPEC = PreprocessSpec(image_size=32, channels=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), resize=40)


@pytest.mark.parametrize("spec", [PreprocessSpec(), RGB_SPEC], ids=["gray", "rgb"])
def test_transforms_pickle_and_transform_alike(spec, sample_png):
    from PIL import Image

    image = Image.open(sample_png)
    image.load()
    transform = eval_transform(spec)
    copy = pickle.loads(pickle.dumps(transform))
    for picture in (image, image.convert("RGB")):
        assert torch.equal(copy(picture), transform(picture))
    for augment in (True, False):
        augmented = pickle.loads(pickle.dumps(train_transform(spec, augment)))(image)
        assert augmented.shape == (spec.channels, spec.image_size, spec.image_size)


def test_checkpoint_embedder_transform_pickles(checkpoint_path):
    embedder = load_checkpoint(checkpoint_path).embedder()
    pickle.dumps(embedder.transform)


@pytest.fixture
def spawn_start_method():
    """The start method macOS, Windows and Python 3.14 use by default, for this test only."""
    previous = mp.get_start_method(allow_none=True)
    mp.set_start_method("spawn", force=True)
    yield
    mp.set_start_method(previous, force=True)


def test_embed_data_with_spawned_workers(checkpoint_path, fmnist_folder, spawn_start_method):
    embedder = load_checkpoint(checkpoint_path).embedder()
    few = fmnist_folder.subset(np.arange(8))
    spawned = embedder.embed_data(few, batch_size=4, num_workers=1, progress=False)
    in_process = embedder.embed_data(few, batch_size=4, num_workers=0, progress=False)
    assert np.array_equal(spawned.kept, np.arange(8))
    assert np.array_equal(spawned.embeddings, in_process.embeddings)
