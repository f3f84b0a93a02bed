"""Training batches: the batch sampler a config asks for, and augmented (images, labels) batches from it.

In-memory grayscale data stays in torch: a batch is sliced from a uint8 array, normalised and augmented as a
whole (:class:`~similarity.transforms.BatchAugment`). File-backed data is decoded and augmented per image in
DataLoader workers. :func:`decode_into_memory` moves a file-backed grayscale set onto the first path once.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from similarity.config import PreprocessSpec, TrainConfig
from similarity.data import LabelledImages
from similarity.samplers import ClassBalancedSampler, PairSampler, ShuffledBatches
from similarity.transforms import (BatchAugment, ConvertMode, ResizeCenterCrop, pixels_to_tensor, supports_fast_path,
                                   train_transform)
from similarity.workers import worker_context

IN_MEMORY_MAX_BYTES = 2**30  # file-backed grayscale training sets up to this size are decoded into memory once


class TrainDataset(Dataset):
    """(transformed image, label) of each item of ``data``."""

    def __init__(self, data: LabelledImages, transform):
        self.data, self.transform = data, transform

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int):
        return self.transform(self.data.load(i)), int(self.data.labels[i])


def make_batch_sampler(labels: np.ndarray, config: TrainConfig, rng: np.random.Generator):
    sampler = config.sampler
    if sampler.kind == "pairs":
        return PairSampler(labels, config.batch_size // 2, sampler.positive_fraction, rng)
    if sampler.kind == "m_per_class":
        return ClassBalancedSampler(labels, sampler.m_per_class, config.batch_size, rng)
    return ShuffledBatches(len(labels), config.batch_size, rng)


def iterate_batches(data: LabelledImages, batch_sampler, config: TrainConfig,
                    generator: torch.Generator) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield augmented (images, labels) batches. In-memory grayscale data stays in torch (fast path);
    file-backed data is decoded and augmented per image in DataLoader workers."""
    spec = config.preprocess
    if supports_fast_path(data.pixels, spec):
        augment = (BatchAugment.with_strength(config.augment_strength, generator, flip=config.augment_flip)
                   if config.augment else None)
        labels = torch.from_numpy(data.labels)
        for batch in batch_sampler:
            x = pixels_to_tensor(data.pixels[batch], spec)
            yield (augment(x) if augment else x), labels[batch]
        return
    transform = train_transform(spec, config.augment, config.augment_strength, flip=config.augment_flip)
    loader = DataLoader(TrainDataset(data, transform), batch_sampler=batch_sampler,
                        num_workers=config.num_workers, persistent_workers=False,
                        worker_init_fn=seed_worker, generator=generator,
                        multiprocessing_context=worker_context(config.num_workers))
    yield from loader


def decode_into_memory(data: LabelledImages, spec: PreprocessSpec, *, progress: bool = False) -> LabelledImages:
    """File-backed grayscale images decoded once into uint8 pixels at the model's input size, so that training
    takes the in-memory path (batched augmentation in torch, no decoding per image and epoch: Fashion-MNIST as
    PNG files trains at the speed of its IDX files). The pixels are what :func:`eval_transform` sees before
    its tensor conversion (mode L, resized, centre-cropped), so embedding them is unchanged.

    Colour, in-memory, and sets over ``IN_MEMORY_MAX_BYTES`` come back as they are."""
    size = spec.image_size
    if data.in_memory or spec.channels != 1 or len(data) * size * size > IN_MEMORY_MAX_BYTES:
        return data
    convert, fit = ConvertMode(1), ResizeCenterCrop(spec.resize_to, size)
    pixels = np.empty((len(data), size, size), dtype=np.uint8)
    for i in tqdm(range(len(data)), desc="decoding into memory", unit="img", disable=not progress, leave=False):
        pixels[i] = np.asarray(fit(convert(data.load(i))))
    return replace(data, paths=None, pixels=pixels)


def seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


__all__ = ["IN_MEMORY_MAX_BYTES", "TrainDataset", "seed_worker", "decode_into_memory", "iterate_batches", "make_batch_sampler"]
